"""Rollback, promotion and config-only deploys: new deployments of existing artifacts.

A rollback moves each region's stage alias back to the Lambda version the target release
published there: no build, no upload, no publish. Versions are immutable snapshots of code,
configuration and env, so the rolled-back regions run exactly what the target release ran.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.db import transaction
from django.utils import timezone

from controlplane.errors import Conflict, DomainError, NotFound
from regions.aws import lambda_
from regions.aws.session import AwsError
from regions.models import StagePlacement

from ..choices import DeploymentKind, DeploymentStatus, RegionStatus
from ..models import App, Deployment, RegionDeployment, Release, Stage
from .deploy import (
    IDEMPOTENCY_WINDOW,
    IdempotencyKeyReused,
    check_pinned,
    create_deployment,
    create_release,
    current_release,
)
from .events import log_event

LIVE_STATUSES = (DeploymentStatus.SUCCEEDED, DeploymentStatus.PARTIALLY_FAILED)


class RollbackTargetMissing(DomainError):
    code = "rollback_target_missing"
    status_code = 409


class NothingToRollBackTo(DomainError):
    code = "nothing_to_roll_back_to"
    status_code = 409


class NothingToPromote(DomainError):
    code = "nothing_to_promote"
    status_code = 409


class NothingDeployed(DomainError):
    code = "nothing_deployed"
    status_code = 409


class StageDiverged(Conflict):
    code = "stage_diverged"


def live_releases(*, stage: Stage) -> dict[str, Release]:
    """``{region code: release}`` the stage's alias runs in each enabled region of its app, as the
    deploy engine recorded it (regions never deployed are left out)."""
    rows = (
        StagePlacement.objects.filter(stage=stage, placement__region__enabled=True, release__isnull=False)
        .select_related("release__artifact", "placement__region")
        .order_by("placement__region__code")
    )
    return {sp.placement.region.code: sp.release for sp in rows}


def intended_release(*, stage: Stage) -> Release | None:
    """The release the stage is meant to run: the one every region runs when they agree (after
    a rollback of every region, its target), else the release of the stage's newest live
    deployment that is not a rollback, so one region rolled back does not speak for the rest.
    None when the stage never ran a release."""
    live = live_releases(stage=stage)
    if live and len({r.pk for r in live.values()}) == 1:
        return next(iter(live.values()))
    newest = (
        Deployment.objects.filter(stage=stage, status__in=LIVE_STATUSES, release__isnull=False)
        .exclude(kind=DeploymentKind.ROLLBACK)
        .order_by("-finished_at", "-id")
        .select_related("release__artifact")
        .first()
    )
    return newest.release if newest is not None else current_release(stage=stage)


def _commit_of(release: Release) -> dict:
    return {
        "sha": release.commit_sha, "branch": release.commit_branch, "message": release.commit_message,
        "author": release.commit_author, "url": release.commit_url,
    }  # fmt: skip


def previous_release(*, stage: Stage) -> Release | None:
    """The release the stage ran before its current one (a rollback's default target)."""
    current = current_release(stage=stage)
    if current is None:
        return None
    earlier = (
        Deployment.objects.filter(stage=stage, status__in=LIVE_STATUSES, release__isnull=False)
        .exclude(release=current)
        .order_by("-finished_at", "-id")
        .select_related("release")
        .first()
    )
    return earlier.release if earlier else None


def resolve_target(*, app: App, stage: Stage, to: str | int | None) -> Release:
    """The release ``to`` names: ``None`` (the previous one), a deployment id, ``"deployment:ID"``
    or ``"release:ID"``. Raises NotFound / NothingToRollBackTo."""
    if to in (None, ""):
        release = previous_release(stage=stage)
        if release is None:
            raise NothingToRollBackTo(f"Stage '{stage.name}' has no earlier release to roll back to.")
        return release
    kind, _, raw = str(to).rpartition(":")
    try:
        pk = int(raw)
    except ValueError:
        raise NotFound(f"'{to}' is not a deployment or release id.")
    if kind in ("", "deployment"):
        deployment = Deployment.objects.filter(app=app, pk=pk, release__isnull=False).first()
        if deployment is not None:
            if deployment.stage_id != stage.pk:
                raise NotFound(f"Deployment {pk} is not a deployment of stage '{stage.name}'.")
            return deployment.release
        if kind == "deployment":
            raise NotFound(f"No deployment {pk} with a release in this app.")
    release = Release.objects.filter(app=app, stage=stage, pk=pk).first()
    if release is None:
        raise NotFound(f"No release or deployment {pk} of stage '{stage.name}'.")
    return release


def versions_of(*, release: Release, regions) -> dict[str, str]:
    """``{region code: Lambda version}`` the release published, per the deployment log."""
    rows = RegionDeployment.objects.filter(
        deployment__release=release,
        region__in=regions,
        status__in=[RegionStatus.SUCCEEDED, RegionStatus.ROLLED_BACK],
    ).exclude(version="")
    return {code: version for code, version in rows.values_list("region__code", "version")}


def rollback(
    *, app: App, stage: Stage, principal, to: str | int | None = None, regions: list[str] | None = None
) -> Deployment:
    """Plan, then act: every target region must still have the target release's Lambda version
    (checked in AWS, in parallel) or nothing is touched (RollbackTargetMissing, 409 naming them).
    Then a ``rollback`` deployment moves the aliases in parallel, and the stage is pinned."""
    target = resolve_target(app=app, stage=stage, to=to)
    placements = list(app.placements.select_related("region").filter(region__enabled=True))
    if regions:
        unknown = sorted(set(regions) - {p.region.code for p in placements})
        if unknown:
            raise NotFound(f"This app is not in region(s): {', '.join(unknown)}.")
        placements = [p for p in placements if p.region.code in set(regions)]
    versions = versions_of(release=target, regions=[p.region for p in placements])

    def exists(placement) -> tuple[str, str | None]:
        code = placement.region.code
        version = versions.get(code)
        if not version:
            return code, "never deployed there"
        try:
            info = lambda_.get_version(code, app.function_name, version, role_arn=placement.region.role_arn)
        except AwsError as err:
            return code, f"could not check ({err.code})"
        return code, None if info is not None else f"version {version} was pruned"

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(placements)))) as pool:
        problems = {code: why for code, why in pool.map(exists, placements) if why}
    if problems:
        raise RollbackTargetMissing(
            f"Release #{target.number} cannot be restored in "
            + "; ".join(f"{code}: {why}" for code, why in sorted(problems.items()))
            + ". Nothing was changed.",
            extra={"regions": sorted(problems)},
        )

    with transaction.atomic():
        deployment = create_deployment(
            app=app, stage=stage, principal=principal, release=target, kind=DeploymentKind.ROLLBACK,
            force=True, regions=[p.region.code for p in placements],
        )  # fmt: skip
        for rd in deployment.regions.select_related("region"):
            RegionDeployment.objects.filter(pk=rd.pk).update(version=versions[rd.region.code])
        Stage.objects.filter(pk=stage.pk).update(
            pinned=True,
            pinned_at=timezone.now(),
            pinned_reason=f"Rolled back to release #{target.number} by {principal.label}",
        )
        log_event(
            deployment_id=deployment.pk,
            step="pin",
            message=f"Stage '{stage.name}' is now pinned: git-push deploys are recorded but not "
            "started until it is unpinned.",
        )
    return deployment


def promote(*, app: App, from_stage: Stage, to_stage: Stage, principal, force: bool = False) -> Deployment:
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
        return create_deployment(
            app=app, stage=to_stage, principal=principal, release=release, kind=DeploymentKind.PROMOTE,
            force=force,
        )  # fmt: skip


def deploy_config(
    *, app: App, stage: Stage, principal, force: bool = False, idempotency_key: str = ""
) -> Deployment:
    """Ship the artifact of the release the stage is meant to run (``intended_release``, recorded
    as the new release's ``source_release`` and in the log) with the app's current config and env
    (kind ``config``), in every region. Env changes touch no running region until this (or any
    deploy) runs. The same ``idempotency_key`` within 24 h returns the first deployment.

    Raises NothingDeployed (409) when the stage never ran a release, StagePinned,
    IdempotencyKeyReused (the key went with another request)."""
    if idempotency_key:
        earlier = Deployment.objects.filter(
            app=app, idempotency_key=idempotency_key, created_at__gte=timezone.now() - IDEMPOTENCY_WINDOW
        ).first()
        if earlier is not None:
            if earlier.kind != DeploymentKind.CONFIG or earlier.stage_id != stage.pk:
                raise IdempotencyKeyReused(
                    "This Idempotency-Key was used for a different request in the last 24 hours."
                )
            return earlier
    source = intended_release(stage=stage)
    if source is None:
        raise NothingDeployed(
            f"Stage '{stage.name}' has never been deployed. A config deployment re-ships the "
            "stage's artifact with the current env and config: deploy an artifact or a git ref first."
        )
    with transaction.atomic():
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


# --- Diffs ------------------------------------------------------------------------------------


def repo_web_url(repo_url: str) -> tuple[str, str]:
    """``(https web URL, host kind)`` of a git remote: kind is "github", "gitlab" or "" (unknown)."""
    url = repo_url.strip()
    if url.startswith("git@") and ":" in url:
        host, _, path = url[4:].partition(":")
        url = f"https://{host}/{path}"
    elif url.startswith("ssh://"):
        rest = url[6:].split("@", 1)[-1]
        host, _, path = rest.partition("/")
        url = f"https://{host.split(':')[0]}/{path}"
    url = url.removesuffix("/").removesuffix(".git")
    if not url.startswith(("https://", "http://")):
        return "", ""
    host = url.split("/")[2].lower()
    kind = "github" if "github" in host else "gitlab" if "gitlab" in host else ""
    return url, kind


def compare_url(repo_url: str, base: str, head: str) -> str:
    """A link to the commit range on GitHub or GitLab; "" for other hosts or missing shas."""
    web, kind = repo_web_url(repo_url)
    if not (web and base and head):
        return ""
    if kind == "github":
        return f"{web}/compare/{base}...{head}"
    if kind == "gitlab":
        return f"{web}/-/compare/{base}...{head}"
    return ""


def diff_releases(*, release: Release, against: Release) -> dict:
    """What changed from ``against`` to ``release``: the commit range, env keys added / changed /
    removed (per region, keys only: values are never shown), config fields and the artifact."""
    from .deploy import release_env

    new_env, old_env = release_env(release), release_env(against)
    added: set[str] = set()
    removed: set[str] = set()
    changed: set[str] = set()
    by_region: dict[str, dict[str, list[str]]] = {}
    for code in sorted(set(new_env) | set(old_env)):
        new, old = new_env.get(code, {}), old_env.get(code, {})
        region_diff = {
            "added": sorted(set(new) - set(old)),
            "removed": sorted(set(old) - set(new)),
            "changed": sorted(k for k in set(new) & set(old) if new[k] != old[k]),
        }
        added.update(region_diff["added"])
        removed.update(region_diff["removed"])
        changed.update(region_diff["changed"])
        if any(region_diff.values()):
            by_region[code] = region_diff
    config = {
        key: {"from": against.config.get(key), "to": release.config.get(key)}
        for key in sorted(set(release.config) | set(against.config))
        if release.config.get(key) != against.config.get(key)
    }
    return {
        "release": release.pk,
        "against": against.pk,
        "commits": {
            "from": against.commit_sha,
            "to": release.commit_sha,
            "compare_url": compare_url(release.app.repo_url, against.commit_sha, release.commit_sha),
        },
        "artifact": {
            "changed": release.artifact_id != against.artifact_id,
            "from": against.artifact.sha256,
            "to": release.artifact.sha256,
        },
        "env": {
            "added": sorted(added),
            "changed": sorted(changed),
            "removed": sorted(removed),
            "by_region": by_region,
        },
        "config": config,
    }
