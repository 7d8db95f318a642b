"""Pruning old Lambda versions at the end of a deploy: the newest VERSION_RETENTION of each stage
stay, and so does any version an alias or a kept release needs."""

from __future__ import annotations

import json

import pytest
from botocore.awsrequest import AWSResponse

from deployments.choices import DeploymentStatus
from regions.aws.session import client
from tests.support.deploys import boto

from . import test_engine_support as support
from .conftest import REGIONS
from .test_engine_fresh_region import _Body
from .test_engine_support import new_deployment, status_of

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def prune(app, settings, keep: int = 2) -> dict[str, list[str]]:
    """Prune every region as the last step of a deploy does, keeping ``keep`` per stage.

    (The deploys above it keep everything: moto numbers a new version after the count of the
    remaining ones, so publishing after a prune would reuse a number, which AWS never does.)"""
    from deployments.engine.steps.prune import prune_versions

    settings.VERSION_RETENTION = keep
    return {
        p.region.code: prune_versions(app=app, region=p.region)
        for p in app.placements.select_related("region")
    }


def ship(app, engine, n: int, stage: str = "production"):
    deployment = new_deployment(app, stage=stage, body=f"def handler(e, c):\n    return {n}\n")
    engine.deliver()
    assert status_of(deployment)[0] == DeploymentStatus.SUCCEEDED
    return deployment


def versions(aws, app, code: str) -> list[str]:
    listed = boto("lambda", code, aws).list_versions_by_function(FunctionName=app.function_name)["Versions"]
    return [v["Version"] for v in listed if v["Version"] != "$LATEST"]


def test_the_newest_versions_of_the_stage_are_kept(app_3_regions, engine, aws, settings):
    for n in range(1, 5):
        ship(app_3_regions, engine, n)
    assert prune(app_3_regions, settings) == dict.fromkeys(REGIONS, ["1", "2"])
    for code in REGIONS:
        assert versions(aws, app_3_regions, code) == ["3", "4"], code


def test_a_version_any_alias_points_at_is_kept(app_3_regions, engine, aws, settings):
    app = app_3_regions
    ship(app, engine, 1)
    lam = boto("lambda", "eu-west-1", aws)
    lam.create_alias(FunctionName=app.function_name, Name="pinned", FunctionVersion="1")
    for n in range(2, 5):
        ship(app, engine, n)
    prune(app, settings)
    assert versions(aws, app, "eu-west-1") == ["1", "3", "4"]
    assert versions(aws, app, "us-east-1") == ["3", "4"]


def test_the_versions_of_another_stages_kept_releases_are_kept(app_3_regions, engine, aws, settings):
    app = app_3_regions
    ship(app, engine, 1)  # production: version 1
    ship(app, engine, 2, stage="staging")  # staging release #1: version 2
    ship(app, engine, 3, stage="staging")  # staging release #2: version 3 (its alias)
    for n in range(4, 7):
        ship(app, engine, n)  # production: versions 4, 5, 6
    prune(app, settings)
    for code in REGIONS:
        assert versions(aws, app, code) == ["2", "3", "5", "6"], code


def test_a_version_lambda_refuses_to_delete_does_not_stop_the_others(app_3_regions, engine, aws, settings):
    app = app_3_regions
    for n in range(1, 5):
        ship(app, engine, n)

    def conflict_on_version_2(request, **kwargs):
        if "Qualifier=2" not in request.url:
            return None
        body = json.dumps({"Type": "User", "message": "Alias refers to version 2"}).encode()
        headers = {"x-amzn-errortype": "ResourceConflictException", "content-type": "application/json"}
        return AWSResponse(request.url, 409, headers, _Body(body))

    lam = client("lambda", "us-east-1")
    lam.meta.events.register_first("before-send.lambda.DeleteFunction", conflict_on_version_2)
    try:
        assert prune(app, settings)["us-east-1"] == ["1"]
    finally:
        lam.meta.events.unregister("before-send.lambda.DeleteFunction", conflict_on_version_2)
    assert versions(aws, app, "us-east-1") == ["2", "3", "4"]  # 1 was pruned all the same
    assert prune(app, settings)["us-east-1"] == ["2"]  # and 2 on the next pass
