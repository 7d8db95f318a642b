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

from ..choices import DeploymentKind, DeploymentStatus, RegionStatus
from ..models import App, Deployment, RegionDeployment, Release, Stage
from .deploy import check_pinned, create_deployment, create_release, current_release
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
    each region's bucket, so not uploaded again), with ``to_stage``'s config and env."""
    if from_stage.pk == to_stage.pk:
        raise Conflict("Promote from one stage to another, not to itself.")
    source = current_release(stage=from_stage)
    if source is None:
        raise NothingToPromote(f"Stage '{from_stage.name}' has no successful release to promote.")
    commit = {
        "sha": source.commit_sha, "branch": source.commit_branch, "message": source.commit_message,
        "author": source.commit_author, "url": source.commit_url,
    }  # fmt: skip
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


def deploy_config(*, app: App, stage: Stage, principal, force: bool = False) -> Deployment:
    """Ship the stage's current artifact with the app's current config and env (kind ``config``).
    Env changes touch no running region until this (or any deploy) runs."""
    current = current_release(stage=stage)
    if current is None:
        raise NothingToRollBackTo(f"Stage '{stage.name}' has no release yet; deploy an artifact first.")
    commit = {
        "sha": current.commit_sha, "branch": current.commit_branch, "message": current.commit_message,
        "author": current.commit_author, "url": current.commit_url,
    }  # fmt: skip
    with transaction.atomic():
        check_pinned(stage=stage, force=force, trigger=principal.label)
        release = create_release(
            app=app, stage=stage, artifact=current.artifact, commit=commit, created_by=principal.label
        )
        return create_deployment(
            app=app, stage=stage, principal=principal, release=release, kind=DeploymentKind.CONFIG,
            force=force,
        )  # fmt: skip


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
