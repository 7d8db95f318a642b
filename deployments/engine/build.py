"""Building a deployment's release from its git ref (the build itself is ``deployments/builds.py``),
and taking a build over when the worker building it died."""

from __future__ import annotations

import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.db.models import Q
from django.utils import timezone

from controlplane.errors import DomainError

from ..alerts import notify_deployment
from ..builds import BuildCancelled, build_artifact
from ..choices import DeploymentStatus, EventLevel
from ..events import log_event
from ..models import Deployment, DeploymentEvent
from . import states
from .releases import create_release

REBUILD = "rebuild"  # event step: a build whose worker died was started again
BUILD_RESTARTS = 1  # builds restarted after a dead worker before the deployment is failed


def build_release(deployment: Deployment) -> bool:
    """Build ``deployment.ref`` and attach a release; False (deployment failed, or another worker
    builds it) when there is none."""
    if states.start_deployment(deployment.pk, unbuilt=True):
        notify_deployment(deployment.pk, "deploy_started")
    elif not reclaim_stale_build(deployment.pk):
        return False  # another worker is building it

    def emit(level: str, line: str) -> None:
        log_event(deployment_id=deployment.pk, level=level, step="build", message=line)

    watch = CancelWatch(deployment.pk)
    try:
        artifact = build_artifact(app=deployment.app, sha=deployment.ref, emit=emit, cancel=watch.cancelled)
        release = create_release(
            app=deployment.app, stage=deployment.stage, artifact=artifact,
            commit={"sha": deployment.commit_sha, "branch": deployment.commit_branch,
                    "message": deployment.commit_message, "author": deployment.commit_author,
                    "url": deployment.commit_url},
            created_by=deployment.triggered_by,
        )  # fmt: skip
    except BuildCancelled as err:
        log_event(deployment_id=deployment.pk, level=EventLevel.WARNING, step="build", message=err.detail)
        states.cancel_queued(Q(deployment=deployment))
        states.finish_if_done(deployment_id=deployment.pk)  # superseded (or cancelled)
        return False
    except DomainError as err:
        fail_unstarted(deployment, f"Build failed: {err.detail}")
        return False
    finally:
        watch.stop()
    Deployment.objects.filter(pk=deployment.pk).update(release=release)
    return True


class CancelWatch:
    """While a deployment builds, reads its cancel flag every ``BUILD_CANCEL_POLL`` seconds on a
    thread of its own and sets ``cancelled`` once it is saved (a cancel, or a newer deployment
    of the stage superseding it), so the build is stopped at once, not when it ends."""

    def __init__(self, deployment_id: int):
        self.deployment_id = deployment_id
        self.cancelled = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"build-cancel-{deployment_id}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._stopped.wait(settings.BUILD_CANCEL_POLL):
                if Deployment.objects.filter(pk=self.deployment_id, cancel_requested=True).exists():
                    self.cancelled.set()
                    return
        finally:
            connection.close()  # this thread's own connection

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()


def build_last_alive(deployment: Deployment):
    """When a build last showed signs of life: its start, or its newest log line (a build emits
    a line per phase and its command's output, and is stopped past BUILD_TIMEOUT anyway)."""
    newest = (
        DeploymentEvent.objects.filter(deployment_id=deployment.pk)
        .order_by("-created_at")
        .values_list("created_at", flat=True)
        .first()
    )
    return max(t for t in (deployment.started_at, newest, deployment.created_at) if t is not None)


def build_is_stale(deployment: Deployment) -> bool:
    """A running deployment with no release whose build has been silent past BUILD_TIMEOUT: the
    worker building it died."""
    return (
        deployment.status == DeploymentStatus.RUNNING
        and deployment.release_id is None
        and build_last_alive(deployment) < timezone.now() - timedelta(seconds=settings.BUILD_TIMEOUT)
    )


def build_restarts(deployment_id: int) -> int:
    return DeploymentEvent.objects.filter(deployment_id=deployment_id, step=REBUILD).count()


def take_over_build(deployment: Deployment) -> bool:
    """Compare-and-set on ``started_at`` of a running, unbuilt deployment: of two workers (or a
    worker and the reaper) only one takes its build over."""
    return bool(
        Deployment.objects.filter(
            Q(started_at=deployment.started_at), pk=deployment.pk, status=DeploymentStatus.RUNNING,
            release__isnull=True,
        ).update(started_at=timezone.now())
    )  # fmt: skip


def reclaim_stale_build(deployment_id: int) -> bool:
    """Take over the build of a deployment whose builder died; True when this worker should build
    it again."""
    deployment = Deployment.objects.get(pk=deployment_id)
    if not build_is_stale(deployment):
        return False
    claimed = take_over_build(deployment)
    if claimed:
        log_event(
            deployment_id=deployment.pk, level=EventLevel.WARNING, step=REBUILD,
            message=f"The build went silent for more than {settings.BUILD_TIMEOUT} s (its worker "
            "stopped); building again.",
        )  # fmt: skip
    return claimed


def fail_unstarted(deployment: Deployment, message: str) -> None:
    """A deployment whose build failed: its regions are skipped and it fails with ``message``."""
    log_event(deployment_id=deployment.pk, level=EventLevel.ERROR, step="build", message=message)
    states.skip_queued(Q(deployment=deployment))
    Deployment.objects.filter(pk=deployment.pk).update(error=message[:5000])
    states.finish_if_done(deployment_id=deployment.pk)
