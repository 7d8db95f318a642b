"""The reaper finds work a lost message or a dead worker left behind, and starts it again without
breaking the rollout's rules (bake time), or fails it with a reason."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from deployments.choices import DeploymentStatus, RegionStatus
from deployments.engine.reaper import reap
from deployments.models import Deployment, DeploymentEvent, RegionDeployment
from deployments.services.deployments import create_deployment
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.deploys import boto
from tests.support.gitrepo import GitRepo

from . import test_engine_support as support
from .test_engine_support import new_deployment, principal_for, status_of

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)

HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'built'}\n"


@pytest.fixture(autouse=True)
def reaper_ran_just_before(settings):
    """The reaper ran a moment ago (no outage to catch up on), and each test's reap() counts as
    its next run: what it re-sends is what stuck work alone makes it re-send."""
    from deployments.engine.reaper import ALIVE_KEY
    from regions.aws import ratelimit

    settings.REAPER_INTERVAL = 600
    ratelimit.touch(ALIVE_KEY, ttl=2 * settings.REAPER_INTERVAL)


def age(deployment: Deployment, seconds: float) -> None:
    """Make the deployment and everything about it ``seconds`` older."""
    then = timezone.now() - timedelta(seconds=seconds)
    deployment.refresh_from_db()
    Deployment.objects.filter(pk=deployment.pk).update(
        created_at=then, started_at=then if deployment.started_at else None
    )
    DeploymentEvent.objects.filter(deployment=deployment).update(created_at=then)
    RegionDeployment.objects.filter(deployment=deployment).exclude(heartbeat_at=None).update(
        heartbeat_at=then
    )


def functions_in(aws, code: str) -> list[str]:
    return [f["FunctionName"] for f in boto("lambda", code, aws).list_functions()["Functions"]]


def test_released_regions_whose_messages_were_lost_are_sent_again(app_3_regions, engine, settings):
    deployment = new_deployment(app_3_regions)
    engine.deliver(only="workers.start_deployment")  # regions released (ready) ...
    engine.drop()  # ... and their messages lost with the broker
    assert status_of(deployment)[0] == DeploymentStatus.QUEUED

    reap()
    engine.deliver()
    assert status_of(deployment)[0] == DeploymentStatus.QUEUED  # too recent: not re-sent yet

    age(deployment, settings.REQUEUE_AFTER + 5)
    reap()
    engine.deliver()
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.SUCCEEDED, regions


def test_a_later_wave_is_not_sent_again_before_its_bake_time(app_3_regions, engine, aws, settings):
    app = app_3_regions
    aws.strict.rules.acm_validation = False  # (not about the domain: its certificates issued at once)
    app.stages.filter(name="production").update(rollout={"waves": [["us-east-1"], ["*"]], "bake_s": 3600})
    deployment = new_deployment(app)
    engine.deliver(only="workers.start_deployment")
    engine.deliver(only="workers.deploy_region", early=False)  # the first wave runs ...
    engine.drop()  # ... and the countdown messages of the second wave are lost
    _, regions = status_of(deployment)
    assert regions["us-east-1"] == RegionStatus.SUCCEEDED
    age(deployment, settings.REQUEUE_AFTER + 5)

    reap()
    engine.deliver()
    _, regions = status_of(deployment)
    assert regions["eu-west-1"] == regions["ap-southeast-2"] == RegionStatus.QUEUED
    assert functions_in(aws, "eu-west-1") == []

    # Once the bake time is over, the reaper sends the second wave.
    RegionDeployment.objects.filter(deployment=deployment, wave=0).update(
        finished_at=timezone.now() - timedelta(seconds=3600 + settings.REQUEUE_AFTER)
    )
    reap()
    engine.deliver()
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.SUCCEEDED, regions
    assert functions_in(aws, "eu-west-1") == [app.function_name]


@pytest.fixture
def built_app(team, aws, tmp_path):
    repo = GitRepo(tmp_path / "git")
    app = AppFactory(team=team, slug="shop", repo_url=repo.url, runtime="python3.12", handler="app.handler")
    for code in ("us-east-1", "eu-west-1"):
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production", branch="main")
    return app, repo.commit({"app.py": HANDLER}, "First")


def dead_build(app, sha: str, settings) -> Deployment:
    """A deployment of ``sha`` whose build a worker claimed, then died during (message gone)."""
    deployment = create_deployment(
        app=app, stage=app.stages.get(name="production"), principal=principal_for(app), ref=sha
    )
    Deployment.objects.filter(pk=deployment.pk).update(
        status=DeploymentStatus.RUNNING, started_at=timezone.now()
    )
    age(deployment, settings.BUILD_TIMEOUT + 5)
    return deployment


def test_a_build_whose_worker_died_is_built_again(built_app, engine, aws, settings):
    app, sha = built_app
    deployment = dead_build(app, sha, settings)
    engine.drop()

    reap()
    engine.deliver()
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.SUCCEEDED, regions
    assert deployment.release is not None and deployment.release.commit_sha == sha
    assert deployment.events.filter(step="rebuild", message__contains="building again").count() == 1
    assert functions_in(aws, "eu-west-1") == [app.function_name]


def test_a_redelivered_start_takes_over_a_dead_build(built_app, engine, settings):
    from deployments.engine.driver import start

    app, sha = built_app
    deployment = dead_build(app, sha, settings)
    engine.drop()
    start(deployment.pk)  # the broker redelivers the start message of the dead worker
    engine.deliver()
    assert status_of(deployment)[0] == DeploymentStatus.SUCCEEDED


def test_a_build_that_keeps_losing_its_worker_fails_the_deployment_with_a_reason(built_app, engine, settings):
    app, sha = built_app
    deployment = dead_build(app, sha, settings)
    engine.drop()
    reap()
    engine.take()  # the restarted build dies too, before it logs anything ...
    from deployments.engine.build import reclaim_stale_build

    assert reclaim_stale_build(deployment.pk)
    age(deployment, settings.BUILD_TIMEOUT + 5)

    reap()
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.FAILED
    assert set(regions.values()) == {RegionStatus.SKIPPED}
    assert "worker stopped" in deployment.error
    assert deployment.events.filter(level="error", message__contains="not building it again").exists()


def test_after_an_outage_every_queued_deployment_is_sent_again_at_once(app_3_regions, engine, settings):
    deployment = new_deployment(app_3_regions)
    engine.drop()  # the start message was lost (sent while the broker was down)
    settings.REAPER_INTERVAL = 0.2
    reap()
    assert engine.pending("workers.start_deployment") == []  # too recent for a lost message

    # The reaper did not run for longer than two of its periods: the broker (or beat) was down.
    time.sleep(0.5)
    counts = reap()
    assert counts["restarted"] == 1
    engine.deliver()
    assert status_of(deployment)[0] == DeploymentStatus.SUCCEEDED


def test_stuck_work_is_sent_again_once_per_requeue_period_not_at_every_run(app_3_regions, engine, settings):
    settings.REAPER_INTERVAL = 5
    settings.REQUEUE_AFTER = 30
    deployment = new_deployment(app_3_regions)
    engine.drop()
    sent = []
    for waited in (31, 36, 45, 52, 61, 66, 75):  # the reaper runs every 5 s or so, late at times
        age(deployment, waited)
        sent.append(reap()["restarted"])
        engine.drop()
    # Sent when it became stuck (past 30 s) and once more 30 s later: in a window of two periods,
    # so a late run never misses it.
    assert sent == [1, 1, 0, 0, 1, 1, 0]
    assert status_of(deployment)[0] == DeploymentStatus.QUEUED
