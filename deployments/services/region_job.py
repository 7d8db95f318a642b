"""The per-region job: the steps of "The deploy, one region" (DESIGN.md), each reading AWS state
before acting, so a redelivered or requeued job resumes where the region stood.

Claiming is a conditional update; deploys of one app in one region are serialized (the stages
share one function and its ``$LATEST`` configuration), so a region deployment waits while another
of the same app and region is running, and is started when that one finishes.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from regions.aws import acm, apigateway, iam, lambda_, route53, s3
from regions.aws.session import AwsError, account_id
from regions.models import AppRegion, StagePlacement

from .. import scm_status
from ..choices import DeploymentKind, DeploymentStatus, EventLevel, FailurePolicy, RegionStatus
from ..models import Deployment, DeploymentEvent, RegionDeployment, Release
from .deploy import failure_policy, finish_if_done, release_env
from .events import log_event

logger = logging.getLogger("controlplane.deployments")

READY = "ready"  # step marker: the region was released to the workers (its wave started)
REBUILD = "rebuild"  # event step: a build whose worker died was started again
BUILD_RESTARTS = 1  # builds restarted after a dead worker before the deployment is failed
DEPLOY_STEPS = ("gate", "artifact", "function", "version", "api", "dns", "alias", "verify", "shift", "prune")
# The regional API and its DNS need nothing the function steps make (the integration invokes the
# alias by name), so they run alongside artifact, function and version (after the health gate of
# a later wave); the alias moves only once both are done.
SIDE_STEPS = ("api", "dns")
ROLLBACK_STEPS = ("alias", "verify")
VERSION_MARKER = "cp-release-{release_id} "


class RetryLater(Exception):
    """A transient AWS failure: the task retries the region later, resuming at this step."""

    def __init__(self, error: AwsError):
        super().__init__(str(error))
        self.error = error


class Park(Exception):
    """A canary bakes until ``until``: the region stays running and held (no other deploy of the
    app takes the region) but no worker thread waits for it; a task resumes it then."""

    def __init__(self, until):
        super().__init__(f"parked until {until.isoformat()}")
        self.until = until


class StepFailed(Exception):
    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


def heartbeat_cutoff():
    return timezone.now() - timedelta(seconds=settings.REGION_HEARTBEAT_TIMEOUT)


def version_marker(release: Release) -> str:
    return VERSION_MARKER.format(release_id=release.pk)


def lambda_code_sha(sha256_hex: str) -> str:
    """Lambda reports a function's code hash as the base64 of the zip's raw SHA-256."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


# --- Claiming ---------------------------------------------------------------------------------


def claim(region_deployment_id: int) -> RegionDeployment | None:
    """Take a region deployment for this worker; None when someone else has it, it is finished,
    or another deploy of the same app holds the region (it will start this one when done).

    A queued region of a cancelled deployment is cancelled here, and what its end unblocks (the
    deployment's final status, the next deploy waiting for the region) is done at once."""
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
        stale = rd.status == RegionStatus.RUNNING and (
            rd.heartbeat_at is None or rd.heartbeat_at < heartbeat_cutoff()
        )
        # A parked canary is resumed when its bake is over, or at once when cancelled.
        due = (
            rd.status == RegionStatus.RUNNING
            and rd.resume_at is not None
            and (rd.resume_at <= timezone.now() or rd.deployment.cancel_requested)
        )
        if rd.status != RegionStatus.QUEUED and not stale and not due:
            return None
        if rd.deployment.cancel_requested and rd.status == RegionStatus.QUEUED:
            cancelled = bool(
                RegionDeployment.objects.filter(pk=rd.pk, status=RegionStatus.QUEUED).update(
                    status=RegionStatus.CANCELLED, finished_at=timezone.now()
                )
            )
        elif not region_is_busy(rd):
            now = timezone.now()
            claimed = {
                "status": RegionStatus.RUNNING,
                "started_at": rd.started_at or now,
                "heartbeat_at": now,
                "attempts": rd.attempts + 1,
            }
            RegionDeployment.objects.filter(pk=rd.pk).update(**claimed)
            for name, value in claimed.items():
                setattr(rd, name, value)
            # The first region to start starts the deployment (the others read it running).
            started = rd.deployment.status == DeploymentStatus.QUEUED and bool(
                Deployment.objects.filter(pk=rd.deployment_id, status=DeploymentStatus.QUEUED).update(
                    status=DeploymentStatus.RUNNING, started_at=now
                )
            )
        else:
            return None
    if cancelled:
        after_region(rd)
        return None
    if started:
        notify_started(rd.deployment_id)
    if stale and not due:
        log_event(
            deployment_id=rd.deployment_id,
            region_id=rd.region_id,
            region_deployment_id=rd.pk,
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
        now = timezone.now()
        RegionDeployment.objects.filter(pk__in=ids, status=RegionStatus.QUEUED).update(
            status=RegionStatus.RUNNING, started_at=now, heartbeat_at=now, attempts=F("attempts") + 1,
            step=ROLLBACK_STEPS[0],
        )  # fmt: skip
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
        started = bool(
            Deployment.objects.filter(pk=deployment_id, status=DeploymentStatus.QUEUED).update(
                status=DeploymentStatus.RUNNING, started_at=now
            )
        )
    if started:
        notify_started(deployment_id)
    return list(RegionDeployment.objects.select_related("deployment", "region").filter(pk__in=ids))


def run_rollback(deployment_id: int) -> int:
    """A rollback's regions, all at once on this worker: one task and one claim instead of a task
    and a claim per region, so every alias moves about one AWS round trip after the request.

    The region threads make only the UpdateAlias call; what the moves change in the database
    (each region's live version, its log line) is written from this thread once they are done,
    in a few statements, so no region waits for a database connection of its own before its
    alias moves. Then each moved region is verified as ``run_region`` would. A region whose AWS
    call must be retried goes back to the per-region task, resuming at the alias; a worker that
    dies here leaves running regions with a stale heartbeat, which the reaper resumes one by
    one. Returns how many regions it ran."""
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
            moves = list(pool.map(RegionRun.move_alias_only, runs))
            moved = [run for run, error in zip(runs, moves, strict=True) if error is None]
            record_live_versions(deployment, moved)
            for run, error in zip(runs, moves, strict=True):
                run.after_move(error)
            list(pool.map(_finish_rollback_region, runs))
    finally:
        heartbeat.stop()
    advance(deployment_id=deployment_id)
    return len(claimed)


def _finish_rollback_region(run: RegionRun) -> None:
    """The steps after the alias (verify), then the region's end; in a region thread."""
    try:
        if run.status is None:
            run.status = run.run_steps(ROLLBACK_STEPS[1:])
    except RetryLater:
        run.status = _requeue(run)
        if run.status == RegionStatus.QUEUED:
            enqueue_regions([run.rd.pk], countdown=2)
    except Exception as exc:  # noqa: BLE001 - never lose the other regions
        logger.exception("rollback region deployment %s crashed", run.rd.pk)
        run.log(f"Internal error: {type(exc).__name__}: {exc}", level=EventLevel.ERROR, step=run.rd.step)
        run.status = RegionStatus.FAILED
    finally:
        try:
            if run.status not in (TAKEN, RegionStatus.QUEUED):
                finish_region(run.rd, run.status)
        finally:
            connection.close()


TAKEN = "taken"  # _requeue: the region is no longer this worker's (failed by the reaper, resumed)


def _requeue(run: RegionRun) -> str:
    """After a transient AWS error: the region is queued again for the per-region task when it is
    still ours and not cancelled (QUEUED; the caller sends the task), else CANCELLED (logged) or
    TAKEN."""
    requeued = RegionDeployment.objects.filter(
        pk=run.rd.pk, status=RegionStatus.RUNNING, deployment__cancel_requested=False
    ).update(status=RegionStatus.QUEUED)
    if requeued:
        return RegionStatus.QUEUED
    if not RegionDeployment.objects.filter(pk=run.rd.pk, status=RegionStatus.RUNNING).exists():
        return TAKEN
    run.log("Not retried: the deployment was cancelled or superseded.", step=run.rd.step,
            level=EventLevel.WARNING)  # fmt: skip
    return RegionStatus.CANCELLED


def record_live_versions(deployment: Deployment, runs: list[RegionRun]) -> None:
    """What each region of ``runs`` serves now (its ``rd.version``, of the deployment's release),
    for every region in two statements."""
    if not runs:
        return
    placements = dict(
        AppRegion.objects.filter(app_id=deployment.app_id, region_id__in=[r.rd.region_id for r in runs])
        .values_list("region_id", "pk")
    )  # fmt: skip
    by_placement = {placements[r.rd.region_id]: r.rd.version for r in runs if r.rd.region_id in placements}
    placed = StagePlacement.objects.filter(stage_id=deployment.stage_id, placement_id__in=by_placement)
    updated = placed.update(
        version=Case(*(When(placement_id=pk, then=Value(v)) for pk, v in by_placement.items())),
        release=deployment.release,
    )
    if updated != len(runs):  # a placement row went missing meanwhile: make it, one by one
        for run in runs:
            run._record_live(run.rd.version)


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


def notify_started(deployment_id: int) -> None:
    """``deploy_started``, sent by whoever moved the deployment from queued to running (once)."""
    from controlplane.notify import notify_deployment

    notify_deployment(deployment_id, "deploy_started")
    scm_status.deployment_changed(deployment_id, "in_progress")  # git host hook: started


# --- The job ----------------------------------------------------------------------------------


@dataclass
class RegionRun:
    rd: RegionDeployment
    loaded: Deployment | None = None  # the deployment, when the caller has it loaded already
    deployment: Deployment = field(init=False)
    release: Release = field(init=False)

    def __post_init__(self) -> None:
        self.deployment = self.loaded or Deployment.objects.select_related(
            "app__team", "stage", "release__artifact"
        ).get(pk=self.rd.deployment_id)
        self.release = self.deployment.release
        self.app = self.deployment.app
        self.stage = self.deployment.stage
        self.stage.app = self.app  # loaded with its team: nothing reads them again
        if self.release.artifact_id:
            self.release.artifact.app = self.app  # (its storage key names the team and the app)
        self.region = self.rd.region
        self.code = self.region.code
        self.role = self.region.role_arn
        self.function = self.app.function_name
        self.config = self.release.config
        self.api_id = ""
        self.endpoint = ""
        self.regional_domain: tuple[str, str] | None = None
        self.health_check_id = ""
        # What this run learnt, so later steps need not ask AWS again: the function was created
        # by this run (so it has no other version, alias or policy), and the stage alias as read.
        self.created_function = False
        self.version_searched = False
        self.revision_id = ""  # of $LATEST as this run left it
        self.alias_before: lambda_.AliasInfo | None | object = lambda_.UNREAD
        self.status: str | None = None  # the region's final status, once known (run_rollback)
        self.canary_active = False  # the alias shares the stage's traffic with the new version
        self.canary_done = False  # this run moved every request to the new version after a canary
        self._placement_id: int | None = getattr(self.rd, "placement_id", None)  # set by claim
        self.live: StagePlacement | None = None  # the stage's placement as this run recorded it
        self._move_started = 0.0

    # logging -------------------------------------------------------------------------------
    def log(self, message: str, *, step: str = "", level: str = EventLevel.INFO, duration_ms=None) -> None:
        log_event(
            deployment_id=self.rd.deployment_id,
            region_id=self.rd.region_id,
            region_deployment_id=self.rd.pk,
            level=level,
            step=step,
            message=f"{self.code}: {message}",
            duration_ms=duration_ms,
        )

    def save(self, **fields) -> None:
        RegionDeployment.objects.filter(pk=self.rd.pk).update(**fields)
        for name, value in fields.items():
            setattr(self.rd, name, value)

    # steps -------------------------------------------------------------------------------------
    def steps(self) -> tuple[str, ...]:
        return ROLLBACK_STEPS if self.deployment.kind == DeploymentKind.ROLLBACK else DEPLOY_STEPS

    def applies(self, step: str) -> bool:
        """False for a step with nothing to do in this region, known without asking anyone (it is
        skipped, with no cancel check and no step recorded)."""
        if step == "gate":
            return bool(self.rd.wave) and settings.DEPLOY_VERIFY
        if step == "dns":
            return bool(self.stage.domain and self.stage.hosted_zone_id)
        if step == "shift":
            return self.canary_active
        if step == "prune":
            return not self.created_function  # its one version is the one just published
        return True

    def run(self) -> str:
        """Run the remaining steps; returns the region's final status. Raises RetryLater."""
        steps = self.steps()
        side = [step for step in steps if step in SIDE_STEPS]
        if not side:
            return self.run_steps(steps)
        gate = steps.index("gate") + 1  # nothing changes in AWS before the health gate passes
        first = steps.index(side[0])
        join = steps.index(side[-1]) + 1
        status = self.run_steps(steps[:gate])
        if status != RegionStatus.SUCCEEDED:
            return status
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"api-{self.code}") as pool:
            api = pool.submit(self._run_side, side)
            try:
                status = self.run_steps(steps[gate:first])
            finally:
                side_status = api.result()  # re-raises RetryLater or a crash of the API steps
        if status != RegionStatus.SUCCEEDED:
            return status
        if side_status != RegionStatus.SUCCEEDED:
            return side_status
        return self.run_steps(steps[join:])

    def _run_side(self, steps: list[str]) -> str:
        try:
            return self.run_steps(steps, record_step=False)
        finally:
            connection.close()  # this thread's own connection

    def run_steps(self, steps, *, record_step: bool = True) -> str:
        """Run ``steps`` in order; the region's final status if one ends it, else SUCCEEDED.
        ``record_step``: keep ``step`` of the region deployment on the step running."""
        for step in steps:
            if not self.applies(step):
                continue
            if self._cancelled(step if record_step else None):
                if self.rd.resume_at is not None and not self.canary_done and self.rd.previous_version:
                    # Cancelled while its canary baked: the canary never keeps its share.
                    move_alias_back(self.rd, log=self.log)
                self.log(
                    f"Stopped before '{step}': the deployment was cancelled or superseded.",
                    step=step,
                    level=EventLevel.WARNING,
                )
                return RegionStatus.CANCELLED
            started = time.monotonic()
            try:
                message = getattr(self, f"step_{step}")()
            except AwsError as err:
                ms = int((time.monotonic() - started) * 1000)
                detail = f"{err.operation or 'AWS'} failed: {err.code}: {err.message}"
                if err.retryable:
                    self.log(
                        f"{detail} (transient; will retry)",
                        step=step,
                        level=EventLevel.WARNING,
                        duration_ms=ms,
                    )
                    raise RetryLater(err) from err
                self.log(detail, step=step, level=EventLevel.ERROR, duration_ms=ms)
                self.save(error=detail[:2000], error_code=err.code[:100])
                return self.fail_policy(step)
            except StepFailed as err:
                ms = int((time.monotonic() - started) * 1000)
                self.log(str(err), step=step, level=EventLevel.ERROR, duration_ms=ms)
                self.save(error=str(err)[:2000], error_code=err.code[:100])
                return self.fail_policy(step)
            if message:
                self.log(message, step=step, duration_ms=int((time.monotonic() - started) * 1000))
        return RegionStatus.SUCCEEDED

    def _cancelled(self, step: str | None) -> bool:
        """True when the deployment was cancelled (or superseded); else records ``step`` as the
        region's current one, when given, in the same statement."""
        if step is None:
            return Deployment.objects.filter(pk=self.deployment.pk, cancel_requested=True).exists()
        # Written out: the ORM builds this update (a filter across the relation) at many times
        # the cost of running it, once per step of every region.
        q = connection.ops.quote_name
        regions, deployments = q(RegionDeployment._meta.db_table), q(Deployment._meta.db_table)
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {regions} SET step = %s WHERE id = %s AND NOT EXISTS "  # noqa: S608 - tables only
                f"(SELECT 1 FROM {deployments} WHERE id = %s AND cancel_requested)",
                [step, self.rd.pk, self.deployment.pk],
            )
            moved = cursor.rowcount
        if moved:
            self.rd.step = step
        return not moved

    def fail_policy(self, step: str) -> str:
        """A failed region after its alias moved is moved back when the stage's policy says so."""
        moved = self.steps().index(step) > self.steps().index("alias")
        if moved and self.canary_active and self.rd.previous_version:
            # A canary that failed never keeps its share of the traffic, whatever the policy.
            move_alias_back(self.rd, log=self.log)
            return RegionStatus.ROLLED_BACK
        if moved and failure_policy(self.stage) == FailurePolicy.ROLLBACK and self.rd.previous_version:
            if self.deployment.kind == DeploymentKind.ROLLBACK:
                self.log(
                    f"Alias {self.stage.name} stays on version {self.rd.version}: this was a "
                    f"rollback, and moving it back would restore version {self.rd.previous_version}, "
                    "the one being rolled away from.",
                    step=step, level=EventLevel.WARNING,
                )  # fmt: skip
                return RegionStatus.FAILED
            move_alias_back(self.rd, log=self.log)
            return RegionStatus.ROLLED_BACK
        return RegionStatus.FAILED

    def step_gate(self) -> str:
        """A later wave starts only while the regions of the earlier waves are healthy: they have
        served the new release for the bake time, and this is the health gate after it (only a
        later wave's region runs it, see ``applies``)."""
        from regions.endpoints import resolve_endpoint
        from regions.health import ProbeTarget, probe_many, run_async

        earlier = RegionDeployment.objects.filter(
            deployment_id=self.deployment.pk, wave__lt=self.rd.wave, status=RegionStatus.SUCCEEDED
        ).values_list("region_id", flat=True)
        placed = StagePlacement.objects.filter(
            stage=self.stage, placement__app=self.app, placement__region_id__in=list(earlier)
        ).select_related("placement__region")
        urls: dict[str, str] = {}
        for sp in placed:
            sp.stage = self.stage
            base = resolve_endpoint(sp)
            if base:
                urls[sp.placement.region.code] = base.rstrip("/") + self.config["health_path"]
        if not urls:
            return ""
        target = dict(
            expected_status=self.config.get("health_expected_status", 200),
            expected_text=self.config.get("health_expected_text", ""),
        )
        unhealthy: dict[str, str] = {}
        codes = sorted(urls)
        for attempt in range(max(1, settings.DEPLOY_VERIFY_ATTEMPTS)):
            if attempt:
                time.sleep(settings.DEPLOY_VERIFY_INTERVAL)
            results = run_async(
                probe_many(
                    [ProbeTarget(urls[c], **target) for c in codes],
                    timeout=settings.HEALTH_PROBE_TIMEOUT, concurrency=len(codes),
                )
            )  # fmt: skip
            unhealthy = {c: r.error or f"status {r.status_code}" for c, r in zip(codes, results, strict=True)
                         if not r.ok}  # fmt: skip
            codes = sorted(unhealthy)
            if not codes:
                return f"Health gate: the {len(urls)} region(s) of earlier waves are healthy."
        raise StepFailed(
            "Health gate: "
            + "; ".join(f"{code} ({urls[code]}): {why}" for code, why in sorted(unhealthy.items()))
            + f" — an earlier wave is unhealthy, so wave {self.rd.wave + 1} does not start here.",
            code="health_gate_failed",
        )

    def step_artifact(self) -> str:
        from ..artifacts import artifact_path

        artifact = self.release.artifact
        key = artifact.storage_key
        bucket = self.region.bucket
        s3.ensure_bucket(self.code, bucket, role_arn=self.role)
        if s3.object_exists(self.code, bucket, key, role_arn=self.role):
            return f"Artifact {artifact.sha256[:12]} already in s3://{bucket}; not uploaded again."

        def upload():
            s3.upload_file(
                self.code, bucket, key, str(artifact_path(artifact)), role_arn=self.role,
                sha256_hex=artifact.sha256,
            )  # fmt: skip

        try:
            upload()
        except AwsError as err:
            if err.code != "NoSuchBucket":
                raise
            # The bucket this process had seen is gone (deleted behind our back): make it again.
            s3.forget_bucket(self.code, bucket, role_arn=self.role)
            s3.ensure_bucket(self.code, bucket, role_arn=self.role)
            upload()
        return f"Uploaded artifact {artifact.sha256[:12]} ({artifact.size} bytes) to s3://{bucket}/{key}."

    def _existing_version(self):
        return lambda_.find_version(
            self.code, self.function, description_prefix=version_marker(self.release), role_arn=self.role
        )

    def _settle(self, info: lambda_.FunctionInfo) -> None:
        """Wait for a create or update to finish unless Lambda's answer says it already has; the
        settled function's RevisionId is what publishing must find (see step_version)."""
        if info.state == "Pending" or info.last_update_status == "InProgress" or not info.state:
            info = lambda_.wait_until_updated(self.code, self.function, role_arn=self.role)
        self.revision_id = info.revision_id

    def step_function(self) -> str:
        info = lambda_.get_function(self.code, self.function, role_arn=self.role)
        if info is not None:
            existing = self._existing_version()
            if existing is not None:
                return f"Version {existing.version} for this release already published; function untouched."
        self.version_searched = True  # (no function: no version of this release either)
        env = release_env(self.release).get(self.code, {})
        cfg = self.config
        artifact = self.release.artifact
        bucket, key = self.region.bucket, artifact.storage_key
        if info is None:
            created = self._create_function(env=env, bucket=bucket, key=key)
            self.created_function = True
            self._settle(created)
            return f"Created function {self.function} ({cfg['runtime']}, {cfg['memory_mb']} MB)."
        changed = []
        self.revision_id = info.revision_id
        if info.code_sha256 != lambda_code_sha(artifact.sha256):
            self._settle(
                lambda_.update_code(
                    self.code, name=self.function, s3_bucket=bucket, s3_key=key, role_arn=self.role
                )
            )
            changed.append("code")
        wanted = (cfg["runtime"], cfg["handler"], cfg["memory_mb"], cfg["timeout_s"], env)
        have = (info.runtime, info.handler, info.memory_mb, info.timeout_s, info.env)
        if wanted != have:
            self._settle(
                lambda_.update_config(
                    self.code,
                    name=self.function,
                    runtime=cfg["runtime"],
                    handler=cfg["handler"],
                    memory_mb=cfg["memory_mb"],
                    timeout_s=cfg["timeout_s"],
                    env=env,
                    role_arn=self.role,
                )  # fmt: skip
            )
            changed.append(f"configuration ({len(env)} env vars)")
        if not changed:
            return f"Function {self.function} already has this code and configuration."
        return f"Updated function {self.function}: {' and '.join(changed)}."

    def _create_function(self, *, env: dict, bucket: str, key: str) -> lambda_.FunctionInfo:
        """Create the function with the execution role (the setting's, or the one this control
        plane makes). A role this process set up earlier is used without asking IAM again; if
        Lambda cannot assume it (deleted since), it is set up again and creation tried once more."""
        cfg = self.config

        def create(role: str, propagation_s: float) -> lambda_.FunctionInfo:
            return lambda_.create_function(
                self.code, name=self.function, role=role, runtime=cfg["runtime"],
                handler=cfg["handler"], memory_mb=cfg["memory_mb"], timeout_s=cfg["timeout_s"],
                env=env, s3_bucket=bucket, s3_key=key, description=f"{self.app.team.slug}/{self.app.slug}",
                role_arn=self.role, role_propagation_s=propagation_s,
            )  # fmt: skip

        if settings.AWS_LAMBDA_ROLE_ARN:
            return create(settings.AWS_LAMBDA_ROLE_ARN, 40.0)
        known = iam.known_lambda_role(role_arn=self.role)
        if known:
            try:
                return create(known, 0.0)  # set up and assumable when it was cached
            except AwsError as err:
                if err.code != "InvalidParameterValueException" or "role" not in err.message.lower():
                    raise
                iam.forget_lambda_role(role_arn=self.role)
        return create(iam.ensure_lambda_role(role_arn=self.role), 40.0)

    def step_version(self) -> str:
        if self.created_function:
            alias = self.alias_before = None  # a function made moments ago has no alias
        else:
            alias = self.alias_before = lambda_.get_alias(
                self.code, self.function, self.stage.name, role_arn=self.role
            )
        existing = None if self.version_searched else self._existing_version()
        if existing is not None:
            version, note = existing.version, "already published (resumed)"
        else:
            sha = self.release.commit_sha[:12]
            description = (
                f"{version_marker(self.release)}stage={self.stage.name} "
                f"release={self.release.number}" + (f" commit={sha}" if sha else "")
            )[:256]
            version, note = self._publish(description), "published"
        fields = {"version": version}
        if alias is not None and alias.version != version and not self.rd.previous_version:
            fields["previous_version"] = alias.version
        self.save(**fields)
        return f"Version {version} {note}" + (
            f"; the stage alias is on {alias.version}." if alias is not None else "."
        )

    def _publish(self, description: str) -> str:
        """Publish ``$LATEST`` as this run left it. When it changed since (someone or something
        else updated the function: its env could be another stage's), the function step is done
        again and publishing tried once more; a second change fails the region."""

        def publish() -> str:
            return lambda_.publish_version(
                self.code, name=self.function, description=description,
                code_sha256=lambda_code_sha(self.release.artifact.sha256),
                revision_id=self.revision_id, role_arn=self.role,
            )  # fmt: skip

        try:
            return publish()
        except AwsError as err:
            if err.code != "PreconditionFailedException":
                raise
        self.log(
            f"$LATEST of {self.function} changed after this deploy set it (RevisionId "
            f"{self.revision_id or '-'}); setting it again before publishing.",
            step="version", level=EventLevel.WARNING,
        )  # fmt: skip
        self.created_function = self.version_searched = False
        self.log(self.step_function(), step="function")
        return publish()

    def step_api(self) -> str:
        api = apigateway.ensure_lambda_api(
            self.code, name=self.function, function_name=self.function,
            account_id=account_id(self.code, role_arn=self.role), stage=self.stage.name,
            variables={"alias": self.stage.name}, role_arn=self.role,
        )  # fmt: skip
        self.api_id, self.endpoint = api.id, api.endpoint
        AppRegion.objects.filter(app=self.app, region=self.region).exclude(rest_api_id=api.id).update(
            rest_api_id=api.id
        )
        message = (
            f"REST API {self.api_id} stage '{self.stage.name}' → alias {self.stage.name}: {self.endpoint}"
        )
        if self.stage.domain:
            cert = (self.stage.certificate_arns or {}).get(self.code) or acm.find_certificate(
                self.code, self.stage.domain, role_arn=self.role
            )
            if not cert:
                cert = acm.request_certificate(self.code, self.stage.domain, role_arn=self.role)
            self.regional_domain = apigateway.ensure_custom_domain(
                self.code, domain=self.stage.domain, certificate_arn=cert, role_arn=self.role
            )
            apigateway.ensure_base_path_mapping(
                self.code, domain=self.stage.domain, rest_api_id=self.api_id, stage=self.stage.name,
                role_arn=self.role,
            )  # fmt: skip
            message += f"; custom domain {self.stage.domain} → {self.regional_domain[0]}"
        return message

    def step_dns(self) -> str:
        """The health check and latency record (for a stage with a domain and zone: ``applies``)."""
        host = f"{self.api_id}.execute-api.{self.code}.{apigateway._dns_suffix(self.code)}"
        self.health_check_id = route53.ensure_health_check(
            fqdn=host, path=f"/{self.stage.name}{self.config['health_path']}", region=self.code,
            caller_reference=f"cp-{self.app.pk}-{self.stage.pk}-{self.code}",
            search_string=self.config.get("health_expected_text", ""), role_arn=self.role,
        )  # fmt: skip
        target, zone = self.regional_domain or (host, "")
        route53.upsert_latency_record(
            zone_id=self.stage.hosted_zone_id, name=self.stage.domain, region=self.code,
            set_identifier=self.code, target=target, target_zone_id=zone,
            health_check_id=self.health_check_id, role_arn=self.role,
        )  # fmt: skip
        return (
            f"Route 53 latency record {self.stage.domain} ({self.code}) with health check "
            f"{self.health_check_id}."
        )

    def step_alias(self) -> str:
        if self.deployment.kind == DeploymentKind.ROLLBACK:
            return self._rollback_alias()
        version = self.rd.version
        canary = (self.stage.rollout or {}).get("canary")
        current = self.alias_before
        if canary and isinstance(current, lambda_.AliasInfo) and current.version != version:
            # The alias stays on the version it serves and sends the canary's share to the new one;
            # "shift" moves it all after the bake.
            share = canary["percent"] / 100
            resumed = current.weights == {version: share}  # (a parked canary, resumed)
            lambda_.ensure_alias(
                self.code, name=self.function, alias=self.stage.name, version=current.version,
                weights={version: share}, role_arn=self.role, current=current,
            )  # fmt: skip
            self.canary_active = True
            if resumed:
                return ""
            self._permission()
            return (
                f"Canary: {canary['percent']}% of requests to version {version}, the rest on "
                f"{current.version}."
            )
        lambda_.ensure_alias(
            self.code, name=self.function, alias=self.stage.name, version=version, role_arn=self.role,
            current=self.alias_before,
        )  # fmt: skip
        self._permission()
        self._record_live(version)
        previous = self.rd.previous_version
        return f"Alias {self.stage.name} on version {version}" + (f" (was {previous})." if previous else ".")

    # A rollback's alias step in two halves, for run_rollback: the AWS call (no database), then
    # what it means for the region (log, failure), the live version being recorded in between.
    def move_alias_only(self) -> AwsError | None:
        self._move_started = time.monotonic()
        try:
            lambda_.move_alias(
                self.code, name=self.function, alias=self.stage.name, version=self.rd.version,
                role_arn=self.role,
            )  # fmt: skip
        except AwsError as err:
            return err
        return None

    def after_move(self, error: AwsError | None) -> None:
        ms = int((time.monotonic() - self._move_started) * 1000)
        if error is None:
            self.log(self._moved_message(), step="alias", duration_ms=ms)
            return
        detail = f"{error.operation or 'AWS'} failed: {error.code}: {error.message}"
        if error.retryable:
            self.log(f"{detail} (transient; will retry)", step="alias", level=EventLevel.WARNING,
                     duration_ms=ms)  # fmt: skip
            self.status = _requeue(self)
            if self.status == RegionStatus.QUEUED:
                enqueue_regions([self.rd.pk], countdown=2)
            return
        self.log(detail, step="alias", level=EventLevel.ERROR, duration_ms=ms)
        self.save(error=detail[:2000], error_code=error.code[:100])
        self.status = self.fail_policy("alias")

    def _moved_message(self) -> str:
        previous = self.rd.previous_version
        return f"Alias {self.stage.name} moved back to version {self.rd.version}" + (
            f" (was {previous})." if previous else "."
        )

    def _rollback_alias(self) -> str:
        """Move the alias only: the plan checked moments ago that the version exists (if it has
        vanished since, Lambda refuses the update and the region fails), and the invoke
        permission is the alias's own, made when the stage was first deployed."""
        version = self.rd.version
        if not self.rd.previous_version:
            live = (
                StagePlacement.objects.filter(
                    placement__app=self.app, placement__region=self.region, stage=self.stage
                )
                .values_list("version", flat=True)
                .first()
            )
            if live and live != version:
                self.save(previous_version=live)
        lambda_.move_alias(
            self.code, name=self.function, alias=self.stage.name, version=version, role_arn=self.role
        )
        self._record_live(version)
        return self._moved_message()

    def _permission(self) -> None:
        api_id = self.api_id or AppRegion.objects.get(pk=self.placement_id()).rest_api_id
        if not api_id:
            return
        account = account_id(self.code, role_arn=self.role)
        lambda_.ensure_invoke_permission(
            self.code, name=self.function, alias=self.stage.name,
            source_arn=apigateway.source_arn(self.code, account_id=account, rest_api_id=api_id),
            statement_id=f"controlplane-apigateway-{self.stage.name}", role_arn=self.role,
            new_alias=self.alias_before is None and self.created_function,
        )  # fmt: skip

    def _record_live(self, version: str) -> None:
        defaults = {"version": version, "release": self.release}
        if self.endpoint:
            defaults["endpoint_url"] = self.endpoint
        if self.health_check_id:
            defaults["health_check_id"] = self.health_check_id
        # One statement either way: an upsert on (placement, stage).
        row = StagePlacement(placement_id=self.placement_id(), stage=self.stage, **defaults)
        StagePlacement.objects.bulk_create(
            [row], update_conflicts=True, unique_fields=["placement", "stage"], update_fields=list(defaults)
        )
        self.live = row

    def placement_id(self) -> int:
        if self._placement_id is None:
            self._placement_id = (
                AppRegion.objects.filter(app=self.app, region=self.region).values_list("pk", flat=True).get()
            )
        return self._placement_id

    def _health_url(self) -> str:
        """The region's health URL for this stage ("" until the deploy recorded an endpoint)."""
        from regions.endpoints import resolve_endpoint

        sp = self.live
        if sp is None or not sp.endpoint_url:
            sp = StagePlacement.objects.get(placement_id=self.placement_id(), stage=self.stage)
        # What the resolver reads, from the objects this run has loaded already.
        sp.stage = self.stage
        sp.placement = AppRegion(pk=sp.placement_id, app=self.app, region=self.region)
        base = resolve_endpoint(sp)
        return base.rstrip("/") + self.config["health_path"] if base else ""

    def _probe(self, url: str):
        from regions.health import check_url

        return check_url(
            url,
            expected_status=self.config.get("health_expected_status", 200),
            expected_text=self.config.get("health_expected_text", ""),
            timeout=settings.HEALTH_PROBE_TIMEOUT,
        )

    def step_verify(self) -> str:
        if not settings.DEPLOY_VERIFY:
            return "Health verification is turned off (DEPLOY_VERIFY=false)."
        url = self._health_url()
        if not url:
            return "No endpoint to probe yet; health verification skipped."
        attempts = max(1, settings.DEPLOY_VERIFY_ATTEMPTS)
        result = None
        for attempt in range(attempts):
            result = self._probe(url)
            if result.ok:
                return f"Healthy: {url} answered {result.status_code} in {result.latency_ms:.0f} ms."
            if attempt + 1 < attempts:
                time.sleep(settings.DEPLOY_VERIFY_INTERVAL)
        raise StepFailed(
            f"Health check failed after {attempts} tries: {url}: "
            + (result.error or f"status {result.status_code}"),
            code="health_check_failed",
        )

    def step_shift(self) -> str:
        """A canary's end. Its bake first: the region is parked until the bake is over (its worker
        thread is free meanwhile; the health monitor keeps probing the region). Then the endpoint
        is probed again and the monitor's results since the canary started are read: any failure
        fails the region, and the canary is withdrawn. Else every request goes to the new version."""
        canary = self.stage.rollout["canary"]
        bake = timedelta(seconds=int(canary.get("bake_s", 0)))
        now = timezone.now()
        if bake and self.rd.resume_at is None:
            self.save(resume_at=now + bake)
            raise Park(self.rd.resume_at)
        if self.rd.resume_at is not None and now < self.rd.resume_at:
            raise Park(self.rd.resume_at)  # resumed early (a redelivered message)
        problem = self._canary_problem(since=(self.rd.resume_at or now) - bake)
        if problem:
            raise StepFailed(f"Canary failed: {problem}", code="canary_failed")
        version = self.rd.version
        lambda_.ensure_alias(
            self.code, name=self.function, alias=self.stage.name, version=version, role_arn=self.role
        )
        self.canary_active = False
        self.canary_done = True
        self._record_live(version)
        return (
            f"Canary healthy for {int(bake.total_seconds())} s: alias {self.stage.name} on version "
            f"{version} for every request (was {self.rd.previous_version})."
        )

    def _canary_problem(self, *, since) -> str:
        """Why the canary is unhealthy ("" when it is not): a failed probe of the monitor since
        ``since``, or the endpoint failing now."""
        from regions.models import Probe

        failed = (
            Probe.objects.filter(
                stage_placement__placement_id=self.placement_id(), stage_placement__stage=self.stage,
                ok=False, created_at__gte=since,
            ).order_by("created_at").values_list("created_at", "error").first()
        )  # fmt: skip
        if failed:
            return (
                f"the health monitor's probe at {failed[0]:%H:%M:%S} UTC failed ({failed[1] or 'unhealthy'})."
            )
        url = self._health_url() if settings.DEPLOY_VERIFY else ""
        if not url:
            return ""
        for attempt in range(max(1, settings.DEPLOY_VERIFY_ATTEMPTS)):
            if attempt:
                time.sleep(settings.DEPLOY_VERIFY_INTERVAL)
            result = self._probe(url)
            if not result.ok:
                return f"{url}: " + (result.error or f"status {result.status_code}")
        return ""

    def step_prune(self) -> str:
        try:
            deleted = prune_versions(app=self.app, region=self.region)
        except AwsError as err:
            self.log(f"Pruning old versions failed ({err.code}); will try on the next deploy.",
                     step="prune", level=EventLevel.WARNING)  # fmt: skip
            return ""
        return f"Pruned {len(deleted)} old version(s): {', '.join(deleted)}." if deleted else ""


def move_alias_back(rd: RegionDeployment, *, log: Callable[..., None]) -> None:
    """Failure policy: point the stage alias back at the version it had before this deployment."""
    deployment = rd.deployment
    app, stage, region = deployment.app, deployment.stage, rd.region
    lambda_.ensure_alias(
        region.code, name=app.function_name, alias=stage.name, version=rd.previous_version,
        role_arn=region.role_arn,
    )  # fmt: skip
    placement = AppRegion.objects.get(app=app, region=region)
    previous = (
        RegionDeployment.objects.filter(
            deployment__stage=stage, region=region, version=rd.previous_version,
            status=RegionStatus.SUCCEEDED,
        ).select_related("deployment__release").order_by("-id").first()
    )  # fmt: skip
    StagePlacement.objects.filter(placement=placement, stage=stage).update(
        version=rd.previous_version, release=previous.deployment.release if previous else None
    )
    RegionDeployment.objects.filter(pk=rd.pk).update(status=RegionStatus.ROLLED_BACK)
    log(f"Rolled back: alias {stage.name} moved back to version {rd.previous_version}.",
        step="rollback", level=EventLevel.WARNING)  # fmt: skip


def versions_to_keep(*, app, region) -> set[str]:
    """The versions of ``app`` in ``region`` that must stay, decided from the database (Lambda
    may hand a release an existing version, so a version's description does not say which
    releases use it) and from the live aliases: for each stage, the newest ``VERSION_RETENTION``
    versions it ran and every version of its newest ``VERSION_RETENTION`` releases; what each
    stage serves; what a deploy in progress published; and whatever an alias (or its canary
    weights) points at, stage alias or not."""
    keep_n = settings.VERSION_RETENTION
    rds = RegionDeployment.objects.filter(deployment__app=app, region=region).exclude(version="")
    keep: set[str] = set()
    for stage in app.stages.all():
        newest: list[str] = []
        ran = rds.filter(
            deployment__stage=stage, status__in=[RegionStatus.SUCCEEDED, RegionStatus.RUNNING]
        ).order_by("-deployment_id")
        for version in ran.values_list("version", flat=True).iterator():
            if version not in newest:
                newest.append(version)
            if len(newest) >= keep_n:
                break
        keep.update(newest)
        releases = list(
            Release.objects.filter(stage=stage).order_by("-number").values_list("pk", flat=True)[:keep_n]
        )
        keep.update(rds.filter(deployment__release_id__in=releases).values_list("version", flat=True))
    keep.update(
        StagePlacement.objects.filter(placement__app=app, placement__region=region)
        .exclude(version="")
        .values_list("version", flat=True)
    )
    keep.update(
        rds.filter(status__in=[RegionStatus.QUEUED, RegionStatus.RUNNING]).values_list("version", flat=True)
    )
    for alias in lambda_.list_aliases(region.code, app.function_name, role_arn=region.role_arn):
        keep.add(alias.version)
        keep.update(alias.weights)
    return keep


def prune_versions(*, app, region) -> list[str]:
    """Delete the versions this control plane published that no one needs any more (see
    ``versions_to_keep``); returns them. A version Lambda refuses to delete (an alias made
    meanwhile) is left for the next pass, and the others are still pruned."""
    keep = versions_to_keep(app=app, region=region)
    deleted = []
    for info in lambda_.list_versions(region.code, app.function_name, role_arn=region.role_arn):
        if not info.description.startswith("cp-release-") or info.version in keep:
            continue
        try:
            lambda_.delete_version(region.code, app.function_name, info.version, role_arn=region.role_arn)
        except AwsError as err:
            if err.code not in ("ResourceConflictException", "ConflictException"):
                raise
            logger.info("version %s of %s in %s not pruned: %s", info.version, app.function_name,
                        region.code, err.message)  # fmt: skip
            continue
        deleted.append(info.version)
    return deleted


# --- Driving a deployment -------------------------------------------------------------------


def finish_region(rd: RegionDeployment, status: str) -> None:
    RegionDeployment.objects.filter(pk=rd.pk, status=RegionStatus.RUNNING).update(
        status=status, finished_at=timezone.now(), heartbeat_at=timezone.now()
    )
    scm_status.region_finished(rd.pk)  # git host hook: a region's end
    if status == RegionStatus.SUCCEEDED:
        log_event(
            deployment_id=rd.deployment_id, region_id=rd.region_id, step="done",
            message=f"{rd.region.code}: succeeded.",
        )  # fmt: skip


def run_region(region_deployment_id: int) -> str | None:
    """Claim and run one region; returns its final status, or None when not claimed.
    Raises RetryLater for a transient AWS error (the region is queued again first)."""
    rd = claim(region_deployment_id)
    if rd is None:
        return None
    return run_claimed(rd)


class Heartbeat:
    """Keeps a running region's ``heartbeat_at`` fresh from a background thread while its steps
    run (one step may outlast REGION_HEARTBEAT_TIMEOUT), so no other worker takes it over while
    this one is alive."""

    def __init__(self, region_deployment_ids: int | list[int]) -> None:
        ids = region_deployment_ids
        self.pks = [ids] if isinstance(ids, int) else list(ids)
        self.interval = max(0.2, settings.REGION_HEARTBEAT_TIMEOUT / 3)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{self.pks[0]}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        try:
            while not self._stopped.wait(self.interval):
                RegionDeployment.objects.filter(pk__in=self.pks, status=RegionStatus.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
        except Exception:  # noqa: BLE001 - a missed beat is retried; the reaper is the backstop
            logger.warning("heartbeat of region deployments %s stopped", self.pks, exc_info=True)
        finally:
            connection.close()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=30)


def run_claimed(rd: RegionDeployment) -> str | None:
    """Run a region this worker has claimed, to its end (or until it must be retried)."""
    run = RegionRun(rd)
    heartbeat = Heartbeat(rd.pk)
    try:
        status = run.run()
    except Park as park:
        heartbeat.stop()  # (before the heartbeat is set to the end of the bake)
        parked = RegionDeployment.objects.filter(pk=rd.pk, status=RegionStatus.RUNNING).update(
            heartbeat_at=park.until
        )
        if parked:
            wait = max(0.0, (park.until - timezone.now()).total_seconds())
            run.log(
                f"Canary baking until {park.until:%H:%M:%S} UTC; the region is held meanwhile, "
                "and no worker waits for it.",
                step="shift",
            )
            enqueue_regions([rd.pk], countdown=wait)
        return None
    except RetryLater:
        # Queued again only while still ours and not cancelled meanwhile; a cancel that came
        # during the step stops the region here instead of leaving it queued.
        status = _requeue(run)
        if status == RegionStatus.QUEUED:
            raise
        if status == TAKEN:
            return None
    except Exception as exc:  # noqa: BLE001 - a bug must fail the region, not leave it running
        logger.exception("region deployment %s crashed", rd.pk)
        run.log(f"Internal error: {type(exc).__name__}: {exc}", level=EventLevel.ERROR, step=rd.step)
        RegionDeployment.objects.filter(pk=rd.pk).update(error=f"{type(exc).__name__}: {exc}"[:2000])
        status = RegionStatus.FAILED
    finally:
        heartbeat.stop()
    finish_region(rd, status)
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
        enqueue_regions([waiting.pk], countdown=bake_remaining(waiting))
    advance(deployment_id=rd.deployment_id)


def bake_remaining(rd: RegionDeployment) -> float:
    """Seconds until a later wave's region may start: its stage's bake time after the earlier
    waves of its deployment finished (0 for the first wave, a rollback, or when already due)."""
    deployment = rd.deployment
    bake = float((deployment.stage.rollout or {}).get("bake_s", 0) or 0)
    if not bake or deployment.kind == DeploymentKind.ROLLBACK:
        return 0.0
    earlier = RegionDeployment.objects.filter(deployment_id=rd.deployment_id, wave__lt=rd.wave)
    finished = [f for f in earlier.values_list("finished_at", flat=True) if f is not None]
    if not finished:
        return 0.0
    due = max(finished) + timedelta(seconds=bake)
    return max(0.0, (due - timezone.now()).total_seconds())


def enqueue_regions(ids: list[int], countdown: float = 0) -> None:
    from workers.tasks import deploy_region

    def send():
        for pk in ids:
            try:
                deploy_region.apply_async((pk,), countdown=countdown)
            except Exception:  # noqa: BLE001 - broker down: the reaper re-sends queued work
                logger.warning("broker unavailable; region deployment %s waits for the reaper", pk)

    transaction.on_commit(send)


def start(deployment_id: int) -> None:
    """Begin a queued deployment: build it if it has no release yet, then start its first wave."""
    deployment = Deployment.objects.select_related("app", "stage").get(pk=deployment_id)
    if deployment.status not in (DeploymentStatus.QUEUED, DeploymentStatus.RUNNING):
        return
    if deployment.cancel_requested:
        RegionDeployment.objects.filter(deployment=deployment, status=RegionStatus.QUEUED).update(
            status=RegionStatus.CANCELLED, finished_at=timezone.now()
        )
        finish_if_done(deployment_id=deployment_id)
        return
    if deployment.release_id is None:
        if not build_release(deployment):
            return
    advance(deployment_id=deployment_id)


def build_release(deployment: Deployment) -> bool:
    """Build ``deployment.ref`` and attach a release; False (deployment failed) when it fails."""
    from controlplane.errors import DomainError

    from ..builds import build_artifact
    from .deploy import create_release

    claimed = Deployment.objects.filter(
        pk=deployment.pk, status=DeploymentStatus.QUEUED, started_at__isnull=True
    ).update(status=DeploymentStatus.RUNNING, started_at=timezone.now())
    if claimed:
        notify_started(deployment.pk)
    else:
        if not reclaim_stale_build(deployment.pk):
            return False  # another worker is building it

    def emit(level: str, line: str) -> None:
        log_event(deployment_id=deployment.pk, level=level, step="build", message=line)

    try:
        artifact = build_artifact(app=deployment.app, sha=deployment.ref, emit=emit)
        release = create_release(
            app=deployment.app, stage=deployment.stage, artifact=artifact,
            commit={"sha": deployment.commit_sha, "branch": deployment.commit_branch,
                    "message": deployment.commit_message, "author": deployment.commit_author,
                    "url": deployment.commit_url},
            created_by=deployment.triggered_by,
        )  # fmt: skip
    except DomainError as err:
        fail_unstarted(deployment, f"Build failed: {err.detail}")
        return False
    Deployment.objects.filter(pk=deployment.pk).update(release=release)
    return True


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


def reclaim_stale_build(deployment_id: int) -> bool:
    """Take over the build of a deployment whose builder died (compare-and-set on started_at, so
    of two workers only one restarts it); True when this worker should build it again."""
    deployment = Deployment.objects.get(pk=deployment_id)
    if not build_is_stale(deployment):
        return False
    claimed = Deployment.objects.filter(
        pk=deployment.pk,
        status=DeploymentStatus.RUNNING,
        release__isnull=True,
        started_at=deployment.started_at,
    ).update(started_at=timezone.now())
    if claimed:
        log_event(
            deployment_id=deployment.pk, level=EventLevel.WARNING, step=REBUILD,
            message=f"The build went silent for more than {settings.BUILD_TIMEOUT} s (its worker "
            "stopped); building again.",
        )  # fmt: skip
    return bool(claimed)


def fail_unstarted(deployment: Deployment, message: str) -> None:
    log_event(deployment_id=deployment.pk, level=EventLevel.ERROR, step="build", message=message)
    RegionDeployment.objects.filter(deployment=deployment, status=RegionStatus.QUEUED).update(
        status=RegionStatus.SKIPPED, finished_at=timezone.now()
    )
    Deployment.objects.filter(pk=deployment.pk).update(error=message[:5000])
    finish_if_done(deployment_id=deployment.pk)


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
        if deployment.release_id is None:
            return
        if any(r.status == RegionStatus.RUNNING or (r.status == RegionStatus.QUEUED and r.step)
               for r in rds):  # fmt: skip
            return  # the current wave is still going
        failed = [r for r in rds if r.status in (RegionStatus.FAILED, RegionStatus.ROLLED_BACK)]
        pending = [r for r in rds if r.status == RegionStatus.QUEUED]
        if failed and pending:
            RegionDeployment.objects.filter(pk__in=[r.pk for r in pending]).update(
                status=RegionStatus.SKIPPED, finished_at=timezone.now()
            )
            pending = []
        if (
            failed
            and failure_policy(deployment.stage) == FailurePolicy.ROLLBACK
            and deployment.kind != DeploymentKind.ROLLBACK
        ):
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
                countdown = float((deployment.stage.rollout or {}).get("bake_s", 0))
    if to_start:
        if countdown:
            log_event(deployment_id=deployment_id, step="wave",
                      message=f"Next wave in {countdown:.0f} s (bake time).")  # fmt: skip
        enqueue_regions(to_start, countdown=countdown)
        return
    if rollback:
        log_event(
            deployment_id=deployment_id, level=EventLevel.WARNING, step="rollback",
            message=f"A region failed and the stage's policy is to roll back: moving "
            f"{len(rollback)} region(s) back.",
        )  # fmt: skip

        def back(rd: RegionDeployment) -> None:
            def log(message, **kw):
                log_event(deployment_id=deployment_id, region_id=rd.region_id,
                          message=f"{rd.region.code}: {message}", **kw)  # fmt: skip

            try:
                move_alias_back(rd, log=log)
            except AwsError as err:
                log(f"Rollback failed: {err.code}: {err.message}", step="rollback", level=EventLevel.ERROR)

        with ThreadPoolExecutor(max_workers=min(16, len(rollback))) as pool:
            list(pool.map(back, rollback))
    finish_if_done(deployment_id=deployment_id)


def fail_after_retries(region_deployment_id: int, error: AwsError) -> None:
    """A transient error that outlasted every retry fails the region."""
    rd = RegionDeployment.objects.select_related("region", "deployment").get(pk=region_deployment_id)
    detail = f"{error.operation or 'AWS'} kept failing: {error.code}: {error.message}"
    changed = RegionDeployment.objects.filter(
        pk=rd.pk, status__in=[RegionStatus.QUEUED, RegionStatus.RUNNING]
    ).update(status=RegionStatus.FAILED, finished_at=timezone.now(), error=detail[:2000],
             error_code=error.code[:100])  # fmt: skip
    if changed:
        log_event(deployment_id=rd.deployment_id, region_id=rd.region_id, level=EventLevel.ERROR,
                  step=rd.step, message=f"{rd.region.code}: {detail}; giving up.")  # fmt: skip
        after_region(rd)
