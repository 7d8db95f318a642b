"""A newer push supersedes a deployment whose build is running: the build's sandbox (every
process in it) is killed at once, and the deployment ends ``superseded`` without waiting for the
build command to finish. A real sandboxed build that sleeps; the host's process table is read."""

from __future__ import annotations

import os
import threading
import time

import pytest
from django.db import connection

from controlplane.access import SystemPrincipal
from deployments.choices import DeploymentStatus, RegionStatus
from deployments.engine.build import build_release
from deployments.models import Deployment
from deployments.services.deployments import cancel_deployment, create_deployment
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.gitrepo import GitRepo
from tests.support.processes import wait_for

from . import test_engine_support as support

broker = support.broker  # fixture: tasks are recorded, not sent

pytestmark = pytest.mark.django_db(transaction=True)

HANDLER = "def handler(event, context):\n    return {'statusCode': 200}\n"
MARK = "4242.4242"  # the build sleeps this long: its process is found by this argument


def sleepers() -> list[int]:
    """Pids of the host's processes running ``sleep MARK`` (the build command's)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv[:2] == [b"sleep", MARK.encode()]:
            found.append(int(pid))
    return found


@pytest.fixture
def app(team, tmp_path):
    repo = GitRepo(tmp_path / "git")
    app = AppFactory(
        team=team, slug="shop", repo_url=repo.url, runtime="python3.12", handler="app.handler",
        build_command=f"echo building; sleep {MARK}",
    )  # fmt: skip
    AppRegionFactory(app=app, region=RegionFactory(code="eu-west-1"))
    StageFactory(app=app, name="production", branch="main")
    app.repo = repo
    return app


def push(app, sha: str) -> Deployment:
    trigger = "webhook:github"
    return create_deployment(
        app=app, stage=app.stages.get(name="production"), ref=sha, commit={"sha": sha, "branch": "main"},
        principal=SystemPrincipal(name=trigger, team_id=app.team_id), trigger=trigger,
    )  # fmt: skip


def start_building(deployment: Deployment) -> tuple[threading.Thread, list]:
    """Build ``deployment`` on a thread (as a worker does); returns it once the build command runs."""
    result: list = []

    def build():
        try:
            loaded = Deployment.objects.select_related("app", "stage").get(pk=deployment.pk)
            result.append(build_release(loaded))
        finally:
            connection.close()  # this thread's own connection

    thread = threading.Thread(target=build, daemon=True)
    thread.start()
    wait_for(sleepers, timeout=60, message="the build command to run")
    return thread, result


def test_a_newer_push_kills_the_running_build_and_the_deployment_ends_superseded(app, broker):
    first = push(app, app.repo.commit({"app.py": HANDLER}, "v1"))
    thread, result = start_building(first)
    pids = sleepers()

    superseded_at = time.monotonic()
    newer = push(app, app.repo.commit({"app.py": HANDLER + "# v2\n"}, "v2"))
    wait_for(lambda: not sleepers(), timeout=10, interval=0.01, message="the build's processes to end")
    killed_after = time.monotonic() - superseded_at
    thread.join(timeout=30)

    print(f"\nsuperseded build killed {killed_after:.2f} s after the newer push (pids {pids})")
    assert not thread.is_alive() and result == [False]
    assert all(not os.path.exists(f"/proc/{pid}") for pid in pids)
    first.refresh_from_db()
    assert first.status == DeploymentStatus.SUPERSEDED and first.finished_at is not None
    assert list(first.regions.values_list("status", flat=True)) == [RegionStatus.CANCELLED]
    assert first.release_id is None  # nothing was built or shipped for it
    assert first.events.filter(step="build", message__contains="cancelled or superseded").exists()
    assert Deployment.objects.get(pk=newer.pk).status == DeploymentStatus.QUEUED


def test_cancelling_a_building_deployment_kills_its_build(app, broker):
    deployment = push(app, app.repo.commit({"app.py": HANDLER}, "v1"))
    thread, result = start_building(deployment)

    cancel_deployment(deployment=deployment, principal=SystemPrincipal(name="user:ada", team_id=app.team_id))
    wait_for(lambda: not sleepers(), timeout=10, interval=0.01, message="the build's processes to end")
    thread.join(timeout=30)

    deployment.refresh_from_db()
    assert result == [False]
    assert deployment.status == DeploymentStatus.CANCELLED and deployment.finished_at is not None
