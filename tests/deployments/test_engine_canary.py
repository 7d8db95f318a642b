"""A stage's canary (``rollout.canary``): the alias keeps serving the version it had and sends a
share of requests to the new one while the bake lasts. Meanwhile the region is parked (held, but
no worker thread waits for it) and the health monitor keeps probing it; then the region is probed
again and every request goes to the new version. A canary that fails, or whose deployment is
cancelled, is withdrawn."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.choices import DeploymentStatus, RegionStatus
from deployments.models import RegionDeployment
from deployments.services.deployments import cancel_deployment
from regions.health import run_probe_round

from . import test_engine_support as support
from .conftest import REGIONS
from .test_engine_support import V2, alias_of, new_deployment, principal_for, status_of, versions

broker, engine, v1 = support.broker, support.engine, support.v1  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def _with_canary(app, percent: int = 20, bake_s: int = 600):
    app.stages.filter(name="production").update(rollout={"canary": {"percent": percent, "bake_s": bake_s}})


def _baking(app, engine):
    """A v2 deploy whose regions are parked in their canary's bake (the countdown kept)."""
    deployment = new_deployment(app, body=V2)
    engine.deliver(early=False)
    _, regions = status_of(deployment)
    assert regions == {code: RegionStatus.RUNNING for code in REGIONS}
    return deployment


def _bake_over(deployment) -> None:
    RegionDeployment.objects.filter(deployment=deployment).update(
        resume_at=timezone.now() - timedelta(seconds=1)
    )


def test_a_canary_shares_traffic_while_it_bakes_then_takes_it_all(app_3_regions, v1, engine, aws, api_for):
    _with_canary(app_3_regions, percent=20)
    second = _baking(app_3_regions, engine)

    old, new = versions(v1), versions(second)
    for code in REGIONS:
        assert new[code] != old[code]
        assert alias_of(app_3_regions, aws, code) == (old[code], {new[code]: 0.2})  # 20 % on v2
    assert len(engine.pending("workers.deploy_region")) == 3  # one resume per region, for later
    shown = (
        api_for(app_3_regions.team, role="viewer").get(f"/api/v1/deployments/{second.pk}/").json()["regions"]
    )
    assert all(r["status"] == "running" and r["step"] == "shift" and r["canary_until"] for r in shown)
    _bake_over(second)
    engine.deliver()

    status, regions = status_of(second)
    assert status == DeploymentStatus.SUCCEEDED, regions
    for code in REGIONS:
        assert alias_of(app_3_regions, aws, code) == (new[code], {})  # then all of it
    lines = list(second.events.values_list("step", "message"))
    assert sum(step == "alias" and "Canary: 20% of requests to version" in m for step, m in lines) == 3
    assert sum(step == "shift" and "no worker waits for it" in m for step, m in lines) == 3
    assert sum(step == "shift" and "for every request" in m for step, m in lines) == 3
    live = {
        sp.placement.region.code: sp.version
        for sp in app_3_regions.stages.get(name="production").placements.all()
    }
    assert live == new


def test_a_resume_before_the_bake_is_over_parks_the_region_again(app_3_regions, v1, engine, aws):
    _with_canary(app_3_regions)
    second = _baking(app_3_regions, engine)
    RegionDeployment.objects.filter(deployment=second).update(
        heartbeat_at=timezone.now() - timedelta(hours=1)
    )
    engine.deliver(early=False)  # what the reaper does with a region gone silent
    from deployments.engine.reaper import reap

    reap()
    engine.deliver(early=False)
    _, regions = status_of(second)
    assert regions == {code: RegionStatus.RUNNING for code in REGIONS}
    old, new = versions(v1), versions(second)
    for code in REGIONS:
        assert alias_of(app_3_regions, aws, code) == (old[code], {new[code]: 0.2})


def test_a_failure_the_monitor_saw_during_the_bake_withdraws_the_canary(
    app_3_regions, v1, engine, aws, region_endpoints, settings
):
    _with_canary(app_3_regions, percent=10)
    second = _baking(app_3_regions, engine)
    region_endpoints.failing.add("eu-west-1")
    run_probe_round(min_age=0)  # the health monitor's round, during the bake
    region_endpoints.failing.clear()  # healthy again by the end of the bake
    _bake_over(second)
    engine.deliver()

    status, regions = status_of(second)
    assert regions == {"eu-west-1": "rolled_back", "us-east-1": "succeeded", "ap-southeast-2": "succeeded"}
    assert status == DeploymentStatus.PARTIALLY_FAILED
    old, new = versions(v1), versions(second)
    assert alias_of(app_3_regions, aws, "eu-west-1") == (old["eu-west-1"], {})  # no share left on v2
    rd = second.regions.get(region__code="eu-west-1")
    assert rd.error_code == "canary_failed" and "health monitor" in rd.error
    for code in ("us-east-1", "ap-southeast-2"):
        assert alias_of(app_3_regions, aws, code) == (new[code], {})


def test_a_canary_failing_its_first_probe_is_withdrawn_in_its_region_only(
    app_3_regions, v1, engine, aws, region_endpoints
):
    _with_canary(app_3_regions, percent=10, bake_s=0)
    region_endpoints.failing.add("eu-west-1")
    second = new_deployment(app_3_regions, body=V2)
    engine.deliver()

    _, regions = status_of(second)
    assert regions == {"eu-west-1": "rolled_back", "us-east-1": "succeeded", "ap-southeast-2": "succeeded"}
    assert alias_of(app_3_regions, aws, "eu-west-1") == (versions(v1)["eu-west-1"], {})


def test_cancelling_during_the_bake_withdraws_the_canary_at_once(app_3_regions, v1, engine, aws):
    _with_canary(app_3_regions)
    second = _baking(app_3_regions, engine)
    cancel_deployment(deployment=second, principal=principal_for(app_3_regions))
    engine.deliver(early=False)  # the parked regions are resumed now, not when the bake ends

    status, regions = status_of(second)
    assert status == DeploymentStatus.CANCELLED, regions
    old = versions(v1)
    for code in REGIONS:
        assert alias_of(app_3_regions, aws, code) == (old[code], {})


def test_the_first_deploy_of_a_stage_has_nothing_to_share_traffic_with(app_3_regions, engine, aws):
    _with_canary(app_3_regions)
    deployment = new_deployment(app_3_regions)
    engine.deliver()
    assert status_of(deployment)[0] == DeploymentStatus.SUCCEEDED
    for code in REGIONS:
        assert alias_of(app_3_regions, aws, code) == (deployment.regions.get(region__code=code).version, {})
    assert not deployment.events.filter(message__contains="Canary").exists()
