"""Waves: a later wave starts after the bake time, and only while the regions of the earlier
waves are still healthy (the health gate)."""

from __future__ import annotations

import pytest

from deployments.choices import DeploymentStatus, RegionStatus
from tests.support.deploys import boto

from . import test_engine_support as support
from .test_engine_support import new_deployment, status_of

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)

LATER = ("eu-west-1", "ap-southeast-2")
V2 = "def handler(event, context):\n    return {'statusCode': 201}\n"


def _alias_version(app, aws, code: str) -> str:
    return boto("lambda", code, aws).get_alias(FunctionName=app.function_name, Name="production")[
        "FunctionVersion"
    ]


@pytest.fixture
def two_waves(app_3_regions, engine, aws):
    """v1 everywhere, then a stage deploying us-east-1 first and the rest after a bake."""
    first = new_deployment(app_3_regions)
    engine.deliver()
    assert status_of(first)[0] == DeploymentStatus.SUCCEEDED
    app_3_regions.stages.filter(name="production").update(
        rollout={"waves": [["us-east-1"], ["*"]], "bake_s": 60, "on_failure": "rollback"}
    )
    return app_3_regions, first


def _first_wave(engine, app):
    deployment = new_deployment(app, body=V2)
    engine.deliver(early=False)  # the first wave runs; the second waits for its bake time
    _, regions = status_of(deployment)
    assert regions == {"us-east-1": "succeeded", **{code: "queued" for code in LATER}}
    return deployment


def test_the_next_wave_starts_when_the_first_is_healthy_after_the_bake(two_waves, engine, aws):
    app, first = two_waves
    deployment = _first_wave(engine, app)
    engine.deliver()  # the bake time is over

    status, regions = status_of(deployment)
    assert status == DeploymentStatus.SUCCEEDED, regions
    for code in LATER:
        assert _alias_version(app, aws, code) == deployment.regions.get(region__code=code).version
    gate = deployment.events.filter(step="gate").values_list("message", flat=True)
    assert sorted(gate) == [
        f"{code}: Health gate: the 1 region(s) of earlier waves are healthy." for code in sorted(LATER)
    ]


def test_an_earlier_wave_unhealthy_after_the_bake_stops_the_next(two_waves, engine, aws, region_endpoints):
    app, first = two_waves
    deployment = _first_wave(engine, app)
    region_endpoints.failing.add("us-east-1")  # goes bad during the bake
    engine.deliver()

    status, regions = status_of(deployment)
    assert regions == {"us-east-1": RegionStatus.ROLLED_BACK, **{code: RegionStatus.FAILED for code in LATER}}
    assert status == DeploymentStatus.ROLLED_BACK
    # Nothing moved in the later wave; the first wave is back on v1 (on_failure: rollback).
    for code in ("us-east-1", *LATER):
        assert _alias_version(app, aws, code) == first.regions.get(region__code=code).version
    for code in LATER:
        rd = deployment.regions.get(region__code=code)
        assert rd.error_code == "health_gate_failed"
        assert "us-east-1" in rd.error and "does not start" in rd.error
        versions = boto("lambda", code, aws).list_versions_by_function(FunctionName=app.function_name)[
            "Versions"
        ]
        assert len([v for v in versions if v["Version"] != "$LATEST"]) == 1  # nothing published
