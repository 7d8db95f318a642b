"""Rollback, planned before it acts: the target release (the previous one by default), a check
that every target region still has its Lambda version, then a ``rollback`` deployment that moves
the aliases back (the engine's fast path, :mod:`deployments.engine.rollback`) and pins the stage.

Versions are immutable snapshots of code, configuration and env, so the rolled-back regions run
exactly what the target release ran: no build, no upload, no publish.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from django.db import transaction
from django.utils import timezone

from controlplane import audit
from controlplane.errors import DomainError, NotFound
from regions.aws import lambda_
from regions.aws.session import AwsError

from ..choices import DeploymentKind, RegionStatus
from ..events import log_event
from ..models import App, Deployment, RegionDeployment, Release, Stage
from ..selectors import LIVE_STATUSES, current_release
from .deployments import create_deployment


class RollbackTargetMissing(DomainError):
    code = "rollback_target_missing"
    status_code = 409


class NothingToRollBackTo(DomainError):
    code = "nothing_to_roll_back_to"
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
