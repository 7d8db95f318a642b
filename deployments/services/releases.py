"""Rollback, promotion and config-only deploys: new deployments of existing artifacts.

A rollback moves each region's stage alias back to the Lambda version the target release
published there: no build, no upload, no publish. Versions are immutable snapshots of code,
configuration and env, so the rolled-back regions run exactly what the target release ran.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import audit
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


class InvalidTarget(DomainError):
    code = "invalid_target"
    status_code = 400


class AmbiguousTarget(DomainError):
    code = "ambiguous_target"
    status_code = 400


class AwsUnavailable(DomainError):
    """AWS could not be asked (throttling, 5xx, network): nothing was changed; try again."""

    code = "aws_unavailable"
    status_code = 503


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


TARGET_FORMS = "'release:ID', 'deployment:ID' or a bare ID"
MAX_ID_DIGITS = 18  # ids are 64-bit; a longer number names nothing (and databases refuse it)


def resolve_target(*, app: App, stage: Stage, to: str | int | None) -> Release:
    """The release of ``stage`` that ``to`` names: ``None`` (the previous one), ``"release:ID"``,
    ``"deployment:ID"`` (that deployment's release) or a bare ID, which may be either: only the
    stage's own deployments and releases count, and when the stage has both a deployment and a
    release with that id and they name different releases, raises AmbiguousTarget (400) rather
    than guess. Raises InvalidTarget (400), NotFound, NothingToRollBackTo."""
    if to in (None, ""):
        release = previous_release(stage=stage)
        if release is None:
            raise NothingToRollBackTo(f"Stage '{stage.name}' has no earlier release to roll back to.")
        return release
    text = str(to).strip()
    kind, _, raw = text.rpartition(":")
    kind, raw = kind.strip().lower(), raw.strip()
    if kind not in ("", "deployment", "release") or not (raw.isascii() and raw.isdigit()):
        raise InvalidTarget(
            f"'{text[:40]}' is not a rollback target: use {TARGET_FORMS}.",
            fields={"to": [f"Use {TARGET_FORMS}."]},
        )
    if len(raw) > MAX_ID_DIGITS:
        raise NotFound(f"Stage '{stage.name}' has no deployment or release {raw[:40]}.")
    pk = int(raw)
    deployment = release = None
    if kind in ("", "deployment"):
        deployment = (
            Deployment.objects.filter(app=app, stage=stage, pk=pk, release__isnull=False)
            .select_related("release")
            .first()
        )
    if kind in ("", "release"):
        release = Release.objects.filter(app=app, stage=stage, pk=pk).first()
    if kind == "deployment" and deployment is None:
        raise NotFound(f"Stage '{stage.name}' has no deployment {pk} with a release.")
    if kind == "release" and release is None:
        raise NotFound(f"Stage '{stage.name}' has no release {pk}.")
    if deployment is not None and release is not None and deployment.release_id != release.pk:
        raise AmbiguousTarget(
            f"{pk} is both deployment {pk} of stage '{stage.name}' (release #{deployment.release.number}) "
            f"and its release {pk} (#{release.number}): say 'deployment:{pk}' or 'release:{pk}'.",
            fields={"to": [f"Ambiguous: use 'deployment:{pk}' or 'release:{pk}'."]},
        )
    if deployment is not None:
        return deployment.release
    if release is not None:
        return release
    raise NotFound(f"Stage '{stage.name}' has no deployment or release {pk}.")


def versions_of(*, release: Release, regions) -> dict[str, str]:
    """``{region code: Lambda version}`` the release published, per the deployment log."""
    rows = RegionDeployment.objects.filter(
        deployment__release=release,
        region__in=regions,
        status__in=[RegionStatus.SUCCEEDED, RegionStatus.ROLLED_BACK],
    ).exclude(version="")
    return {code: version for code, version in rows.values_list("region__code", "version")}


def rollback(
    *,
    app: App,
    stage: Stage,
    principal,
    to: str | int | None = None,
    regions: list[str] | None = None,
    request=None,
) -> Deployment:
    """Plan, then act: every target region must still have the target release's Lambda version
    (checked in AWS, in parallel) or nothing is touched (RollbackTargetMissing, 409 naming them;
    AwsUnavailable, 503, when AWS could not answer for a temporary reason). Then a ``rollback``
    deployment moves the aliases in parallel, the stage is pinned and the audit log says who
    rolled back to what. Raises what ``resolve_target`` raises, NotFound for unknown regions."""
    target = resolve_target(app=app, stage=stage, to=to)
    placements = list(app.placements.select_related("region").filter(region__enabled=True))
    if regions:
        unknown = sorted(set(regions) - {p.region.code for p in placements})
        if unknown:
            raise NotFound(f"This app is not in region(s): {', '.join(unknown)}.")
        placements = [p for p in placements if p.region.code in set(regions)]
    versions = versions_of(release=target, regions=[p.region for p in placements])

    function = app.function_name  # read here: the checks run in threads, on other connections
    unavailable: dict[str, str] = {}

    def exists(placement) -> tuple[str, str | None]:
        code = placement.region.code
        version = versions.get(code)
        if not version:
            return code, "never deployed there"
        try:
            info = lambda_.get_version(code, function, version, role_arn=placement.region.role_arn)
        except AwsError as err:
            if err.retryable:
                unavailable[code] = err.code
                return code, None
            return code, f"could not check ({err.code})"
        return code, None if info is not None else f"version {version} was pruned"

    with ThreadPoolExecutor(max_workers=min(16, max(1, len(placements)))) as pool:
        problems = {code: why for code, why in pool.map(exists, placements) if why}
    if unavailable and not problems:
        # Nothing is known to be missing; AWS just could not say yet.
        raise AwsUnavailable(
            "AWS did not answer for a temporary reason while checking the rollback target in "
            + ", ".join(f"{code} ({why})" for code, why in sorted(unavailable.items()))
            + ". Nothing was changed; try again in a moment.",
            extra={"regions": sorted(unavailable), "retryable": True},
        )
    problems.update({code: f"could not check ({why})" for code, why in unavailable.items()})
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
        rds = list(deployment.regions.select_related("region"))
        for rd in rds:
            rd.version = versions[rd.region.code]
        RegionDeployment.objects.bulk_update(rds, ["version"])  # one statement
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
        audit.record(
            team=app.team,
            principal=principal,
            action="deployment.rollback",
            obj=deployment,
            changes={
                "stage": stage.name,
                "to_release": target.number,
                "regions": sorted(p.region.code for p in placements),
                "pinned": True,
            },
            request=request,
        )
    return deployment


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


COMMIT_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")


def _gitlab_hosts() -> set[str]:
    """Self-hosted GitLab hosts named in ``settings.GITLAB_HOSTS`` (lowercased, without port)."""
    hosts = getattr(settings, "GITLAB_HOSTS", None) or []
    if isinstance(hosts, str):
        hosts = hosts.split(",")
    return {str(h).strip().lower().split(":")[0] for h in hosts if str(h).strip()}


def repo_web_url(repo_url: str) -> tuple[str, str]:
    """``(web URL, host kind)`` of a git remote, never with the user or password a clone URL may
    carry: kind is "github" (``github`` in the host, an ``owner/repo`` path), "gitlab" (``gitlab``
    in the host or the host in ``settings.GITLAB_HOSTS``, a ``group/.../project`` path) or ""
    (unknown: no link). ``("", "")`` for anything that is not an http(s) or ssh remote."""
    url = (repo_url or "").strip()
    scp = re.match(r"^(?:[^@/:]+@)?(?P<host>[^:/@]+):(?P<path>(?!//)[^:]+)$", url)
    try:
        if "://" not in url and scp:
            scheme, host, port, path = "https", scp.group("host"), None, scp.group("path")
        else:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https", "ssh", "git"):
                return "", ""
            host, path = parts.hostname or "", parts.path
            # A web port only means something for http(s); ssh's port is not the web server's.
            port = parts.port if parts.scheme in ("http", "https") else None
            scheme = parts.scheme if parts.scheme in ("http", "https") else "https"
    except ValueError:
        return "", ""
    host = host.lower()
    if not host or not re.match(r"^[a-z0-9.-]+$", host):
        return "", ""
    path = path.strip("/").removesuffix(".git").strip("/")
    segments = [p for p in path.split("/") if p]
    if len(segments) < 2 or not all(re.match(r"^[A-Za-z0-9_.~-]+$", p) for p in segments):
        return "", ""
    web = f"{scheme}://{host}{f':{port}' if port else ''}/{'/'.join(segments)}"
    if "github" in host and len(segments) == 2:
        return web, "github"
    if "gitlab" in host or host in _gitlab_hosts():
        return web, "gitlab"
    return web, ""


def compare_url(repo_url: str, base: str, head: str) -> str:
    """A link to the commit range on GitHub or GitLab; "" for other hosts or missing shas."""
    web, kind = repo_web_url(repo_url)
    if not (web and COMMIT_SHA.match(base or "") and COMMIT_SHA.match(head or "")):
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
