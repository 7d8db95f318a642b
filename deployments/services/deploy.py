"""Deployments: creating them, their releases, superseding, cancelling, and deciding their status.

The database is the source of truth; tasks only make progress on rows. Every function that
starts work enqueues it after commit, and the reaper re-enqueues anything a lost message or a
dead worker left behind.
"""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone

from controlplane.errors import Conflict, DomainError

from .. import scm_status
from ..choices import (
    ACTIVE_DEPLOYMENT_STATUSES,
    DeploymentKind,
    DeploymentStatus,
    EventLevel,
    FailurePolicy,
    RegionStatus,
)
from ..env import resolve_env
from ..models import App, Artifact, Deployment, RegionDeployment, Release, Stage
from .events import log_event

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


# --- Releases -------------------------------------------------------------------------------


def release_config(app: App) -> dict:
    """The function configuration a release freezes."""
    return {
        "runtime": app.runtime,
        "handler": app.handler,
        "memory_mb": app.memory_mb,
        "timeout_s": app.timeout_s,
        "health_path": app.health_path,
        "health_expected_status": app.health_expected_status,
        "health_expected_text": app.health_expected_text,
    }


def release_env(release: Release) -> dict[str, dict[str, str]]:
    """``{region_code: {KEY: value}}`` as the release froze it (plaintext: never log or return it)."""
    return json.loads(release.env_snapshot or "{}")


def create_release(
    *,
    app: App,
    stage: Stage,
    artifact: Artifact,
    commit: dict | None = None,
    created_by: str = "",
    source_release: Release | None = None,
    config: dict | None = None,
) -> Release:
    """Freeze artifact + config + the effective env of every region + the commit into a release.

    Raises EnvTooLarge when a region's env is over Lambda's 4 KB limit.
    """
    commit = commit or {}
    regions = [p.region for p in app.placements.select_related("region")]
    env = {r.code: resolve_env(app=app, stage=stage, region=r) for r in regions}
    secret_keys = sorted(set(app.env_vars.filter(secret=True).values_list("key", flat=True)))
    with transaction.atomic():
        Stage.objects.select_for_update().filter(pk=stage.pk).first()
        number = (Release.objects.filter(stage=stage).aggregate(n=Max("number"))["n"] or 0) + 1
        return Release.objects.create(
            app=app,
            stage=stage,
            number=number,
            artifact=artifact,
            config=config or release_config(app),
            env_snapshot=json.dumps(env, sort_keys=True),
            env_secret_keys=secret_keys,
            commit_sha=commit.get("sha", "")[:64],
            commit_branch=commit.get("branch", "")[:255],
            commit_message=commit.get("message", ""),
            commit_author=commit.get("author", "")[:255],
            commit_url=commit.get("url", "")[:500],
            source_release=source_release,
            created_by=created_by[:200],
        )


def current_release(*, stage: Stage) -> Release | None:
    """The release the stage last moved to successfully (any region), or None."""
    deployment = (
        Deployment.objects.filter(
            stage=stage,
            release__isnull=False,
            status__in=[DeploymentStatus.SUCCEEDED, DeploymentStatus.PARTIALLY_FAILED],
        )
        .order_by("-finished_at", "-id")
        .select_related("release")
        .first()
    )
    return deployment.release if deployment else None


# --- Creating deployments -------------------------------------------------------------------


def _waves(app: App, stage: Stage, codes: list[str]) -> dict[str, int]:
    """Wave number per region code from the stage's rollout policy (default: one wave)."""
    waves = (stage.rollout or {}).get("waves") or []
    assigned: dict[str, int] = {}
    rest_wave = None
    for index, wave in enumerate(waves):
        for code in wave:
            if code == "*":
                rest_wave = index if rest_wave is None else rest_wave
            elif code in codes and code not in assigned:
                assigned[code] = index
    fallback = rest_wave if rest_wave is not None else (len(waves) if waves else 0)
    return {code: assigned.get(code, fallback) for code in codes}


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
    if artifact is not None and artifact.app_id != app.pk:
        raise NothingToDeploy("That artifact belongs to another app.")
    if ref and not app.repo_url:
        raise NothingToDeploy("This app has no repo_url to build a git ref from.")

    fingerprint = _fingerprint(
        stage=stage.pk, artifact=getattr(artifact, "pk", None), ref=ref, commit=commit, kind=kind
    )
    if idempotency_key:
        existing = Deployment.objects.filter(app=app, idempotency_key=idempotency_key).first()
        if existing is not None:
            if existing.created_at >= timezone.now() - IDEMPOTENCY_WINDOW:
                if existing.request_fingerprint and existing.request_fingerprint != fingerprint:
                    raise IdempotencyKeyReused(
                        "This Idempotency-Key was used for a different request in the last 24 hours."
                    )
                return existing
            # An expired key may be used again.
            Deployment.objects.filter(pk=existing.pk).update(idempotency_key="")

    placements = list(
        app.placements.select_related("region").filter(region__enabled=True).order_by("region__code")
    )
    if regions is not None:
        placements = [p for p in placements if p.region.code in set(regions)]
    if not placements:
        raise NoRegions("This app has no enabled regions to deploy to.")

    pinned_push = check_pinned(stage=stage, force=force, trigger=trigger)

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

    try:
        with transaction.atomic():
            deployment = Deployment.objects.create(
                app=app,
                stage=stage,
                release=release,
                previous_release=current_release(stage=stage),
                kind=kind,
                ref=ref,
                commit_sha=commit.get("sha", "")[:64],
                commit_branch=commit.get("branch", "")[:255],
                commit_message=commit.get("message", ""),
                commit_author=commit.get("author", "")[:255],
                commit_url=commit.get("url", "")[:500],
                commit_count=commit_count,
                compare_url=compare_url[:500],
                triggered_by=trigger[:200],
                user=principal.user if getattr(principal, "user", None) is not None else None,
                force=force,
                idempotency_key=idempotency_key[:255],
                request_fingerprint=fingerprint,
                status=DeploymentStatus.CANCELLED if pinned_push else DeploymentStatus.QUEUED,
                finished_at=timezone.now() if pinned_push else None,
            )
            codes = [p.region.code for p in placements]
            # A rollback is instant: every region at once, whatever the stage's waves say.
            waves = dict.fromkeys(codes, 0) if kind == DeploymentKind.ROLLBACK else _waves(app, stage, codes)
            RegionDeployment.objects.bulk_create(
                RegionDeployment(
                    deployment=deployment,
                    region=p.region,
                    wave=waves[p.region.code],
                    status=RegionStatus.CANCELLED if pinned_push else RegionStatus.QUEUED,
                )
                for p in placements
            )
    except IntegrityError:
        # Two requests with one Idempotency-Key raced; the first one's answer stands.
        existing = Deployment.objects.filter(app=app, idempotency_key=idempotency_key).first()
        if idempotency_key and existing is not None:
            return existing
        raise

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
        transaction.on_commit(lambda: _enqueue_start(deployment.pk, rollback=True))
    else:
        transaction.on_commit(lambda: _enqueue_start(deployment.pk))
    return deployment


def _describe(deployment: Deployment) -> str:
    sha = deployment.commit_sha[:7]
    first_line = (deployment.commit_message or "").strip().splitlines()[0:1]
    if sha:
        return f"commit {sha}" + (f" ({first_line[0][:80]})" if first_line else "")
    if deployment.release_id:
        return f"release #{deployment.release.number}"
    return "a new release"


def _enqueue_start(deployment_id: int, *, rollback: bool = False) -> None:
    from workers.tasks import rollback_regions, start_deployment

    try:
        (rollback_regions if rollback else start_deployment).delay(deployment_id)
    except Exception:  # noqa: BLE001 - broker down: the row is queued; the reaper picks it up
        import logging

        logging.getLogger("controlplane.deployments").warning(
            "broker unavailable; deployment %s stays queued for the reaper", deployment_id
        )


def _supersede_older(deployment: Deployment) -> None:
    """The newest deployment of a stage wins: queued older ones are superseded, running ones are
    asked to stop before their next step."""
    older = Deployment.objects.filter(
        stage_id=deployment.stage_id, status__in=ACTIVE_DEPLOYMENT_STATUSES, pk__lt=deployment.pk
    )
    for old in older:
        with transaction.atomic():
            if old.status == DeploymentStatus.QUEUED:
                changed = Deployment.objects.filter(pk=old.pk, status=DeploymentStatus.QUEUED).update(
                    status=DeploymentStatus.SUPERSEDED, cancel_requested=True, finished_at=timezone.now()
                )
                if changed:
                    RegionDeployment.objects.filter(deployment=old, status=RegionStatus.QUEUED).update(
                        status=RegionStatus.CANCELLED, finished_at=timezone.now()
                    )
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
        finish_if_done(deployment_id=old.pk)


def _cancel_unstarted_regions(deployment: Deployment) -> int:
    """Cancel the regions no worker holds (queued, or waiting to be retried); returns how many.
    Running regions see ``cancel_requested`` before their next step; the last one to stop
    finishes the deployment. A region parked while its canary bakes is resumed at once, so its
    canary is withdrawn now rather than when the bake would have ended."""
    from .region_job import enqueue_regions

    parked = list(
        RegionDeployment.objects.filter(
            deployment=deployment, status=RegionStatus.RUNNING, resume_at__isnull=False
        ).values_list("pk", flat=True)
    )
    if parked:
        enqueue_regions(parked)
    return RegionDeployment.objects.filter(deployment=deployment, status=RegionStatus.QUEUED).update(
        status=RegionStatus.CANCELLED, finished_at=timezone.now()
    )


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
    finish_if_done(deployment_id=deployment.pk)
    deployment.refresh_from_db()
    return deployment


# --- Status -------------------------------------------------------------------------------


def failure_policy(stage: Stage) -> str:
    return (stage.rollout or {}).get("on_failure", FailurePolicy.LEAVE)


def deployment_status_from_regions(statuses: list[str], *, cancelled: bool, superseded: bool) -> str:
    """A finished deployment's status, following from its regions'."""
    succeeded = statuses.count(RegionStatus.SUCCEEDED)
    failed = statuses.count(RegionStatus.FAILED)
    rolled_back = statuses.count(RegionStatus.ROLLED_BACK)
    if superseded and succeeded < len(statuses):
        return DeploymentStatus.SUPERSEDED
    if cancelled and succeeded < len(statuses) and not failed:
        return DeploymentStatus.CANCELLED
    if succeeded == len(statuses):
        return DeploymentStatus.SUCCEEDED
    if rolled_back and not succeeded:
        return DeploymentStatus.ROLLED_BACK
    if succeeded:
        return DeploymentStatus.PARTIALLY_FAILED
    return DeploymentStatus.FAILED


def finish_if_done(*, deployment_id: int) -> str | None:
    """Set the deployment's final status once every region is terminal; returns it (or None)."""
    from controlplane.notify import notify_deployment

    with transaction.atomic():
        deployment = Deployment.objects.select_for_update().get(pk=deployment_id)
        statuses = list(deployment.regions.values_list("status", flat=True))
        if any(s in (RegionStatus.QUEUED, RegionStatus.RUNNING) for s in statuses):
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
        Deployment.objects.filter(pk=deployment.pk).update(status=status, finished_at=timezone.now())
    counts = {s: statuses.count(s) for s in sorted(set(statuses))}
    log_event(
        deployment_id=deployment_id,
        level=EventLevel.INFO if status == DeploymentStatus.SUCCEEDED else EventLevel.WARNING,
        step="finish",
        message=f"Deployment {status.replace('_', ' ')}: "
        + ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in counts.items())
        + ".",
    )
    if status == DeploymentStatus.ROLLED_BACK or (
        deployment.kind == DeploymentKind.ROLLBACK and status == DeploymentStatus.SUCCEEDED
    ):
        event = "rollback"  # the policy moved regions back, or a rollback did what it was asked
    elif status == DeploymentStatus.SUCCEEDED:
        event = "deploy_succeeded"
    elif status in (DeploymentStatus.FAILED, DeploymentStatus.PARTIALLY_FAILED):
        event = "deploy_failed"
    else:
        event = ""
    if event:
        notify_deployment(deployment_id, event)
    scm_status.deployment_changed(deployment_id, "finished")  # git host hook: terminal
    return status
