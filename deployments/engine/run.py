"""The step loop of one region: before each step a cancel check (which records the step), then
the step timed and logged; an AWS error is retried later when transient, else it fails the
region; a region that fails after its alias moved is moved back when a canary was sharing
traffic or the stage's policy says so. :func:`execute` runs a region's steps to its end and
writes the end through ``states``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from regions.aws.session import AwsError

from ..choices import EventLevel, RegionStatus
from ..events import log_event
from ..models import Deployment, RegionDeployment
from . import states
from .context import Park, RegionRun, RetryLater, StepFailed
from .steps import DEPLOY_STEPS, ROLLBACK_STEPS, SIDE_STEPS, STEPS, TEARDOWN_STEPS, alias

logger = logging.getLogger("controlplane.deployments")

TAKEN = "taken"  # the region is no longer this worker's (failed by the reaper, resumed elsewhere)


def steps_of(run: RegionRun) -> tuple[str, ...]:
    if run.is_teardown:
        return TEARDOWN_STEPS
    return ROLLBACK_STEPS if run.is_rollback else DEPLOY_STEPS


def run_all(run: RegionRun) -> str:
    """Run the remaining steps; returns the region's final status. Raises RetryLater, Park."""
    steps = steps_of(run)
    side = [step for step in steps if step in SIDE_STEPS]
    if not side:
        return run_steps(run, steps)
    gate = steps.index("gate") + 1  # nothing changes in AWS before the health gate passes
    first = steps.index(side[0])
    join = steps.index(side[-1]) + 1
    status = run_steps(run, steps[:gate])
    if status != RegionStatus.SUCCEEDED:
        return status
    parked: Park | None = None
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"api-{run.code}") as pool:
        api = pool.submit(_run_side, run, side)
        try:
            status = run_steps(run, steps[gate:first])
        finally:
            try:
                side_status = api.result()  # re-raises RetryLater or a crash of the API steps
            except Park as park:  # (a certificate not issued yet)
                side_status, parked = "", park
    if status != RegionStatus.SUCCEEDED:
        if parked is not None:
            run.save(resume_at=None)  # the region ends now: it is not parked after all
        return status
    if parked is not None:
        # Parked from now on (not before: until the function steps ended, this worker held it),
        # for at least ACM_POLL_MIN: a wait that ran out during those steps never turns into
        # back-to-back resumes.
        parked.until = max(parked.until, timezone.now() + timedelta(seconds=settings.ACM_POLL_MIN))
        run.save(resume_at=parked.until)
        raise parked
    if side_status != RegionStatus.SUCCEEDED:
        return side_status
    return run_steps(run, steps[join:])


def _run_side(run: RegionRun, steps: list[str]) -> str:
    try:
        return run_steps(run, steps, record_step=False)
    finally:
        connection.close()  # this thread's own connection


def run_steps(run: RegionRun, steps, *, record_step: bool = True) -> str:
    """Run ``steps`` in order; the region's final status if one ends it, else SUCCEEDED.
    ``record_step``: keep ``step`` of the region deployment on the step running."""
    for step in steps:
        module = STEPS[step]
        if not module.applies(run):
            continue
        if _cancelled(run, step if record_step else None):
            if run.parked_for == "shift" and not run.canary_done and run.rd.previous_version:
                # Cancelled while its canary baked: the canary never keeps its share.
                alias.move_back(run.rd, log=run.log)
            run.log(
                f"Stopped before '{step}': the deployment was cancelled or superseded.",
                step=step,
                level=EventLevel.WARNING,
            )
            return RegionStatus.CANCELLED
        started = time.monotonic()
        try:
            message = module.run(run)
        except (AwsError, StepFailed) as err:
            return step_failed(run, step, err, started)
        if message:
            run.log(message, step=step, duration_ms=int((time.monotonic() - started) * 1000))
    return RegionStatus.SUCCEEDED


def step_failed(run: RegionRun, step: str, err: AwsError | StepFailed, started: float) -> str:
    """Log a failed step; raises RetryLater for a transient AWS error, else records the error
    and returns the region's status by the failure policy."""
    ms = int((time.monotonic() - started) * 1000)
    if isinstance(err, AwsError):
        detail, code = f"{err.operation or 'AWS'} failed: {err.code}: {err.message}", err.code
        if err.retryable:
            run.log(f"{detail} (transient; will retry)", step=step, level=EventLevel.WARNING, duration_ms=ms)
            raise RetryLater(err) from err
    else:
        detail, code = str(err), err.code
    run.log(detail, step=step, level=EventLevel.ERROR, duration_ms=ms)
    run.save(error=detail[:2000], error_code=code[:100])
    return fail_policy(run, step)


def _cancelled(run: RegionRun, step: str | None) -> bool:
    """True when the deployment was cancelled (or superseded); else records ``step`` as the
    region's current one, when given, in the same statement."""
    if step is None:
        return Deployment.objects.filter(pk=run.deployment.pk, cancel_requested=True).exists()
    # Written out: the ORM builds this update (a filter across the relation) at many times
    # the cost of running it, once per step of every region.
    q = connection.ops.quote_name
    regions, deployments = q(RegionDeployment._meta.db_table), q(Deployment._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {regions} SET step = %s WHERE id = %s AND NOT EXISTS "  # noqa: S608 - tables only
            f"(SELECT 1 FROM {deployments} WHERE id = %s AND cancel_requested)",
            [step, run.rd.pk, run.deployment.pk],
        )
        moved = cursor.rowcount
    if moved:
        run.rd.step = step
    return not moved


def fail_policy(run: RegionRun, step: str) -> str:
    """The status of a region that failed at ``step``. Before its alias moved nothing serves the
    new version: it failed. After, it goes back to the version it served before (a canary always
    does), unless the stage's rollout says ``keep_failed``, or it has nothing to go back to (a
    first deploy), or it was a rollback (going back would restore what it rolled away from)."""
    steps = steps_of(run)
    if run.is_teardown or steps.index(step) <= steps.index("alias"):
        return RegionStatus.FAILED
    stays = _why_it_stays(run)
    if stays and not (run.canary_active and run.rd.previous_version):
        run.log(stays, step=step, level=EventLevel.WARNING)
        return RegionStatus.FAILED
    alias.move_back(run.rd, log=run.log)
    return RegionStatus.ROLLED_BACK


def _why_it_stays(run: RegionRun) -> str:
    """Why a region that failed after its alias moved keeps serving its new version ("": it does not)."""
    version, previous, alias_name = run.rd.version, run.rd.previous_version, run.stage.name
    if run.is_rollback:
        return (
            f"Alias {alias_name} stays on version {version}: this was a rollback, and moving it back "
            f"would restore version {previous}, the one being rolled away from."
            if previous
            else f"Alias {alias_name} stays on version {version}: this was a rollback."
        )
    if not previous:
        return (
            f"Alias {alias_name} stays on version {version}: this is the stage's first version in "
            "this region, so there is nothing to go back to."
        )
    if run.rollout.keep_failed:
        return f"Alias {alias_name} stays on version {version}: the stage's rollout says keep_failed."
    return ""


def requeue(run: RegionRun) -> str:
    """After a transient AWS error: the region is queued again for the per-region task when it is
    still ours and not cancelled (QUEUED; the caller sends the task), else CANCELLED (logged) or
    TAKEN."""
    if states.requeue(run.rd.pk):
        return RegionStatus.QUEUED
    if not RegionDeployment.objects.filter(pk=run.rd.pk, status=RegionStatus.RUNNING).exists():
        return TAKEN
    run.log("Not retried: the deployment was cancelled or superseded.", step=run.rd.step,
            level=EventLevel.WARNING)  # fmt: skip
    return RegionStatus.CANCELLED


def execute(run: RegionRun, body: Callable[[], str], *, on_retry: Callable[[RegionRun], None] | None) -> str:
    """Run ``body`` (the region's remaining steps) and write the region's end; returns its final
    status, QUEUED (queued again after a transient error: ``on_retry`` sends it, or without one
    RetryLater is raised for the task to retry), or TAKEN. ``Park`` is left to the caller."""
    try:
        status = body()
    except Park:
        raise
    except RetryLater:
        # Queued again only while still ours and not cancelled meanwhile; a cancel that came
        # during the step stops the region here instead of leaving it queued.
        status = requeue(run)
        if status == RegionStatus.QUEUED:
            if on_retry is None:
                raise
            on_retry(run)
        if status in (RegionStatus.QUEUED, TAKEN):
            return status
    except Exception as exc:  # noqa: BLE001 - a bug must fail the region, not leave it running
        logger.exception("region deployment %s crashed", run.rd.pk)
        run.log(f"Internal error: {type(exc).__name__}: {exc}", level=EventLevel.ERROR, step=run.rd.step)
        run.save(error=f"{type(exc).__name__}: {exc}"[:2000])
        status = RegionStatus.FAILED
    end(run.rd, status)
    return status


def end(rd: RegionDeployment, status: str) -> None:
    """The region's run ended with ``status``."""
    states.finish_region(rd.pk, status)
    if status == RegionStatus.SUCCEEDED:
        log_event(deployment_id=rd.deployment_id, region_id=rd.region_id, step="done",
                  message=f"{rd.region.code}: succeeded.")  # fmt: skip
