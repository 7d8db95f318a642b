"""The reaper: finds work that a lost message, a dead worker or a down broker left behind."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from ..choices import DeploymentStatus, EventLevel, RegionStatus
from ..models import Deployment, RegionDeployment
from .events import log_event
from .region_job import after_region, enqueue_regions, heartbeat_cutoff


def _enqueue_start(pk: int) -> None:
    from workers.tasks import start_deployment

    start_deployment.delay(pk)


def reap() -> dict[str, int]:
    """Requeue or fail stuck work; returns counts. Safe to run any time on any worker: every
    piece of work it re-sends is claimed with a conditional update."""
    now = timezone.now()
    limit = now - timedelta(seconds=settings.REGION_DEPLOY_TIME_LIMIT)
    grace = now - timedelta(seconds=settings.REQUEUE_AFTER)
    counts = {"resumed": 0, "timed_out": 0, "restarted": 0, "resent": 0}

    stuck = RegionDeployment.objects.filter(
        status=RegionStatus.RUNNING, heartbeat_at__lt=heartbeat_cutoff()
    ).select_related("region", "deployment")
    for rd in stuck:
        if rd.started_at and rd.started_at < limit:
            changed = RegionDeployment.objects.filter(pk=rd.pk, status=RegionStatus.RUNNING).update(
                status=RegionStatus.FAILED,
                finished_at=now,
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
            enqueue_regions([rd.pk])
            counts["resumed"] += 1

    for pk in Deployment.objects.filter(status=DeploymentStatus.QUEUED, created_at__lt=grace).values_list(
        "pk", flat=True
    ):
        _enqueue_start(pk)
        counts["restarted"] += 1

    waiting = RegionDeployment.objects.filter(
        status=RegionStatus.QUEUED,
        deployment__status=DeploymentStatus.RUNNING,
        deployment__started_at__lt=grace,
    ).exclude(step="")
    ids = list(waiting.values_list("pk", flat=True))
    if ids:
        enqueue_regions(ids)
        counts["resent"] += len(ids)
    return counts
