"""A deploy requested through the API, run by a real Celery worker against a moto server, with AWS
state checked independently with boto3."""

from __future__ import annotations

import pytest

from controlplane.choices import Role
from deployments.choices import ACTIVE_DEPLOYMENT_STATUSES, DeploymentStatus, RegionStatus
from deployments.env import resolve_env
from deployments.models import Deployment, RegionDeployment
from regions.models import StagePlacement
from tests.support.deploys import boto, deploy, make_zip, upload, wait_finished
from tests.support.processes import wait_for

from .conftest import REGIONS

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_deploy_reaches_every_region_and_aws_matches_the_release(
    app_3_regions, api_for, team, aws, worker_process
):
    app = app_3_regions
    client = api_for(team, role=Role.DEPLOYER)
    first = deploy(client, app, "production", upload(client, app, make_zip()))
    assert first["status"] == "queued" and len(first["regions"]) == 3

    deployment = wait_finished(first["id"])
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error

    production = app.stages.get(name="production")
    for code in REGIONS:
        lam = boto("lambda", code, aws)
        fn = lam.get_function(FunctionName=app.function_name)["Configuration"]
        assert fn["Runtime"] == "python3.12" and fn["Handler"] == "app.handler"
        alias = lam.get_alias(FunctionName=app.function_name, Name="production")
        assert alias["FunctionVersion"] == "1"
        version_env = lam.get_function_configuration(FunctionName=app.function_name, Qualifier="1")[
            "Environment"
        ]["Variables"]
        region = app.placements.get(region__code=code).region
        assert version_env == resolve_env(app=app, stage=production, region=region)
        assert version_env["GREETING"] == ("bonjour" if code == "eu-west-1" else "hello")
        assert version_env["STAGE_NAME"] == "production"

        apigw = boto("apigateway", code, aws)
        apis = [a for a in apigw.get_rest_apis()["items"] if a["name"] == app.function_name]
        assert len(apis) == 1
        stage = apigw.get_stage(restApiId=apis[0]["id"], stageName="production")
        assert stage["variables"]["alias"] == "production"
        placement = StagePlacement.objects.get(
            placement__app=app, placement__region__code=code, stage=production
        )
        assert placement.version == "1"
        assert placement.endpoint_url.startswith(f"https://{apis[0]['id']}.execute-api.{code}.amazonaws.com")

    records = boto("route53", "us-east-1", aws).list_resource_record_sets(
        HostedZoneId=production.hosted_zone_id
    )["ResourceRecordSets"]
    latency = [r for r in records if r.get("SetIdentifier")]
    assert sorted(r["SetIdentifier"] for r in latency) == sorted(REGIONS)
    assert all(r["Region"] == r["SetIdentifier"] and r["HealthCheckId"] for r in latency)
    assert all(r["Name"].rstrip(".") == "shop.example.com" for r in latency)

    # The custom domain was validated end to end under the strict emulator: one validation record
    # in the zone served every region's certificate, each region waited (parked) for ISSUED, then
    # made the domain and its mapping; the latency records alias the regional domains.
    validation = [r for r in records if r["Type"] == "CNAME" and r["Name"].startswith("_")]
    assert len(validation) == 1
    for code in REGIONS:
        acm = boto("acm", code, aws)
        (cert,) = acm.list_certificates()["CertificateSummaryList"]
        assert (
            acm.describe_certificate(CertificateArn=cert["CertificateArn"])["Certificate"]["Status"]
            == "ISSUED"
        )
        domain = boto("apigateway", code, aws).get_domain_name(domainName="shop.example.com")
        record = next(r for r in latency if r["SetIdentifier"] == code)
        assert record["AliasTarget"]["DNSName"].rstrip(".") == domain["regionalDomainName"]
    assert deployment.events.filter(step="api", message__contains="pending validation").count() >= 3
    assert deployment.events.filter(step="dns", region=None, message__contains="3 of 3 written in one change")
    # Route 53, five requests a second for the whole account: 3 + one per region, never throttled.
    route53_calls = sum(n for key, n in aws.strict.stats()["calls"].items() if key.startswith("route53:"))
    assert (
        route53_calls <= 3 + len(REGIONS) + 2
    )  # (+2: this test's CreateHostedZone and ListResourceRecordSets)
    assert "route53_rate" not in aws.strict.stats()["refused"]

    # The log shows every step per region, each with its duration, and never a secret value.
    events = list(deployment.events.select_related("region"))
    for code in REGIONS:
        steps = {e.step for e in events if e.region and e.region.code == code and e.duration_ms is not None}
        assert {"artifact", "function", "version", "api", "dns", "alias", "verify"} <= steps, steps
    assert not any("s3cr3t-value" in e.message for e in events)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))

    # A second deploy publishes version 2 and moves the alias.
    second = deploy(client, app, "production", upload(client, app, make_zip("def handler(e, c): return 2\n")),
                    sha="b" * 40)  # fmt: skip
    deployment2 = wait_finished(second["id"])
    assert deployment2.status == DeploymentStatus.SUCCEEDED
    for code in REGIONS:
        lam = boto("lambda", code, aws)
        assert lam.get_alias(FunctionName=app.function_name, Name="production")["FunctionVersion"] == "2"
        rd = deployment2.regions.get(region__code=code)
        assert (rd.version, rd.previous_version) == ("2", "1")
    detail = client.get(f"/api/v1/deployments/{deployment2.pk}/").json()
    assert detail["commit"]["replaced_sha"] == "a" * 40
    assert {r["region"]: r["version"] for r in detail["regions"]} == dict.fromkeys(REGIONS, "2")


def test_two_stages_deploying_at_once_never_mix_their_env(app_3_regions, api_for, team, aws, worker_process):
    app = app_3_regions
    client = api_for(team, role=Role.DEPLOYER)
    artifact = upload(client, app, make_zip())
    a = deploy(client, app, "production", artifact)
    b = deploy(client, app, "staging", artifact)
    assert wait_finished(a["id"]).status == DeploymentStatus.SUCCEEDED
    assert wait_finished(b["id"]).status == DeploymentStatus.SUCCEEDED
    for code in REGIONS:
        lam = boto("lambda", code, aws)
        for stage in ("production", "staging"):
            version = lam.get_alias(FunctionName=app.function_name, Name=stage)["FunctionVersion"]
            env = lam.get_function_configuration(FunctionName=app.function_name, Qualifier=version)[
                "Environment"
            ]["Variables"]
            assert env["STAGE_NAME"] == stage, (code, stage, version)


def test_throttled_aws_calls_are_retried_and_the_deploy_succeeds(
    app_3_regions, api_for, team, aws, aws_proxy, worker_process
):
    app = app_3_regions
    client = api_for(team, role=Role.DEPLOYER)
    artifact = upload(client, app, make_zip())
    # More throttles on PublishVersion than botocore's own retries absorb in one task attempt.
    aws_proxy.throttle_remaining = 12
    result = wait_finished(deploy(client, app, "production", artifact)["id"], timeout=120)
    assert result.status == DeploymentStatus.SUCCEEDED
    assert aws_proxy.throttled == 12
    for code in REGIONS:
        versions = boto("lambda", code, aws).list_versions_by_function(FunctionName=app.function_name)
        assert [v["Version"] for v in versions["Versions"]] == ["$LATEST", "1"]


def test_worker_killed_mid_deploy_is_finished_by_a_restarted_worker_without_a_duplicate_version(
    app_3_regions, api_for, team, aws, aws_proxy, worker_process, settings
):
    from deployments.engine.reaper import reap

    app = app_3_regions
    client = api_for(team, role=Role.DEPLOYER)
    artifact = upload(client, app, make_zip())
    aws_proxy.delay_s = 0.15  # slow AWS down so the kill lands mid-deploy
    pk = deploy(client, app, "production", artifact)["id"]
    wait_for(
        lambda: RegionDeployment.objects.filter(deployment_id=pk).exclude(version="").exists(),
        timeout=60, message="a version to be published",
    )  # fmt: skip
    worker_process.kill()
    killed_at = {rd.region.code: rd.status for rd in RegionDeployment.objects.filter(deployment_id=pk)}
    assert RegionStatus.RUNNING in killed_at.values()

    aws_proxy.delay_s = 0
    worker_process.start()
    # The worker's heartbeat timeout (the worker_process fixture); beat would run the reaper every
    # minute, the test runs it every half second until the restarted worker has finished.
    settings.REGION_HEARTBEAT_TIMEOUT = 3
    resumed = 0

    def reaped_and_finished():
        nonlocal resumed
        resumed += reap()["resumed"]
        return Deployment.objects.filter(pk=pk).exclude(status__in=ACTIVE_DEPLOYMENT_STATUSES).exists()

    wait_for(reaped_and_finished, timeout=60, interval=0.5, message="the restarted worker to finish it")
    assert resumed > 0
    deployment = wait_finished(pk)
    assert deployment.status == DeploymentStatus.SUCCEEDED
    assert deployment.events.filter(message__contains="resuming").exists()
    for code in REGIONS:
        lam = boto("lambda", code, aws)
        versions = lam.list_versions_by_function(FunctionName=app.function_name)["Versions"]
        assert [v["Version"] for v in versions] == ["$LATEST", "1"], code
        assert lam.get_alias(FunctionName=app.function_name, Name="production")["FunctionVersion"] == "1"
