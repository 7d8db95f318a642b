"""The reaper: finds work that a lost message, a dead worker or a down broker left behind.

Beat runs it every REAPER_INTERVAL seconds. Each piece of stuck work is sent again when it
becomes stuck (a region whose heartbeat just went stale, queued work just past REQUEUE_AFTER),
then at most once per REQUEUE_AFTER while it stays stuck, so a saturated worker pool is not
flooded with duplicates. After an outage, everything waiting is sent again at once: the reaper
itself runs through the broker, so when it finds it did not run for 2 x REAPER_INTERVAL (the
broker, beat or every worker was gone), or Redis came back without its data, the messages of
that time were lost or never sent.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.conf import settings
from django.utils import timezone

from regions.aws import ratelimit

from ..choices import ACTIVE_DEPLOYMENT_STATUSES, DeploymentKind, DeploymentStatus, EventLevel, RegionStatus
from ..events import log_event
from ..models import Deployment, RegionDeployment
from . import dispatch, states
from .build import BUILD_RESTARTS, build_is_stale, build_restarts, fail_unstarted, take_over_build
from .claim import heartbeat_cutoff
from .driver import after_region, bake_remaining

logger = logging.getLogger("controlplane.deployments")

ALIVE_KEY = "reaper-alive"


def after_outage() -> bool:
    """True when the reaper did not run in the last 2 x REAPER_INTERVAL, or the broker lost its
    data: the messages sent meanwhile may never have reached a worker. Marks this run."""
    return not ratelimit.touch(ALIVE_KEY, ttl=2 * settings.REAPER_INTERVAL)


def _due(since: datetime, *, now: datetime, after: float) -> bool:
    """Work waiting since ``since`` is re-sent when it has waited ``after`` seconds, then once
    per REQUEUE_AFTER: true in a window of two reaper periods after each of those moments (two,
    so a late run never misses it; a duplicate is refused by the claim)."""
    waited = (now - since).total_seconds() - after
    if waited < 0:
        return False
    return waited % max(float(settings.REQUEUE_AFTER), 1.0) < 2 * settings.REAPER_INTERVAL


def reap() -> dict[str, int]:
    """Requeue or fail stuck work; returns counts. Safe to run any time on any worker: every
    piece of work it re-sends is claimed with a conditional update."""
    now = timezone.now()
    limit = now - timedelta(seconds=settings.REGION_DEPLOY_TIME_LIMIT)
    grace = now - timedelta(seconds=settings.REQUEUE_AFTER)
    everything = after_outage()
    if everything:
        logger.warning(
            "reaper: first run after an outage (or a broker that lost its data): "
            "sending every waiting piece of work again"
        )
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
        elif everything or _due(rd.heartbeat_at, now=now, after=settings.REGION_HEARTBEAT_TIMEOUT):
            dispatch.regions(rd.pk)
            counts["resumed"] += 1

    queued = Deployment.objects.filter(status=DeploymentStatus.QUEUED)
    if not everything:
        queued = queued.filter(created_at__lt=grace)
    for pk, created_at in queued.values_list("pk", "created_at"):
        if everything or _due(created_at, now=now, after=settings.REQUEUE_AFTER):
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
        if (everything or _due(since, now=now, after=settings.REQUEUE_AFTER)) and not bake_remaining(rd):
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
