"""A region's end is dated, whatever ended it: the failure policy moving it back, or a cancel
while its canary bakes (the deployment page's duration would otherwise grow on every reload)."""

from __future__ import annotations

import pytest

from deployments.choices import DeploymentStatus, RegionStatus
from deployments.services.deployments import cancel_deployment

from . import test_engine_support as support
from .conftest import REGIONS
from .test_engine_support import V2, alias_of, new_deployment, principal_for, status_of

broker, engine, v1 = support.broker, support.engine, support.v1  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_region_the_failure_policy_moved_back_has_an_end_time(
    app_3_regions, v1, engine, aws, region_endpoints
):
    app_3_regions.stages.filter(name="production").update(rollout={"on_failure": "rollback"})
    region_endpoints.failing.add("eu-west-1")
    second = new_deployment(app_3_regions, body=V2)
    engine.deliver()

    failed = second.regions.get(region__code="eu-west-1")
    assert failed.status == RegionStatus.ROLLED_BACK
    assert failed.finished_at is not None
    assert alias_of(app_3_regions, aws, "eu-west-1")[0] == v1.regions.get(region__code="eu-west-1").version


def test_a_region_cancelled_while_its_canary_bakes_is_cancelled_with_an_end_time(
    app_3_regions, v1, engine, aws
):
    app_3_regions.stages.filter(name="production").update(rollout={"canary": {"percent": 20, "bake_s": 600}})
    second = new_deployment(app_3_regions, body=V2)
    engine.deliver(early=False)
    assert status_of(second)[1] == {code: RegionStatus.RUNNING for code in REGIONS}

    cancel_deployment(deployment=second, principal=principal_for(app_3_regions))
    engine.deliver(early=False)

    status, regions = status_of(second)
    assert status == DeploymentStatus.CANCELLED
    assert regions == {code: RegionStatus.CANCELLED for code in REGIONS}
    assert all(rd.finished_at is not None for rd in second.regions.all())
    old = {rd.region.code: rd.version for rd in v1.regions.select_related("region")}
    assert {code: alias_of(app_3_regions, aws, code)[0] for code in REGIONS} == old
