"""The reaper: finds work that a lost message, a dead worker or a down broker left behind."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from ..choices import ACTIVE_DEPLOYMENT_STATUSES, DeploymentKind, DeploymentStatus, EventLevel, RegionStatus
from ..events import log_event
from ..models import Deployment, RegionDeployment
from . import dispatch, states
from .build import BUILD_RESTARTS, build_is_stale, build_restarts, fail_unstarted, take_over_build
from .claim import heartbeat_cutoff
from .driver import after_region, bake_remaining


def reap() -> dict[str, int]:
    """Requeue or fail stuck work; returns counts. Safe to run any time on any worker: every
    piece of work it re-sends is claimed with a conditional update."""
    now = timezone.now()
    limit = now - timedelta(seconds=settings.REGION_DEPLOY_TIME_LIMIT)
    grace = now - timedelta(seconds=settings.REQUEUE_AFTER)
    counts = {"resumed": 0, "timed_out": 0, "restarted": 0, "resent": 0, "rebuilt": 0, "build_failed": 0}

    stuck = RegionDeployment.objects.filter(
        status=RegionStatus.RUNNING, heartbeat_at__lt=heartbeat_cutoff()
    ).select_related("region", "deployment")
    for rd in stuck:
        began = rd.resume_at or rd.started_at  # (a canary's bake does not count)
        if began and began < limit:
            changed = states.fail_region(
                rd.pk,
                frm=[RegionStatus.RUNNING],
                error=f"Timed out after {settings.REGION_DEPLOY_TIME_LIMIT} s at step '{rd.step}'.",
                error_code="timed_out",
            )
            if changed:
                log_event(
                    deployment_id=rd.deployment_id,
                    region_id=rd.region_id,
                    level=EventLevel.ERROR,
                    step=rd.step,
                    message=f"{rd.region.code}: no progress for {settings.REGION_DEPLOY_TIME_LIMIT} s "
                    f"at step '{rd.step}'; failed by the reaper.",
                )
                after_region(rd)
                counts["timed_out"] += 1
        else:
            dispatch.regions(rd.pk)
            counts["resumed"] += 1

    for pk in Deployment.objects.filter(status=DeploymentStatus.QUEUED, created_at__lt=grace).values_list(
        "pk", flat=True
    ):
        dispatch.start(pk)
        counts["restarted"] += 1

    # Regions released to the workers (their wave started, or a retry is due) whose message was
    # lost: sent again, a later wave only once its bake time is over.
    waiting = (
        RegionDeployment.objects.filter(
            status=RegionStatus.QUEUED, deployment__status__in=ACTIVE_DEPLOYMENT_STATUSES
        )
        .exclude(step="")
        .select_related("deployment__stage")
    )
    ids = []
    for rd in waiting:
        deployment = rd.deployment
        since = max(t for t in (deployment.started_at, deployment.created_at, rd.heartbeat_at) if t)
        if since < grace and not bake_remaining(rd):
            ids.append(rd.pk)
    if ids:
        dispatch.regions(ids)
        counts["resent"] += len(ids)

    running = Deployment.objects.filter(status=DeploymentStatus.RUNNING, started_at__lt=grace)
    for deployment in running.prefetch_related("regions"):
        regions = list(deployment.regions.all())
        if deployment.release_id is None and deployment.kind != DeploymentKind.TEARDOWN:
            _reap_build(deployment, counts)
        elif not any(r.status == RegionStatus.RUNNING or (r.status == RegionStatus.QUEUED and r.step)
                     for r in regions):  # fmt: skip
            # Nothing running or released: the worker died between the build and the first
            # wave, or before the deployment's final status was written.
            dispatch.start(deployment.pk)
            counts["restarted"] += 1
    return counts


def _reap_build(deployment: Deployment, counts: dict[str, int]) -> None:
    """A build silent past BUILD_TIMEOUT lost its worker: build again (a redelivered or re-sent
    start_deployment re-claims it), or fail the deployment once it was restarted enough."""
    if not build_is_stale(deployment):
        return
    if build_restarts(deployment.pk) < BUILD_RESTARTS:
        dispatch.start(deployment.pk)
        counts["rebuilt"] += 1
        return
    if take_over_build(deployment):
        fail_unstarted(
            deployment,
            f"Build failed: its worker stopped and the build was silent for more than "
            f"{settings.BUILD_TIMEOUT} s, {BUILD_RESTARTS + 1} time(s); not building it again.",
        )
        counts["build_failed"] += 1
