"""Claiming work with a conditional update, and keeping it: a region (deploys of one app in one
region are serialized, since the stages share one function and its ``$LATEST``), every region
of a rollback at once, and the heartbeat that tells other workers a claimed region is alive."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from regions.models import AppRegion, StagePlacement

from ..alerts import notify_deployment
from ..choices import DeploymentKind, EventLevel, RegionStatus
from ..events import log_event
from ..models import Deployment, RegionDeployment
from . import states
from .steps import ROLLBACK_STEPS

logger = logging.getLogger("controlplane.deployments")


def heartbeat_cutoff():
    return timezone.now() - timedelta(seconds=settings.REGION_HEARTBEAT_TIMEOUT)


def claim(region_deployment_id: int) -> RegionDeployment | None:
    """Take a region deployment for this worker: returns it (running), or None when someone else
    has it, it is finished, or another deploy of the same app holds the region (that one starts
    this one when done). A queued region of a cancelled deployment is cancelled here and
    returned with status ``cancelled``: the caller does what its end unblocks."""
    started = cancelled = False
    with transaction.atomic():
        where = (
            RegionDeployment.objects.filter(pk=region_deployment_id)
            .values_list("deployment__app_id", "region_id")
            .first()
        )
        if where is None:
            return None
        # Lock the placement row: the one place that serializes an app's deploys in a region.
        placement_id = (
            AppRegion.objects.select_for_update()
            .filter(app_id=where[0], region_id=where[1])
            .values_list("pk", flat=True)
            .first()
        )
        # Read again under the lock (what another worker did before we got it counts).
        rd = RegionDeployment.objects.select_related("deployment", "region").get(pk=region_deployment_id)
        rd.placement_id = placement_id  # for the run, which records the stage's placement
        now = timezone.now()
        stale = rd.status == RegionStatus.RUNNING and (
            rd.heartbeat_at is None or rd.heartbeat_at < heartbeat_cutoff()
        )
        # A parked canary is resumed when its bake is over, or at once when cancelled.
        due = (
            rd.status == RegionStatus.RUNNING
            and rd.resume_at is not None
            and (rd.resume_at <= now or rd.deployment.cancel_requested)
        )
        if rd.status != RegionStatus.QUEUED and not stale and not due:
            return None
        if rd.deployment.cancel_requested and rd.status == RegionStatus.QUEUED:
            if not states.cancel_queued(Q(pk=rd.pk)):
                return None
            cancelled, rd.status = True, RegionStatus.CANCELLED
        elif not region_is_busy(rd):
            states.claim_region(rd, now)
            # The first region to start starts the deployment (the others read it running).
            started = rd.deployment.status == states.D.QUEUED and states.start_deployment(rd.deployment_id)
        else:
            return None
    if cancelled:
        return rd
    if started and rd.deployment.kind != DeploymentKind.TEARDOWN:
        notify_deployment(rd.deployment_id, "deploy_started")
    if stale and not due:
        log_event(
            deployment_id=rd.deployment_id,
            region_id=rd.region_id,
            level=EventLevel.WARNING,
            step=rd.step,
            message=f"{rd.region.code}: resuming after the previous worker went silent.",
        )
    return rd


def claim_rollback(deployment_id: int) -> list[RegionDeployment]:
    """Take every queued region of a rollback deployment in one transaction (a rollback waits
    for no other deploy, so nothing needs serializing); returns the claimed regions."""
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().filter(pk=deployment_id).first()
        if deployment is None or deployment.kind != DeploymentKind.ROLLBACK or deployment.release_id is None:
            return []
        if deployment.cancel_requested:
            return []  # the per-region path cancels them (see claim)
        ids = list(
            RegionDeployment.objects.filter(deployment=deployment, status=RegionStatus.QUEUED).values_list(
                "pk", flat=True
            )
        )
        if not ids:
            return []
        states.claim_regions(ids, step=ROLLBACK_STEPS[0], now=timezone.now())
        # What each region serves now is what the rollback replaces: recorded here, in this one
        # transaction, so the region threads start with nothing to write before the alias moves.
        live = dict(
            StagePlacement.objects.filter(
                stage_id=deployment.stage_id, placement__app_id=deployment.app_id
            ).values_list("placement__region_id", "version")
        )
        replaced = []
        for rd in RegionDeployment.objects.filter(pk__in=ids, previous_version="").only(
            "region_id", "version"
        ):
            was = live.get(rd.region_id, "")
            if was and was != rd.version:
                rd.previous_version = was
                replaced.append(rd)
        RegionDeployment.objects.bulk_update(replaced, ["previous_version"])  # one statement
        started = states.start_deployment(deployment_id)
    if started:
        notify_deployment(deployment_id, "deploy_started")
    return list(RegionDeployment.objects.select_related("deployment", "region").filter(pk__in=ids))


def region_is_busy(rd: RegionDeployment) -> bool:
    """Another deploy of the app is running in the region (their stages share ``$LATEST``).
    A rollback only moves its stage's alias, so it neither waits for others nor holds them up."""
    if rd.deployment.kind == DeploymentKind.ROLLBACK:
        return False
    return (
        RegionDeployment.objects.filter(
            deployment__app_id=rd.deployment.app_id,
            region_id=rd.region_id,
            status=RegionStatus.RUNNING,
            heartbeat_at__gte=heartbeat_cutoff(),
        )
        .exclude(pk=rd.pk)
        .exclude(deployment__kind=DeploymentKind.ROLLBACK)
        .exists()
    )


class Heartbeat:
    """Keeps a running region's ``heartbeat_at`` fresh from a background thread while its steps
    run (one AWS call, waiter or build may outlast REGION_HEARTBEAT_TIMEOUT), so no other worker
    takes it over while this one is alive: a beat every REGION_HEARTBEAT_INTERVAL seconds (at
    least three per timeout). A beat that fails (the database briefly unreachable or locked) is
    logged and the next one is tried on time."""

    def __init__(self, region_deployment_ids: int | list[int]) -> None:
        ids = region_deployment_ids
        self.pks = [ids] if isinstance(ids, int) else list(ids)
        self.interval = max(
            0.2, min(float(settings.REGION_HEARTBEAT_INTERVAL), settings.REGION_HEARTBEAT_TIMEOUT / 3)
        )
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.pks[0]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            while not self._stopped.wait(self.interval):
                try:
                    states.beat(self.pks)
                except Exception:  # noqa: BLE001 - the next beat is tried; the reaper is the backstop
                    logger.warning("heartbeat of region deployments %s failed", self.pks, exc_info=True)
                    connection.close()  # a broken connection is opened again by the next beat
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)
