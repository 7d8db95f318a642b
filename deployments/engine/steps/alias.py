"""Every move of a stage alias: to the new version (all at once, or a weighted canary), to a
rollback's version, and back to the version it had before this deployment (the failure
policy, a failed or cancelled canary)."""

from __future__ import annotations

import time

from regions.aws import apigateway, lambda_
from regions.aws.session import AwsError, account_id
from regions.models import AppRegion, StagePlacement

from ...choices import EventLevel, RegionStatus
from ...models import RegionDeployment
from ..context import RegionRun


def applies(run: RegionRun) -> bool:
    return True


def run(run: RegionRun) -> str:
    if run.is_rollback:
        return _to_rollback_version(run)
    version = run.rd.version
    canary = run.rollout.canary
    current = run.alias_before
    if canary and isinstance(current, lambda_.AliasInfo) and current.version != version:
        # The alias stays on the version it serves and sends the canary's share to the new one;
        # "shift" moves it all after the bake.
        resumed = current.weights == {version: canary.share}  # (a parked canary, resumed)
        lambda_.ensure_alias(
            run.code, name=run.function, alias=run.stage.name, version=current.version,
            weights={version: canary.share}, role_arn=run.role, current=current,
        )  # fmt: skip
        run.canary_active = True
        if resumed:
            return ""
        _permission(run)
        return f"Canary: {canary.percent}% of requests to version {version}, the rest on {current.version}."
    lambda_.ensure_alias(
        run.code, name=run.function, alias=run.stage.name, version=version, role_arn=run.role,
        current=run.alias_before,
    )  # fmt: skip
    _permission(run)
    run.record_live(version)
    previous = run.rd.previous_version
    return f"Alias {run.stage.name} on version {version}" + (f" (was {previous})." if previous else ".")


def moved_message(run: RegionRun) -> str:
    previous = run.rd.previous_version
    return f"Alias {run.stage.name} moved back to version {run.rd.version}" + (
        f" (was {previous})." if previous else "."
    )


def move_only(run: RegionRun) -> AwsError | None:
    """A rollback's alias move alone (no database): the AWS call, or the error it raised."""
    run.move_started = time.monotonic()
    try:
        lambda_.move_alias(
            run.code, name=run.function, alias=run.stage.name, version=run.rd.version, role_arn=run.role
        )
    except AwsError as err:
        return err
    run.move_ms = int((time.monotonic() - run.move_started) * 1000)
    return None


def _to_rollback_version(run: RegionRun) -> str:
    """Move the alias only: the plan checked moments ago that the version exists (if it has
    vanished since, Lambda refuses the update and the region fails), and the invoke
    permission is the alias's own, made when the stage was first deployed."""
    version = run.rd.version
    if not run.rd.previous_version:
        live = (
            StagePlacement.objects.filter(
                placement__app=run.app, placement__region=run.region, stage=run.stage
            )
            .values_list("version", flat=True)
            .first()
        )
        if live and live != version:
            run.save(previous_version=live)
    error = move_only(run)
    if error is not None:
        raise error
    run.record_live(version)
    return moved_message(run)


def _permission(run: RegionRun) -> None:
    api_id = run.api_id or AppRegion.objects.get(pk=run.placement_id()).rest_api_id
    if not api_id:
        return
    account = account_id(run.code, role_arn=run.role)
    lambda_.ensure_invoke_permission(
        run.code, name=run.function, alias=run.stage.name,
        source_arn=apigateway.source_arn(run.code, account_id=account, rest_api_id=api_id),
        statement_id=f"controlplane-apigateway-{run.stage.name}", role_arn=run.role,
        new_alias=run.alias_before is None and run.created_function,
    )  # fmt: skip


def move_back(rd: RegionDeployment, *, log) -> None:
    """Point the stage alias back at the version it had before this deployment, and record that
    the stage serves it again. The region's status is its caller's to set (see ``states``)."""
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
    log(
        f"Rolled back: alias {stage.name} moved back to version {rd.previous_version}.",
        step="rollback",
        level=EventLevel.WARNING,
    )
