"""Deleting a stage or an app that still serves: refused (409) unless forced; forced, a teardown
deployment takes everything down in every region through the engine (against the moto server),
then the rows go. AWS is read back with boto3."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from controlplane.choices import Role
from controlplane.models import AuditEntry
from deployments.choices import DeploymentKind, DeploymentStatus
from deployments.engine.driver import run_region
from deployments.models import App, Deployment, Stage
from regions import health
from regions.aws import lambda_
from regions.aws.session import AwsError
from regions.models import StagePlacement
from tests.support.deploys import boto

from . import test_engine_support as support
from .conftest import REGIONS
from .test_engine_support import new_deployment, status_of

broker, engine, v1 = support.broker, support.engine, support.v1  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def gone(call, **kwargs) -> bool:
    """True when ``call(**kwargs)`` answers that the thing does not exist."""
    try:
        call(**kwargs)
    except ClientError as err:
        return err.response["Error"]["Code"] in ("ResourceNotFoundException", "NotFoundException")
    return False


def assert_nothing_left(app, aws, zone_id: str) -> None:
    for code in REGIONS:
        lam = boto("lambda", code, aws)
        assert gone(lam.get_alias, FunctionName=app.function_name, Name="production"), code
        assert gone(lam.get_function, FunctionName=app.function_name), code
        apigw = boto("apigateway", code, aws)
        assert [a for a in apigw.get_rest_apis()["items"] if a["name"] == app.function_name] == [], code
        assert gone(apigw.get_domain_name, domainName="shop.example.com"), code
        assert boto("acm", code, aws).list_certificates()["CertificateSummaryList"] == [], code
    r53 = boto("route53", "us-east-1", aws)
    records = r53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    assert [r for r in records if r.get("SetIdentifier")] == []
    assert r53.list_health_checks()["HealthChecks"] == []


def test_deleting_a_live_stage_is_409_naming_its_regions_and_changes_nothing(
    v1, app_3_regions, api_for, team
):
    admin = api_for(team, role=Role.ADMIN)
    response = admin.delete("/api/v1/apps/shop/stages/production/")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "stage_is_live" and sorted(body["regions"]) == sorted(REGIONS)
    assert all(code in body["detail"] for code in REGIONS)
    app_response = admin.delete("/api/v1/apps/shop/")
    assert app_response.status_code == 409 and app_response.json()["code"] == "app_is_live"
    assert Stage.objects.filter(app=app_3_regions, name="production").exists()
    assert not Deployment.objects.filter(kind=DeploymentKind.TEARDOWN).exists()


def test_a_forced_stage_delete_takes_it_down_everywhere_then_deletes_it(
    v1, app_3_regions, api_for, team, aws, engine
):
    app = app_3_regions
    production = app.stages.get(name="production")
    zone_id = production.hosted_zone_id
    assert health.live_placements().filter(stage=production).count() == 3
    admin = api_for(team, role=Role.ADMIN)

    response = admin.delete("/api/v1/apps/shop/stages/production/?force=true")

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["kind"] == "teardown" and body["status"] == "queued"
    assert sorted(r["region"] for r in body["regions"]) == sorted(REGIONS)
    # From the moment it starts, nothing probes the stage (so nothing alerts on it).
    assert health.live_placements().filter(stage=production).count() == 0
    # A repeated forced delete follows the same teardown.
    again = admin.delete("/api/v1/apps/shop/stages/production/?force=true")
    assert again.status_code == 202 and again.json()["id"] == body["id"]
    # Each region's log lines, before the last region's end deletes the stage with its log.
    engine.deliver(only="workers.start_deployment")
    for message in engine.take()[:-1]:
        run_region(message.args[0])
    teardown = Deployment.objects.get(pk=body["id"])
    logged = set(teardown.events.exclude(region=None).values_list("region__code", flat=True))
    assert len(logged) == 2
    assert any("alias production" in m for m in teardown.events.values_list("message", flat=True))
    # The last region (sent again, as the reaper would), whose end deletes the stage.
    engine.sent.extend(
        support.Message("workers.deploy_region", (pk,))
        for pk in teardown.regions.exclude(region__code__in=logged).values_list("pk", flat=True)
    )
    engine.deliver()

    assert not Stage.objects.filter(pk=production.pk).exists()
    assert not StagePlacement.objects.filter(stage_id=production.pk).exists()
    assert_nothing_left(app, aws, zone_id)
    actions = list(AuditEntry.objects.filter(team=team).values_list("action", flat=True))
    assert "stage.teardown" in actions and "stage.delete" in actions
    assert App.objects.filter(pk=app.pk).exists()
    # Nothing of the app is live any more: the app itself deletes at once.
    assert admin.delete("/api/v1/apps/shop/").status_code == 204


def test_a_stage_teardown_keeps_the_function_another_stage_still_serves(
    v1, app_3_regions, api_for, team, aws, engine
):
    app = app_3_regions
    staging = new_deployment(app, stage="staging", body=support.V2)
    engine.deliver()
    assert status_of(staging)[0] == DeploymentStatus.SUCCEEDED
    admin = api_for(team, role=Role.ADMIN)

    response = admin.delete("/api/v1/apps/shop/stages/staging/?force=true")
    assert response.status_code == 202, response.json()
    engine.deliver()

    assert not Stage.objects.filter(app=app, name="staging").exists()
    for code in REGIONS:
        lam = boto("lambda", code, aws)
        assert gone(lam.get_alias, FunctionName=app.function_name, Name="staging")
        # production still serves its version from the same function and API
        assert lam.get_alias(FunctionName=app.function_name, Name="production")["FunctionVersion"] == "1"
        listed = lam.list_versions_by_function(FunctionName=app.function_name)["Versions"]
        versions = [v["Version"] for v in listed]
        assert versions == ["$LATEST", "1"]  # staging's version 2 went with it
        apigw = boto("apigateway", code, aws)
        (api,) = [a for a in apigw.get_rest_apis()["items"] if a["name"] == app.function_name]
        stages = [s["stageName"] for s in apigw.get_stages(restApiId=api["id"])["item"]]
        assert stages == ["production"]
    assert health.live_placements().filter(stage__app=app).count() == 3


def test_a_failed_teardown_leaves_the_stage_marked_and_a_forced_retry_finishes_it(
    v1, app_3_regions, api_for, team, aws, engine, monkeypatch
):
    app = app_3_regions
    production = app.stages.get(name="production")
    admin = api_for(team, role=Role.ADMIN)
    real_delete = lambda_.delete_function

    def refused(region, name, **kwargs):
        if region == "eu-west-1":
            raise AwsError(
                "AccessDeniedException", "not allowed", operation="DeleteFunction", retryable=False
            )
        return real_delete(region, name, **kwargs)

    monkeypatch.setattr(lambda_, "delete_function", refused)
    first = admin.delete("/api/v1/apps/shop/?force=true")
    assert first.status_code == 202 and first.json()["kind"] == "teardown"
    engine.deliver()

    failed = Deployment.objects.get(pk=first.json()["id"])
    assert failed.status == DeploymentStatus.PARTIALLY_FAILED
    assert set(failed.events.exclude(region=None).values_list("region__code", flat=True)) == set(REGIONS)
    production.refresh_from_db()
    assert production.teardown_started_at is not None  # marked, still there, not probed
    assert health.live_placements().filter(stage__app=app).count() == 0
    assert boto("lambda", "eu-west-1", aws).get_function(FunctionName=app.function_name)
    refused_again = admin.delete("/api/v1/apps/shop/")
    assert refused_again.status_code == 409 and refused_again.json()["code"] == "app_is_live"
    deploy = admin.post(
        "/api/v1/apps/shop/deployments/", {"stage": "production", "ref": "a" * 40}, format="json"
    )
    assert deploy.status_code == 409 and deploy.json()["code"] == "stage_torn_down"

    monkeypatch.setattr(lambda_, "delete_function", real_delete)
    retry = admin.delete("/api/v1/apps/shop/?force=true")
    assert retry.status_code == 202 and retry.json()["id"] != failed.pk
    engine.deliver()

    assert not App.objects.filter(pk=app.pk).exists()
    assert_nothing_left(app, aws, production.hosted_zone_id)
    assert AuditEntry.objects.filter(team=team, action="app.delete").exists()


def test_a_viewer_or_deployer_cannot_force_a_teardown(v1, api_for, team):
    for role in (Role.VIEWER, Role.DEPLOYER):
        response = api_for(team, role=role).delete("/api/v1/apps/shop/stages/production/?force=true")
        assert response.status_code == 403, role
    assert not Deployment.objects.filter(kind=DeploymentKind.TEARDOWN).exists()
