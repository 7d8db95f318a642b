"""A stage's canary (``rollout.canary``): the alias keeps serving the version it had and sends a
share of requests to the new one while the bake lasts, the region's endpoint probed all along;
then every request goes to the new version. A canary that fails is withdrawn."""

from __future__ import annotations

import pytest

from deployments.choices import DeploymentStatus
from tests.support.deploys import boto

from . import test_engine_support as support
from .conftest import REGIONS
from .test_engine_support import new_deployment, status_of

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def _alias(app, aws, code: str) -> tuple[str, dict]:
    alias = boto("lambda", code, aws).get_alias(FunctionName=app.function_name, Name="production")
    return alias["FunctionVersion"], (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}


def _with_canary(app, percent: int = 20, bake_s: int = 1):
    stage = app.stages.get(name="production")
    stage.rollout = {"canary": {"percent": percent, "bake_s": bake_s}}
    stage.save(update_fields=["rollout"])


def test_a_canary_shares_traffic_while_it_bakes_then_takes_it_all(
    app_3_regions, engine, aws, region_endpoints
):
    first = new_deployment(app_3_regions)
    engine.deliver()
    assert status_of(first)[0] == DeploymentStatus.SUCCEEDED
    _with_canary(app_3_regions, percent=20, bake_s=1)
    seen: dict[str, set] = {code: set() for code in REGIONS}

    def look(region: str) -> None:  # what AWS routes while the control plane probes the region
        version, weights = _alias(app_3_regions, aws, region)
        seen[region].add((version, tuple(sorted(weights.items()))))

    region_endpoints.on_request = look
    # (Other code than the first deploy's, so Lambda publishes a new version.)
    second = new_deployment(
        app_3_regions, body="def handler(event, context):\n    return {'statusCode': 202}\n"
    )
    engine.deliver()
    region_endpoints.on_request = None

    status, regions = status_of(second)
    assert status == DeploymentStatus.SUCCEEDED, regions
    for code in REGIONS:
        old = first.regions.get(region__code=code).version
        new = second.regions.get(region__code=code).version
        assert new != old
        assert (old, ((new, 0.2),)) in seen[code]  # 20 % on the new version during the bake
        assert _alias(app_3_regions, aws, code) == (new, {})  # then all of it
    lines = list(second.events.values_list("step", "message"))
    assert sum(step == "alias" and "Canary: 20% of requests to version" in m for step, m in lines) == 3
    assert sum(step == "shift" and "for every request" in m for step, m in lines) == 3
    live = {
        sp.placement.region.code: sp.version
        for sp in app_3_regions.stages.get(name="production").placements.all()
    }
    assert live == {code: second.regions.get(region__code=code).version for code in REGIONS}


def test_a_failing_canary_is_withdrawn_in_its_region_only(app_3_regions, engine, aws, region_endpoints):
    first = new_deployment(app_3_regions)
    engine.deliver()
    _with_canary(app_3_regions, percent=10, bake_s=0)
    region_endpoints.failing.add("eu-west-1")
    second = new_deployment(
        app_3_regions, body="def handler(event, context):\n    return {'statusCode': 500}\n"
    )
    engine.deliver()

    status, regions = status_of(second)
    assert regions == {"eu-west-1": "rolled_back", "us-east-1": "succeeded", "ap-southeast-2": "succeeded"}
    assert status == DeploymentStatus.PARTIALLY_FAILED
    old = first.regions.get(region__code="eu-west-1").version
    assert _alias(app_3_regions, aws, "eu-west-1") == (old, {})  # no share left on the new version
    for code in ("us-east-1", "ap-southeast-2"):
        assert _alias(app_3_regions, aws, code) == (second.regions.get(region__code=code).version, {})


def test_the_first_deploy_of_a_stage_has_nothing_to_share_traffic_with(app_3_regions, engine, aws):
    _with_canary(app_3_regions)
    deployment = new_deployment(app_3_regions)
    engine.deliver()
    assert status_of(deployment)[0] == DeploymentStatus.SUCCEEDED
    for code in REGIONS:
        assert _alias(app_3_regions, aws, code) == (deployment.regions.get(region__code=code).version, {})
    assert not deployment.events.filter(message__contains="Canary").exists()
