"""The only writer of region and deployment status, and of the times that go with a status
(``started_at`` and ``finished_at``, a region's ``heartbeat_at``).

Every change is a conditional update from the statuses the caller expects, checked first against
the tables below, so a transition the engine does not know is refused (``TransitionRefused``)
instead of written. A status's times are set in the same statement: entering ``running`` dates
the start (once) and the heartbeat, entering a final status dates the end (once), so no region
or deployment can end without an end time.

Hidden states have names here: a region *released* to the workers is ``queued`` with a ``step``
(its wave started, or it waits for a retry); a *parked* region is ``running`` with ``resume_at``
(its canary bakes, no worker holds it, ``heartbeat_at`` is the end of the bake).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.db.models import F, Q
from django.db.models.functions import Coalesce
from django.utils import timezone

from .. import scm_status
from ..alerts import notify_deployment
from ..choices import ACTIVE_DEPLOYMENT_STATUSES, DeploymentKind, DeploymentStatus, EventLevel, RegionStatus
from ..events import log_event
from ..models import Deployment, RegionDeployment

R, D = RegionStatus, DeploymentStatus

REGION_TRANSITIONS: dict[str, frozenset[str]] = {
    # claimed; cancelled or superseded before it started; skipped after an earlier wave failed;
    # failed when its retries ran out
    R.QUEUED: frozenset({R.RUNNING, R.CANCELLED, R.SKIPPED, R.FAILED}),
    # taken over after its worker went silent, or resumed after its canary's bake; queued again
    # for a retry; its end
    R.RUNNING: frozenset({R.RUNNING, R.QUEUED, R.SUCCEEDED, R.FAILED, R.ROLLED_BACK, R.CANCELLED}),
    # moved back by the failure policy after another region failed
    R.SUCCEEDED: frozenset({R.ROLLED_BACK}),
}
DEPLOYMENT_TRANSITIONS: dict[str, frozenset[str]] = {
    # its first region (or its build) started; replaced before it ran; every region ended
    # before any started (cancelled, failed for good)
    D.QUEUED: frozenset({D.RUNNING, D.SUPERSEDED, D.CANCELLED, D.FAILED}),
    D.RUNNING: frozenset(
        {D.SUCCEEDED, D.FAILED, D.PARTIALLY_FAILED, D.ROLLED_BACK, D.CANCELLED, D.SUPERSEDED}
    ),
}
REGION_FINAL = frozenset({R.SUCCEEDED, R.FAILED, R.ROLLED_BACK, R.CANCELLED, R.SKIPPED})
DEPLOYMENT_FINAL = frozenset(D) - frozenset(ACTIVE_DEPLOYMENT_STATUSES)


class TransitionRefused(Exception):
    """A status change the transition table does not allow."""


def _check(table: dict[str, frozenset[str]], sources: Iterable[str], to: str) -> list[str]:
    sources = list(sources)
    for source in sources:
        if to not in table.get(source, ()):
            raise TransitionRefused(f"{source} → {to} is not an allowed transition")
    return sources


def move_regions(where: Q, *, frm: Iterable[str], to: str, now: datetime | None = None, **fields) -> int:
    """Move the region deployments ``where`` selects that are in one of the statuses ``frm`` to
    ``to``, with the times that go with it and ``fields``; returns how many moved."""
    sources = _check(REGION_TRANSITIONS, frm, to)
    now = now or timezone.now()
    values = {"status": to, **fields}
    if to == R.RUNNING:
        values.update(started_at=Coalesce("started_at", now), heartbeat_at=now, attempts=F("attempts") + 1)
    elif to in REGION_FINAL:
        values["finished_at"] = Coalesce("finished_at", now)
        if R.RUNNING in sources:
            values["heartbeat_at"] = now
    return RegionDeployment.objects.filter(where, status__in=sources).update(**values)


def move_deployment(
    pk: int, *, frm: Iterable[str], to: str, where: Q | None = None, now: datetime | None = None, **fields
) -> int:
    """Move deployment ``pk`` from one of ``frm`` to ``to`` (conditional, also on ``where``);
    returns 1 or 0."""
    sources = _check(DEPLOYMENT_TRANSITIONS, frm, to)
    now = now or timezone.now()
    values = {"status": to, **fields}
    if to == D.RUNNING:
        values["started_at"] = Coalesce("started_at", now)
    elif to in DEPLOYMENT_FINAL:
        values["finished_at"] = now
    return Deployment.objects.filter(where or Q(), pk=pk, status__in=sources).update(**values)


def born(*, recorded_only: bool) -> tuple[dict, str]:
    """The status fields a new deployment is created with, and its regions' status: queued, or
    (``recorded_only``: a git push to a pinned stage) cancelled and ended at once."""
    if recorded_only:
        return {"status": D.CANCELLED, "finished_at": timezone.now()}, R.CANCELLED
    return {"status": D.QUEUED}, R.QUEUED


# --- Regions --------------------------------------------------------------------------------


def claim_region(rd: RegionDeployment, now: datetime) -> bool:
    """A queued region, or a running one whose worker went silent or whose bake is over, is
    this worker's now (the caller holds the placement's lock). Updates ``rd``."""
    moved = move_regions(Q(pk=rd.pk), frm=[R.QUEUED, R.RUNNING], to=R.RUNNING, now=now)
    if moved:
        rd.status, rd.started_at, rd.heartbeat_at = R.RUNNING, rd.started_at or now, now
        rd.attempts += 1
    return bool(moved)


def claim_regions(ids: list[int], *, step: str, now: datetime) -> int:
    """Queued regions of a rollback, all at once, starting at ``step``."""
    return move_regions(Q(pk__in=ids), frm=[R.QUEUED], to=R.RUNNING, now=now, step=step)


def cancel_queued(where: Q) -> int:
    """Regions no worker holds (queued, or released and waiting) are cancelled."""
    return move_regions(where, frm=[R.QUEUED], to=R.CANCELLED)


def skip_queued(where: Q) -> int:
    """Regions that never started because an earlier wave failed, or the build did."""
    return move_regions(where, frm=[R.QUEUED], to=R.SKIPPED)


def requeue(pk: int) -> bool:
    """A running region is queued again for a retry, while the deployment is not cancelled."""
    return bool(move_regions(Q(pk=pk, deployment__cancel_requested=False), frm=[R.RUNNING], to=R.QUEUED))


def _region_ended(pk: int, moved: int) -> bool:
    if moved:
        scm_status.region_finished(pk)  # the git host hears of the region's end (outbox row)
    return bool(moved)


def finish_region(pk: int, status: str, **fields) -> bool:
    """A running region ends with ``status``."""
    return _region_ended(pk, move_regions(Q(pk=pk), frm=[R.RUNNING], to=status, **fields))


def fail_region(pk: int, *, frm: Iterable[str], error: str, error_code: str) -> bool:
    """A region fails from outside its run (retries exhausted, the reaper's time limit)."""
    moved = move_regions(Q(pk=pk), frm=frm, to=R.FAILED, error=error[:2000], error_code=error_code[:100])
    return _region_ended(pk, moved)


def roll_back_succeeded(pk: int) -> bool:
    """A region that succeeded was moved back by the failure policy (its end time stays)."""
    return _region_ended(pk, move_regions(Q(pk=pk), frm=[R.SUCCEEDED], to=R.ROLLED_BACK))


def beat(pks: list[int], at: datetime | None = None) -> int:
    """Running regions are alive: their heartbeat is ``at`` (now); a parked region's is the end
    of its bake, so no one takes it over before then."""
    return RegionDeployment.objects.filter(pk__in=pks, status=R.RUNNING).update(
        heartbeat_at=at or timezone.now()
    )


# --- Deployments ----------------------------------------------------------------------------


def start_deployment(pk: int, *, unbuilt: bool = False) -> bool:
    """A queued deployment is running: its first region or its build started (``unbuilt``: only
    when no one started it yet, the build's claim)."""
    where = Q(started_at__isnull=True) if unbuilt else None
    started = bool(move_deployment(pk, frm=[D.QUEUED], to=D.RUNNING, where=where))
    if started:
        scm_status.deployment_changed(pk, "in_progress")  # git host hook: started
    return started


def supersede_queued(pk: int) -> bool:
    """A queued deployment replaced by a newer one of its stage before it started."""
    return bool(move_deployment(pk, frm=[D.QUEUED], to=D.SUPERSEDED, cancel_requested=True))


def deployment_status_from_regions(statuses: list[str], *, cancelled: bool, superseded: bool) -> str:
    """A finished deployment's status, following from its regions'."""
    succeeded = statuses.count(R.SUCCEEDED)
    failed = statuses.count(R.FAILED)
    rolled_back = statuses.count(R.ROLLED_BACK)
    if superseded and succeeded < len(statuses):
        return D.SUPERSEDED
    if cancelled and succeeded < len(statuses) and not failed:
        return D.CANCELLED
    if succeeded == len(statuses):
        return D.SUCCEEDED
    if rolled_back and not succeeded:
        return D.ROLLED_BACK
    if succeeded:
        return D.PARTIALLY_FAILED
    return D.FAILED


def finish_if_done(*, deployment_id: int) -> str | None:
    """Set the deployment's final status once every region is final; returns it (or None), and
    logs and alerts it once."""
    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
        statuses = list(deployment.regions.values_list("status", flat=True))
        if any(s in (R.QUEUED, R.RUNNING) for s in statuses):
            return None
        if deployment.status not in ACTIVE_DEPLOYMENT_STATUSES and deployment.finished_at:
            return deployment.status
        superseded = (
            deployment.cancel_requested
            and Deployment.objects.filter(stage_id=deployment.stage_id, pk__gt=deployment.pk).exists()
        )
        status = deployment_status_from_regions(
            statuses, cancelled=deployment.cancel_requested, superseded=superseded
        )
        move_deployment(deployment.pk, frm=[deployment.status], to=status)
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    log_event(
        deployment_id=deployment_id,
        level=EventLevel.INFO if status == D.SUCCEEDED else EventLevel.WARNING,
        step="finish",
        message=f"Deployment {status.replace('_', ' ')}: "
        + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
        + ".",
    )
    if deployment.kind == DeploymentKind.TEARDOWN:
        event = ""  # (the audit log records a teardown; the stage's channels go with it)
    elif status == D.ROLLED_BACK or (deployment.kind == DeploymentKind.ROLLBACK and status == D.SUCCEEDED):
        event = "rollback"  # the policy moved regions back, or a rollback did what it was asked
    elif status == D.SUCCEEDED:
        event = "deploy_succeeded"
    elif status in (D.FAILED, D.PARTIALLY_FAILED):
        event = "deploy_failed"
    else:
        event = ""
    if event:
        notify_deployment(deployment_id, event)
    scm_status.deployment_changed(deployment_id, "finished")  # git host hook: terminal
    return status
