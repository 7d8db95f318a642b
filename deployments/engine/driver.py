"""Driving a deployment: start it (build first when it has no release), run a region, and after
each region's end start what it unblocks: the next deploy of the app waiting for the region,
the next wave, the failure policy, or the deployment's final status (:func:`advance`)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from regions.aws.session import AwsError

from ..choices import DeploymentKind, DeploymentStatus, EventLevel, RegionStatus
from ..events import log_event
from ..models import Deployment, RegionDeployment
from ..rollout import rollout_of
from . import dispatch, states
from .build import build_release
from .claim import Heartbeat, claim
from .context import Park, RegionRun
from .run import execute, run_all
from .steps import alias, dns, teardown

READY = "ready"  # step marker: the region was released to the workers (its wave started)


def start(deployment_id: int) -> None:
    """Begin a queued deployment: build it if it has no release yet, then start its first wave."""
    deployment = Deployment.objects.select_related("app", "stage").get(pk=deployment_id)
    if deployment.status not in (DeploymentStatus.QUEUED, DeploymentStatus.RUNNING):
        return
    if deployment.cancel_requested:
        states.cancel_queued(Q(deployment=deployment))
        states.finish_if_done(deployment_id=deployment_id)
        return
    if (
        deployment.release_id is None
        and deployment.kind != DeploymentKind.TEARDOWN
        and not build_release(deployment)
    ):
        return
    advance(deployment_id=deployment_id)


def run_region(region_deployment_id: int) -> str | None:
    """Claim and run one region; returns its final status, or None when not claimed (or parked).
    Raises RetryLater for a transient AWS error (the region is queued again first)."""
    rd = claim(region_deployment_id)
    if rd is None:
        return None
    if rd.status == RegionStatus.CANCELLED:  # cancelled by the claim, before it started
        after_region(rd)
        return None
    return run_claimed(rd)


def run_claimed(rd: RegionDeployment) -> str | None:
    """Run a region this worker has claimed, to its end (or until it must be retried, or parked)."""
    run = RegionRun(rd)
    if run.parked_for == "api":
        run.save(resume_at=None)  # its certificate's wait is over (a canary's bake has its own)
    heartbeat = Heartbeat(rd.pk)
    try:
        status = execute(run, lambda: run_all(run), on_retry=None)
    except Park as park:
        heartbeat.stop()  # (before the heartbeat is set to the end of the bake)
        if states.beat([rd.pk], at=park.until):
            wait = max(0.0, (park.until - timezone.now()).total_seconds())
            if run.rd.step != park.step:
                run.save(step=park.step)  # (why it is parked, for the resumed run)
            run.log(park.message, step=park.step)
            dispatch.regions(rd.pk, countdown=wait)
        return None
    finally:
        heartbeat.stop()
    if status in (RegionStatus.QUEUED, "taken"):
        return None
    after_region(rd)
    return status


def after_region(rd: RegionDeployment) -> None:
    """Start whatever this region's end unblocks: the next deploy of the app waiting for this
    region, the next wave, the failure policy, or the deployment's final status."""
    # Any region released by its wave that still waits: for the region to be free, or for a
    # retry (its step is then the one it resumes at). A duplicate message is harmless.
    waiting_id = (
        RegionDeployment.objects.filter(
            deployment__app_id=rd.deployment.app_id, region_id=rd.region_id,
            status=RegionStatus.QUEUED,
        ).exclude(step="").exclude(pk=rd.pk).order_by("deployment_id").values_list("pk", flat=True).first()
    )  # fmt: skip
    if waiting_id is not None:
        waiting = RegionDeployment.objects.select_related("deployment__stage").get(pk=waiting_id)
        dispatch.regions(waiting.pk, countdown=bake_remaining(waiting))
    advance(deployment_id=rd.deployment_id)


def bake_remaining(rd: RegionDeployment) -> float:
    """Seconds until a later wave's region may start: its stage's bake time after the earlier
    waves of its deployment finished (0 for the first wave, a rollback, or when already due)."""
    deployment = rd.deployment
    bake = rollout_of(deployment.stage).bake_s
    if not bake or deployment.kind == DeploymentKind.ROLLBACK:
        return 0.0
    earlier = RegionDeployment.objects.filter(deployment_id=rd.deployment_id, wave__lt=rd.wave)
    finished = [f for f in earlier.values_list("finished_at", flat=True) if f is not None]
    if not finished:
        return 0.0
    due = max(finished) + timedelta(seconds=bake)
    return max(0.0, (due - timezone.now()).total_seconds())


def advance(*, deployment_id: int) -> None:
    """Move a deployment forward: release the next wave, apply the failure policy, or finish."""
    to_start: list[int] = []
    rollback: list[RegionDeployment] = []
    countdown = 0.0
    # Every region calls this as it ends: while others of its wave still run, a plain read says
    # so, without the deployment's lock and its regions loaded. (Each region's own end is
    # committed first, so the last of a wave to end always sees the wave done.)
    going = Q(status=RegionStatus.RUNNING) | (Q(status=RegionStatus.QUEUED) & ~Q(step=""))
    if RegionDeployment.objects.filter(going, deployment_id=deployment_id).exists():
        return
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().select_related("stage").get(pk=deployment_id)
        rds = list(deployment.regions.select_related("region"))
        if deployment.release_id is None and deployment.kind != DeploymentKind.TEARDOWN:
            return  # (still building)
        if any(r.status == RegionStatus.RUNNING or (r.status == RegionStatus.QUEUED and r.step)
               for r in rds):  # fmt: skip
            return  # the current wave is still going
        rollout = rollout_of(deployment.stage)
        failed = [r for r in rds if r.status in (RegionStatus.FAILED, RegionStatus.ROLLED_BACK)]
        pending = [r for r in rds if r.status == RegionStatus.QUEUED]
        if failed and pending:
            states.skip_queued(Q(pk__in=[r.pk for r in pending]))
            pending = []
        if failed and rollout.rolls_back and deployment.kind != DeploymentKind.ROLLBACK:
            # (A failed rollback leaves its other regions on the release it restored: moving them
            # "back" would put them on the version the rollback was getting away from.)
            rollback = [r for r in rds if r.status == RegionStatus.SUCCEEDED and r.previous_version]
        if pending and not deployment.cancel_requested:
            wave = min(r.wave for r in pending)
            to_start = [r.pk for r in pending if r.wave == wave]
            RegionDeployment.objects.filter(pk__in=to_start).update(step=READY)
            if deployment.kind != DeploymentKind.ROLLBACK and any(
                r.status == RegionStatus.SUCCEEDED for r in rds
            ):
                countdown = float(rollout.bake_s)
    if deployment.kind != DeploymentKind.TEARDOWN:
        dns.publish(deployment)  # the wave's latency records, in one Route 53 change
    if to_start:
        if countdown:
            log_event(deployment_id=deployment_id, step="wave",
                      message=f"Next wave in {countdown:.0f} s (bake time).")  # fmt: skip
        dispatch.regions(to_start, countdown=countdown)
        return
    if rollback:
        _roll_back_succeeded(deployment_id, rollback)
    status = states.finish_if_done(deployment_id=deployment_id)
    if status == DeploymentStatus.SUCCEEDED and deployment.kind == DeploymentKind.TEARDOWN:
        teardown.complete(deployment_id)  # every region is down: the stage (or app) goes


def _roll_back_succeeded(deployment_id: int, regions: list[RegionDeployment]) -> None:
    """The failure policy: the regions that succeeded go back to what they served before."""
    log_event(
        deployment_id=deployment_id, level=EventLevel.WARNING, step="rollback",
        message=f"A region failed and the stage's policy is to roll back: moving "
        f"{len(regions)} region(s) back.",
    )  # fmt: skip

    def back(rd: RegionDeployment) -> None:
        def log(message, **kw):
            log_event(deployment_id=deployment_id, region_id=rd.region_id,
                      message=f"{rd.region.code}: {message}", **kw)  # fmt: skip

        try:
            alias.move_back(rd, log=log)
        except AwsError as err:
            log(f"Rollback failed: {err.code}: {err.message}", step="rollback", level=EventLevel.ERROR)
            return
        states.roll_back_succeeded(rd.pk)

    with ThreadPoolExecutor(max_workers=min(16, len(regions))) as pool:
        list(pool.map(back, regions))


def fail_after_retries(region_deployment_id: int, error: AwsError) -> None:
    """A transient error that outlasted every retry fails the region."""
    rd = RegionDeployment.objects.select_related("region", "deployment").get(pk=region_deployment_id)
    detail = f"{error.operation or 'AWS'} kept failing: {error.code}: {error.message}"
    if states.fail_region(
        rd.pk, frm=[RegionStatus.QUEUED, RegionStatus.RUNNING], error=detail, error_code=error.code
    ):
        log_event(deployment_id=rd.deployment_id, region_id=rd.region_id, level=EventLevel.ERROR,
                  step=rd.step, message=f"{rd.region.code}: {detail}; giving up.")  # fmt: skip
        after_region(rd)
