"""Rollbacks in the engine: instant (every region at once, no waiting behind another stage's
deploy), never "rolled back" to the version they moved away from, and notified as they ended."""

from __future__ import annotations

import pytest

from controlplane.models import Channel, Notification
from deployments.choices import DeploymentStatus, RegionStatus
from deployments.services.rollback import rollback

from . import test_engine_support as support
from .test_engine_support import new_deployment, principal_for, status_of

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)

EVENTS = ["deploy_started", "deploy_succeeded", "deploy_failed", "rollback"]


@pytest.fixture
def channel(team):
    return Channel.objects.create(
        team=team, kind="webhook", target="https://hooks.example.com/x", events=EVENTS
    )


def aliases(aws, app, stage="production") -> dict[str, str]:
    from tests.support.deploys import boto

    from .conftest import REGIONS

    return {
        code: boto("lambda", code, aws).get_alias(FunctionName=app.function_name, Name=stage)[
            "FunctionVersion"
        ]
        for code in REGIONS
    }


@pytest.fixture
def v1_v2(app_3_regions, engine, aws):
    app = app_3_regions
    first = new_deployment(app)
    engine.deliver()
    second = new_deployment(app, body="def handler(e, c):\n    return 2\n")
    engine.deliver()
    assert status_of(first)[0] == status_of(second)[0] == DeploymentStatus.SUCCEEDED
    assert set(aliases(aws, app).values()) == {"2"}
    return app, first, second


def events_of(deployment) -> list[str]:
    return sorted(Notification.objects.filter(deployment=deployment).values_list("event", flat=True))


def test_a_deploy_notifies_started_and_succeeded_once_each(app_3_regions, engine, channel):
    deployment = new_deployment(app_3_regions)
    engine.deliver()
    assert status_of(deployment)[0] == DeploymentStatus.SUCCEEDED
    assert events_of(deployment) == ["deploy_started", "deploy_succeeded"]


def test_a_rollback_ignores_waves_and_bake_time(v1_v2, engine, aws, channel):
    app, first, _ = v1_v2
    production = app.stages.get(name="production")
    production.rollout = {"waves": [["us-east-1"], ["*"]], "bake_s": 3600}
    production.save()
    back = rollback(app=app, stage=production, principal=principal_for(app), to=f"deployment:{first.pk}")
    engine.deliver(early=False)  # nothing waits for a countdown
    status, regions = status_of(back)
    assert status == DeploymentStatus.SUCCEEDED, regions
    assert set(aliases(aws, app).values()) == {"1"}
    assert events_of(back) == ["deploy_started", "rollback"]


def test_a_rollback_does_not_wait_for_another_stages_deploy_in_the_region(v1_v2, engine, aws):
    from deployments.engine.claim import claim

    app, first, _ = v1_v2
    staging = new_deployment(app, stage="staging")
    engine.deliver(only="workers.start_deployment")
    held = claim(staging.regions.get(region__code="us-east-1").pk)
    assert held is not None  # staging is busy with $LATEST in us-east-1

    back = rollback(
        app=app,
        stage=app.stages.get(name="production"),
        principal=principal_for(app),
        to=f"deployment:{first.pk}",
    )
    engine.deliver(only="workers.rollback_regions")
    status, regions = status_of(back)
    assert status == DeploymentStatus.SUCCEEDED, regions
    assert aliases(aws, app)["us-east-1"] == "1"
    assert status_of(staging)[1]["us-east-1"] == RegionStatus.RUNNING


def test_a_rollback_failing_verify_leaves_the_restored_version_and_notifies_failure(
    v1_v2, engine, aws, region_endpoints, channel
):
    app, first, _ = v1_v2
    production = app.stages.get(name="production")
    production.rollout = {"on_failure": "rollback"}
    production.save()
    region_endpoints.failing.add("eu-west-1")

    back = rollback(app=app, stage=production, principal=principal_for(app), to=f"deployment:{first.pk}")
    engine.deliver()
    status, regions = status_of(back)
    assert regions == {"us-east-1": "succeeded", "eu-west-1": "failed", "ap-southeast-2": "succeeded"}
    assert status == DeploymentStatus.PARTIALLY_FAILED
    # Nothing moved back to version 2, the one the rollback was getting away from.
    assert set(aliases(aws, app).values()) == {"1"}
    assert back.events.filter(message__contains="stays on version 1").exists()
    assert events_of(back) == ["deploy_failed", "deploy_started"]


def test_a_rollback_is_one_task_that_moves_every_region(v1_v2, engine, aws):
    app, first, second = v1_v2
    rolled = rollback(app=app, stage=app.stages.get(name="production"), principal=principal_for(app))

    assert [m.task for m in engine.sent] == ["workers.rollback_regions"]
    engine.deliver()

    assert status_of(rolled)[0] == DeploymentStatus.SUCCEEDED
    assert set(aliases(aws, app).values()) == {"1"}
    assert sorted(rolled.regions.values_list("attempts", flat=True)) == [1, 1, 1]


def test_a_rollback_whose_task_was_lost_is_finished_by_the_reaper(v1_v2, engine, aws, settings):
    from deployments.engine.reaper import reap

    app, first, second = v1_v2
    rolled = rollback(app=app, stage=app.stages.get(name="production"), principal=principal_for(app))
    engine.drop()
    assert set(aliases(aws, app).values()) == {"2"}

    settings.REQUEUE_AFTER = 0
    reap()
    engine.deliver()

    assert status_of(rolled)[0] == DeploymentStatus.SUCCEEDED
    assert set(aliases(aws, app).values()) == {"1"}
