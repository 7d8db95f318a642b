"""The rollback fast path: every region of a rollback from one task and one claim, so every
alias moves about one AWS round trip after the request.

The region threads make only the UpdateAlias call; what the moves change in the database
(each region's live version, its log line) is written from the task's thread once they are
done, in a few statements, so no region waits for a database connection of its own before its
alias moves. Then every moved region is verified as a deploy's region would be: their health
URLs probed together, then each region's remaining steps and end on the task's thread, so a
rollback holds one database connection however many regions it has. A region whose
AWS call must be retried goes back to the per-region task, resuming at the alias; a worker that
dies here leaves running regions with a stale heartbeat, which the reaper resumes one by one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.conf import settings

from regions.aws.session import AwsError
from regions.models import AppRegion, StagePlacement

from ..events import EventLine, log_events
from ..models import Deployment
from . import dispatch
from .claim import Heartbeat, claim_rollback
from .context import RegionRun
from .driver import advance
from .run import execute, run_steps, step_failed
from .steps import ROLLBACK_STEPS, alias


def run_rollback(deployment_id: int) -> int:
    """Run every region of a rollback at once on this worker; returns how many it ran."""
    claimed = claim_rollback(deployment_id)
    if not claimed:
        return 0
    deployment = Deployment.objects.select_related("app__team", "stage", "release__artifact").get(
        pk=deployment_id
    )
    runs = [RegionRun(rd, loaded=deployment) for rd in claimed]
    heartbeat = Heartbeat([rd.pk for rd in claimed])
    try:
        with ThreadPoolExecutor(max_workers=len(runs), thread_name_prefix="rollback") as pool:
            moves = list(pool.map(alias.move_only, runs))
        moved = [run for run, error in zip(runs, moves, strict=True) if error is None]
        record_live_versions(deployment, moved)
        log_moves(deployment, moved)
        for run, error in zip(runs, moves, strict=True):
            if error is not None:
                _failed_move(run, error)
        verifying = [run for run in runs if run.status is None]
        probe_all(verifying)
        for run in verifying:
            run.status = execute(
                run, lambda run=run: run_steps(run, ROLLBACK_STEPS[1:]), on_retry=_retry_alone
            )
    finally:
        heartbeat.stop()
    advance(deployment_id=deployment_id)
    return len(claimed)


def _retry_alone(run: RegionRun) -> None:
    dispatch.regions(run.rd.pk, countdown=2)


def log_moves(deployment: Deployment, runs: list[RegionRun]) -> None:
    """Each moved region's log line, all in one statement."""
    log_events(
        deployment_id=deployment.pk,
        lines=[
            EventLine(
                message=f"{run.code}: {alias.moved_message(run)}",
                region_id=run.rd.region_id,
                step="alias",
                duration_ms=run.move_ms,
            )  # fmt: skip
            for run in runs
        ],
    )


def _failed_move(run: RegionRun, error: AwsError) -> None:
    """A region whose alias did not move: its failure (``run.status``), or its retry alone."""

    def failed() -> str:
        return step_failed(run, "alias", error, run.move_started)

    run.status = execute(run, failed, on_retry=_retry_alone)


def probe_all(runs: list[RegionRun]) -> None:
    """Every region's health URL probed at once, as each region's verify step would probe its
    own (the same tries), so the steps after the alias then run one region after another on this
    thread: a rollback holds one database connection, not one per region."""
    if not runs or not settings.DEPLOY_VERIFY:
        return
    urls = {run.rd.pk: run.health_url() for run in runs}
    wanted = sorted({url for url in urls.values() if url})
    if not wanted:
        return
    results = runs[0].probe(wanted)  # (one release, so one health check for every region)
    for run in runs:
        url = urls[run.rd.pk]
        if url:
            run.probed = {url: results[url]}


def record_live_versions(deployment: Deployment, runs: list[RegionRun]) -> None:
    """What each region of ``runs`` serves now (its ``rd.version``, of the deployment's release),
    for every region in a statement per distinct version."""
    if not runs:
        return
    placements = dict(
        AppRegion.objects.filter(app_id=deployment.app_id, region_id__in=[r.rd.region_id for r in runs])
        .values_list("region_id", "pk")
    )  # fmt: skip
    by_placement = {placements[r.rd.region_id]: r.rd.version for r in runs if r.rd.region_id in placements}
    # One statement per distinct version (usually one or a few): a CASE of one branch per region
    # took longer to build than to run.
    placed = StagePlacement.objects.filter(stage_id=deployment.stage_id)
    by_version: dict[str, list[int]] = {}
    for pk, version in by_placement.items():
        by_version.setdefault(version, []).append(pk)
    updated = sum(
        placed.filter(placement_id__in=pks).update(version=version, release_id=deployment.release_id)
        for version, pks in by_version.items()
    )
    if updated != len(runs):  # a placement row went missing meanwhile: make it, one by one
        for run in runs:
            run.record_live(run.rd.version)
