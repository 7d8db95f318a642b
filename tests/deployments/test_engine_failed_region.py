"""A region whose own verify fails after its alias moved goes back to the version it served
before, whatever ``on_failure`` says about the other regions, unless the stage's rollout says
``keep_failed``; a first deploy has nothing to go back to, stays, and the log says so."""

from __future__ import annotations

import pytest

from deployments.choices import DeploymentStatus, RegionStatus

from . import test_engine_support as support
from .conftest import REGIONS
from .test_engine_support import V2, alias_of, new_deployment, status_of, versions

broker, engine, v1 = support.broker, support.engine, support.v1  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)

FAILING = "eu-west-1"


def test_a_region_failing_its_verify_goes_back_to_what_it_served(
    app_3_regions, v1, engine, aws, region_endpoints
):
    region_endpoints.failing.add(FAILING)
    second = new_deployment(app_3_regions, body=V2)  # the stage's rollout is the default: leave
    engine.deliver()

    status, regions = status_of(second)
    assert regions == {code: RegionStatus.SUCCEEDED for code in REGIONS} | {FAILING: RegionStatus.ROLLED_BACK}
    assert status == DeploymentStatus.PARTIALLY_FAILED
    old, new = versions(v1), versions(second)
    assert alias_of(app_3_regions, aws, FAILING)[0] == old[FAILING] != new[FAILING]
    for code in set(REGIONS) - {FAILING}:
        assert alias_of(app_3_regions, aws, code)[0] == new[code]
    failed = second.regions.get(region__code=FAILING)
    assert failed.error_code == "health_check_failed" and failed.finished_at is not None
    assert second.events.filter(
        region__code=FAILING, message__contains=f"moved back to version {old[FAILING]}"
    ).exists()
    placed = app_3_regions.placements.get(region__code=FAILING).stages.get()
    assert placed.version == old[FAILING] and placed.release_id == v1.release_id


def test_keep_failed_leaves_the_failed_version_serving(app_3_regions, v1, engine, aws, region_endpoints):
    app_3_regions.stages.filter(name="production").update(rollout={"keep_failed": True})
    region_endpoints.failing.add(FAILING)
    second = new_deployment(app_3_regions, body=V2)
    engine.deliver()

    _, regions = status_of(second)
    assert regions[FAILING] == RegionStatus.FAILED
    assert alias_of(app_3_regions, aws, FAILING)[0] == versions(second)[FAILING]
    assert second.events.filter(region__code=FAILING, message__contains="keep_failed").exists()


def test_a_first_deploy_failing_its_verify_stays_and_says_so(app_3_regions, engine, aws, region_endpoints):
    region_endpoints.failing.add(FAILING)
    first = new_deployment(app_3_regions)
    engine.deliver()

    _, regions = status_of(first)
    assert regions[FAILING] == RegionStatus.FAILED
    assert alias_of(app_3_regions, aws, FAILING)[0] == versions(first)[FAILING]
    assert first.events.filter(region__code=FAILING, message__contains="nothing to go back to").exists()
