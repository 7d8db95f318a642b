"""Deployments: creating them (an artifact, a git ref to build, or an existing release),
promoting a stage's release to another stage, re-shipping a stage with its current config,
superseding and cancelling.

The database is the source of truth; tasks only make progress on rows. Every function that
starts work hands it to the engine's dispatch (after commit), and the reaper re-sends anything
a lost message or a dead worker left behind.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from controlplane import audit
from controlplane.errors import Conflict, DomainError

from .. import scm_status
from ..choices import (
    ACTIVE_DEPLOYMENT_STATUSES,
    DeploymentKind,
    DeploymentStatus,
    EventLevel,
    RegionStatus,
)
from ..engine import dispatch, states
from ..engine.releases import commit_fields, create_release
from ..events import log_event
from ..models import App, Artifact, Deployment, RegionDeployment, Release, Stage
from ..rollout import rollout_of
from ..selectors import current_release
from .releases import intended_release, live_releases
from .teardown import check_not_torn_down

IDEMPOTENCY_WINDOW = timedelta(hours=24)


class StagePinned(DomainError):
    code = "stage_pinned"
    status_code = 409


class NoRegions(DomainError):
    code = "no_regions"
    status_code = 400


class NothingToDeploy(DomainError):
    code = "nothing_to_deploy"
    status_code = 400


class IdempotencyKeyReused(DomainError):
    code = "idempotency_key_reused"
    status_code = 422


class NothingToPromote(DomainError):
    code = "nothing_to_promote"
    status_code = 409


class NothingDeployed(DomainError):
    code = "nothing_deployed"
    status_code = 409


class StageDiverged(Conflict):
    code = "stage_diverged"


# --- Creating deployments -------------------------------------------------------------------


def _fingerprint(**parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def check_pinned(*, stage: Stage, force: bool, trigger: str) -> bool:
    """True when a git push to a pinned stage must be recorded but not started.
    Raises StagePinned for any other deploy to a pinned stage without ``force``."""
    if not stage.pinned or force:
        return False
    if trigger.startswith("webhook"):
        return True
    raise StagePinned(
        f"Stage '{stage.name}' is pinned"
        + (f" ({stage.pinned_reason})" if stage.pinned_reason else "")
        + ". Unpin it, or pass force=true to deploy anyway."
    )


def lock_stage(stage: Stage) -> None:
    """Hold ``stage``'s row lock until the transaction ends: deployments of one stage are
    created one at a time (a no-op on SQLite, whose write transactions are serialized)."""
    Stage.objects.select_for_update().filter(pk=stage.pk).values_list("pk", flat=True).first()


def _answered_before(
    *, app: App, stage: Stage, idempotency_key: str, fingerprint: str, ref: str, trigger: str,
    kind: str, pinned_push: bool,
) -> Deployment | None:  # fmt: skip
    """The deployment an earlier request already made for this one (its ``reused`` set), or
    None: the same ``Idempotency-Key`` within 24 h (IdempotencyKeyReused when it went with
    another request), or a git push of the commit a deployment of the stage is already building
    and shipping (a push delivered twice, or pushed to two remotes). Call it holding the
    stage's lock."""
    if idempotency_key:
        existing = Deployment.objects.filter(app=app, idempotency_key=idempotency_key).first()
        if existing is not None:
            if existing.created_at >= timezone.now() - IDEMPOTENCY_WINDOW:
                if existing.request_fingerprint and existing.request_fingerprint != fingerprint:
                    raise IdempotencyKeyReused(
                        "This Idempotency-Key was used for a different request in the last 24 hours."
                    )
                existing.reused = True
                return existing
            # An expired key may be used again.
            Deployment.objects.filter(pk=existing.pk).update(idempotency_key="")
    if ref and trigger.startswith("webhook") and kind == DeploymentKind.DEPLOY and not pinned_push:
        same = (
            Deployment.objects.filter(
                stage=stage,
                kind=DeploymentKind.DEPLOY,
                ref=ref,
                status__in=ACTIVE_DEPLOYMENT_STATUSES,
                cancel_requested=False,
                triggered_by__startswith="webhook",
            )
            .order_by("-pk")
            .first()
        )
        if same is not None:
            same.reused = True
            return same
    return None


def create_deployment(
    *,
    app: App,
    stage: Stage,
    principal,
    artifact: Artifact | None = None,
    ref: str = "",
    commit: dict | None = None,
    kind: str = DeploymentKind.DEPLOY,
    force: bool = False,
    idempotency_key: str = "",
    trigger: str = "",
    compare_url: str = "",
    commit_count: int | None = None,
    release: Release | None = None,
    regions: list[str] | None = None,
) -> Deployment:
    """Record a deployment of ``stage`` and queue it; returns it (status ``queued``).

    Either ``artifact`` (a new release is made now), ``ref`` (the worker builds that commit first)
    or ``release`` (an existing release, for rollbacks and promotions) says what to ship.
    Raises StagePinned (409) for a pinned stage unless ``force``; a git push to a pinned stage is
    recorded as a cancelled deployment whose log says why. Raises EnvTooLarge, NoRegions,
    NothingToDeploy. Older queued deployments of the stage become ``superseded``; a running one
    is asked to stop before its next step.
    """
    commit = dict(commit or {})
    if ref and not commit.get("sha"):
        commit["sha"] = ref
    trigger = trigger or principal.label
    if artifact is None and not ref and release is None:
        raise NothingToDeploy("Give an artifact id or a git ref to build.")
    check_not_torn_down(stage)
    if artifact is not None and artifact.app_id != app.pk:
        raise NothingToDeploy("That artifact belongs to another app.")
    if ref and not app.repo_url:
        raise NothingToDeploy("This app has no repo_url to build a git ref from.")

    fingerprint = _fingerprint(
        stage=stage.pk, artifact=getattr(artifact, "pk", None), ref=ref, commit=commit, kind=kind
    )
    placements = list(
        app.placements.select_related("region").filter(region__enabled=True).order_by("region__code")
    )
    if regions is not None:
        placements = [p for p in placements if p.region.code in set(regions)]
    if not placements:
        raise NoRegions("This app has no enabled regions to deploy to.")

    pinned_push = check_pinned(stage=stage, force=force, trigger=trigger)
    born, region_status = states.born(recorded_only=pinned_push)
    try:
        # The release and the deployment are one transaction, taken under the stage's lock: of
        # concurrent identical requests one makes them, the others find its deployment once they
        # hold the lock. (SQLite's write transactions begin IMMEDIATE, so they queue the same way.)
        with transaction.atomic():
            lock_stage(stage)
            earlier = _answered_before(
                app=app, stage=stage, idempotency_key=idempotency_key, fingerprint=fingerprint,
                ref=ref, trigger=trigger, kind=kind, pinned_push=pinned_push,
            )  # fmt: skip
            if earlier is not None:
                return earlier
            if release is None and artifact is not None:
                release = create_release(
                    app=app, stage=stage, artifact=artifact, commit=commit, created_by=principal.label
                )
            if release is not None:
                commit = {
                    "sha": release.commit_sha,
                    "branch": release.commit_branch,
                    "message": release.commit_message,
                    "author": release.commit_author,
                    "url": release.commit_url,
                    **{k: v for k, v in commit.items() if v},
                }
            deployment = Deployment.objects.create(
                app=app,
                stage=stage,
                release=release,
                previous_release=current_release(stage=stage),
                kind=kind,
                ref=ref,
                **commit_fields(commit),
                commit_count=commit_count,
                compare_url=compare_url[:500],
                triggered_by=trigger[:200],
                user=principal.user if getattr(principal, "user", None) is not None else None,
                force=force,
                idempotency_key=idempotency_key[:255],
                request_fingerprint=fingerprint,
                **born,
            )
            codes = [p.region.code for p in placements]
            # A rollback is instant: every region at once, whatever the stage's waves say.
            waves = (
                dict.fromkeys(codes, 0)
                if kind == DeploymentKind.ROLLBACK
                else rollout_of(stage).wave_of(codes)
            )
            RegionDeployment.objects.bulk_create(
                RegionDeployment(
                    deployment=deployment,
                    region=p.region,
                    wave=waves[p.region.code],
                    status=region_status,
                )
                for p in placements
            )
    except IntegrityError:
        # Two requests with one Idempotency-Key raced past the lock (a database without row
        # locks); the release went with the rolled-back transaction and the first answer stands.
        existing = Deployment.objects.filter(app=app, idempotency_key=idempotency_key).first()
        if idempotency_key and existing is not None:
            existing.reused = True
            return existing
        raise
    deployment.reused = False

    what = _describe(deployment)
    if pinned_push:
        log_event(
            deployment_id=deployment.pk,
            level=EventLevel.WARNING,
            step="queue",
            message=f"Stage '{stage.name}' is pinned"
            + (f" ({stage.pinned_reason})" if stage.pinned_reason else "")
            + f": {what} was recorded but not started. Unpin the stage to resume auto-deploys.",
        )
        return deployment

    log_event(
        deployment_id=deployment.pk,
        step="queue",
        message=f"{kind.capitalize()} of {what} to {stage.name} queued by {trigger} "
        f"for {len(placements)} region(s): {', '.join(p.region.code for p in placements)}.",
    )
    _supersede_older(deployment)
    scm_status.deployment_changed(deployment.pk, "queued")  # git host hook: created
    if kind == DeploymentKind.ROLLBACK and deployment.release_id:
        # Nothing to build and one wave: one task moves every region's alias at once.
        dispatch.rollback(deployment.pk)
    else:
        dispatch.start(deployment.pk)
    return deployment


def _describe(deployment: Deployment) -> str:
    sha = deployment.commit_sha[:7]
    first_line = (deployment.commit_message or "").strip().splitlines()[0:1]
    if sha:
        return f"commit {sha}" + (f" ({first_line[0][:80]})" if first_line else "")
    if deployment.release_id:
        return f"release #{deployment.release.number}"
    return "a new release"


def _supersede_older(deployment: Deployment) -> None:
    """The newest deployment of a stage wins: queued older ones are superseded, running ones are
    asked to stop before their next step."""
    older = Deployment.objects.filter(
        stage_id=deployment.stage_id, status__in=ACTIVE_DEPLOYMENT_STATUSES, pk__lt=deployment.pk
    )
    for old in older:
        with transaction.atomic():
            if old.status == DeploymentStatus.QUEUED:
                if states.supersede_queued(old.pk):
                    states.cancel_queued(Q(deployment=old))
                    log_event(
                        deployment_id=old.pk,
                        level=EventLevel.WARNING,
                        step="superseded",
                        message=f"Superseded by deployment {deployment.pk} before it started.",
                    )
                    continue
            Deployment.objects.filter(pk=old.pk).update(cancel_requested=True)
            stopped = _cancel_unstarted_regions(old)
            log_event(
                deployment_id=old.pk,
                level=EventLevel.WARNING,
                step="superseded",
                message=f"Superseded by deployment {deployment.pk}: "
                + (f"{stopped} region(s) that had not started are cancelled; " if stopped else "")
                + "running regions finish their current step and stop.",
            )
        states.finish_if_done(deployment_id=old.pk)


def _cancel_unstarted_regions(deployment: Deployment) -> int:
    """Cancel the regions no worker holds (queued, or waiting to be retried); returns how many.
    Running regions see ``cancel_requested`` before their next step; the last one to stop
    finishes the deployment. A region parked while its canary bakes is resumed at once, so its
    canary is withdrawn now rather than when the bake would have ended."""
    parked = list(
        RegionDeployment.objects.filter(
            deployment=deployment, status=RegionStatus.RUNNING, resume_at__isnull=False
        ).values_list("pk", flat=True)
    )
    if parked:
        dispatch.regions(parked)
    return states.cancel_queued(Q(deployment=deployment))


def cancel_deployment(*, deployment: Deployment, principal) -> Deployment:
    """Stop regions that have not started; running ones stop before their next step.

    The flag is saved before anything is signalled. Raises Conflict when already finished.
    """
    if deployment.status not in ACTIVE_DEPLOYMENT_STATUSES:
        raise Conflict(f"Deployment {deployment.pk} already finished ({deployment.status}).")
    Deployment.objects.filter(pk=deployment.pk).update(cancel_requested=True)
    _cancel_unstarted_regions(deployment)
    log_event(
        deployment_id=deployment.pk,
        level=EventLevel.WARNING,
        step="cancel",
        message=f"Cancelled by {principal.label}: queued regions will not start.",
    )
    states.finish_if_done(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    return deployment


def _commit_of(release: Release) -> dict:
    return {
        "sha": release.commit_sha, "branch": release.commit_branch, "message": release.commit_message,
        "author": release.commit_author, "url": release.commit_url,
    }  # fmt: skip


def promote(
    *, app: App, from_stage: Stage, to_stage: Stage, principal, force: bool = False, request=None
) -> Deployment:
    """Ship the release running in ``from_stage`` to ``to_stage``: the same artifact (already in
    each region's bucket, so not uploaded again), with ``to_stage``'s config and env.

    The source is the release every region of ``from_stage`` runs. When its regions run different
    releases (one was rolled back, or failed), raises StageDiverged (409) naming them, unless
    ``force``: then the release ``from_stage`` is meant to run (``intended_release``) goes, and
    a pinned ``to_stage`` is deployed too. Raises NothingToPromote, StagePinned."""
    if from_stage.pk == to_stage.pk:
        raise Conflict("Promote from one stage to another, not to itself.")
    live = live_releases(stage=from_stage)
    if len({r.pk for r in live.values()}) > 1 and not force:
        raise StageDiverged(
            f"Stage '{from_stage.name}' runs different releases in different regions: "
            + "; ".join(f"{code}: #{release.number}" for code, release in live.items())
            + ". Roll back or redeploy it so every region agrees, or pass force=true to promote "
            "the release it is meant to run.",
            extra={"regions": {code: release.number for code, release in live.items()}},
        )
    source = next(iter(live.values())) if live and not force else intended_release(stage=from_stage)
    if source is None:
        raise NothingToPromote(f"Stage '{from_stage.name}' has no successful release to promote.")
    commit = _commit_of(source)
    with transaction.atomic():
        check_pinned(stage=to_stage, force=force, trigger=principal.label)
        release = create_release(
            app=app, stage=to_stage, artifact=source.artifact, commit=commit,
            created_by=principal.label, source_release=source,
        )  # fmt: skip
        deployment = create_deployment(
            app=app, stage=to_stage, principal=principal, release=release, kind=DeploymentKind.PROMOTE,
            force=force,
        )  # fmt: skip
        audit.record(
            team=app.team,
            principal=principal,
            action="deployment.promote",
            obj=deployment,
            changes={
                "from_stage": from_stage.name,
                "from_release": source.number,
                "to_stage": to_stage.name,
                "to_release": release.number,
                "force": force,
            },
            request=request,
        )
        return deployment


def deploy_config(
    *, app: App, stage: Stage, principal, force: bool = False, idempotency_key: str = ""
) -> Deployment:
    """Ship the artifact of the release the stage is meant to run (``intended_release``, recorded
    as the new release's ``source_release`` and in the log) with the app's current config and env
    (kind ``config``), in every region. Env changes touch no running region until this (or any
    deploy) runs. The same ``idempotency_key`` within 24 h returns the first deployment.

    Raises NothingDeployed (409) when the stage never ran a release, StagePinned,
    IdempotencyKeyReused (the key went with another request)."""
    with transaction.atomic():
        # Under the stage's lock, so concurrent requests with one key make one release between them.
        lock_stage(stage)
        if idempotency_key:
            earlier = Deployment.objects.filter(
                app=app,
                idempotency_key=idempotency_key,
                created_at__gte=timezone.now() - IDEMPOTENCY_WINDOW,
            ).first()
            if earlier is not None:
                if earlier.kind != DeploymentKind.CONFIG or earlier.stage_id != stage.pk:
                    raise IdempotencyKeyReused(
                        "This Idempotency-Key was used for a different request in the last 24 hours."
                    )
                earlier.reused = True
                return earlier
        source = intended_release(stage=stage)
        if source is None:
            raise NothingDeployed(
                f"Stage '{stage.name}' has never been deployed. A config deployment re-ships the "
                "stage's artifact with the current env and config: deploy an artifact or a git ref "
                "first."
            )
        check_pinned(stage=stage, force=force, trigger=principal.label)
        release = create_release(
            app=app, stage=stage, artifact=source.artifact, commit=_commit_of(source),
            created_by=principal.label, source_release=source,
        )  # fmt: skip
        # No commit here: the request's fingerprint must not depend on what the stage runs.
        deployment = create_deployment(
            app=app, stage=stage, principal=principal, release=release, kind=DeploymentKind.CONFIG,
            force=force, idempotency_key=idempotency_key,
        )  # fmt: skip
        if deployment.release_id != release.pk:
            # A concurrent request with the same key won: its deployment is the answer, and the
            # release made for this one is not kept.
            transaction.set_rollback(True)
            return deployment
        log_event(
            deployment_id=deployment.pk,
            step="queue",
            message=f"Ships the artifact of release #{source.number} "
            f"({source.artifact.sha256[:12]}, commit {source.commit_sha[:7] or 'none'}) with the current "
            f"env and config as release #{release.number}.",
        )
        return deployment
