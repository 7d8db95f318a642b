"""A forced delete of a live app through the API, taken down by a real Celery worker against the
moto server (through the fault-injecting proxy); AWS is read back with boto3."""

from __future__ import annotations

import pytest

from controlplane.choices import Role
from deployments.choices import DeploymentStatus
from deployments.models import App, Deployment
from tests.support.deploys import boto, deploy, make_zip, upload, wait_finished
from tests.support.processes import wait_for

from .conftest import REGIONS

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def test_a_forced_app_delete_is_taken_down_by_the_worker_then_the_app_is_gone(
    app_3_regions, api_for, team, aws, worker_process
):
    app = app_3_regions
    deployer, admin = api_for(team, role=Role.DEPLOYER), api_for(team, role=Role.ADMIN)
    first = wait_finished(deploy(deployer, app, "production", upload(deployer, app, make_zip()))["id"])
    assert first.status == DeploymentStatus.SUCCEEDED, first.error

    response = admin.delete("/api/v1/apps/shop/?force=true")
    assert response.status_code == 202, response.json()
    teardown_id = response.json()["id"]

    seen: set[str] = set()

    def done():
        # Follow the log as CI would, until the app (and its teardown with it) is deleted.
        answer = admin.get(f"/api/v1/deployments/{teardown_id}/events/")
        if answer.status_code == 200:
            seen.update(e["region"] for e in answer.json()["results"] if e.get("region"))
        return not App.objects.filter(pk=app.pk).exists()

    wait_for(done, timeout=90, interval=0.2, message="the app to be taken down and deleted")
    assert admin.get(f"/api/v1/deployments/{teardown_id}/").status_code == 404
    assert not Deployment.objects.filter(pk=teardown_id).exists()
    for code in REGIONS:
        functions = boto("lambda", code, aws).list_functions()["Functions"]
        assert [f for f in functions if f["FunctionName"] == app.function_name] == [], code
        apis = boto("apigateway", code, aws).get_rest_apis()["items"]
        assert [a for a in apis if a["name"] == app.function_name] == [], code
    assert boto("route53", "us-east-1", aws).list_health_checks()["HealthChecks"] == []
    print(f"\nteardown log lines seen from regions: {sorted(seen)}")
