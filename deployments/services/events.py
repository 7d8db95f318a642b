"""The deployment log: ordered rows, written as work happens, for following a deploy live."""

from __future__ import annotations

import logging

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..choices import EventLevel
from ..models import Deployment, DeploymentEvent, RegionDeployment

logger = logging.getLogger("controlplane.deployments")


def log_event(
    *,
    deployment_id: int,
    message: str,
    region_id: int | None = None,
    level: str = EventLevel.INFO,
    step: str = "",
    duration_ms: int | None = None,
    region_deployment_id: int | None = None,
) -> DeploymentEvent:
    """Append one line to a deployment's log and return it.

    Sequence numbers come from a counter on the deployment row, bumped under the row's write
    lock, so regions logging in parallel never share or skip a number. A region's line also
    refreshes its heartbeat (the reaper's sign of life). Callers must never pass secret values.
    """
    now = timezone.now()
    with transaction.atomic():
        Deployment.objects.filter(pk=deployment_id).update(last_seq=F("last_seq") + 1)
        seq = Deployment.objects.filter(pk=deployment_id).values_list("last_seq", flat=True).get()
        event = DeploymentEvent.objects.create(
            deployment_id=deployment_id,
            region_id=region_id,
            seq=seq,
            level=level,
            step=step,
            message=message[:10000],
            duration_ms=duration_ms,
            created_at=now,
        )
        if region_deployment_id is not None:
            RegionDeployment.objects.filter(pk=region_deployment_id).update(heartbeat_at=now)
    logger.log(
        logging.WARNING if level in (EventLevel.WARNING, EventLevel.ERROR) else logging.INFO,
        "deployment %s%s: %s",
        deployment_id,
        f" [{step}]" if step else "",
        message[:500],
    )
    return event
