"""Old versions deleted beyond the retention count, never one a stage alias, a kept release or
a deploy in progress needs (skipped for a function this run created: its one version is new)."""

from __future__ import annotations

import logging

from django.conf import settings

from regions.aws import lambda_
from regions.aws.session import AwsError
from regions.models import StagePlacement

from ...choices import EventLevel, RegionStatus
from ...models import RegionDeployment, Release
from ..context import RegionRun

logger = logging.getLogger("controlplane.deployments")


def applies(run: RegionRun) -> bool:
    return not run.created_function  # its one version is the one just published


def run(run: RegionRun) -> str:
    try:
        deleted = prune_versions(app=run.app, region=run.region)
    except AwsError as err:
        run.log(
            f"Pruning old versions failed ({err.code}); will try on the next deploy.",
            step="prune",
            level=EventLevel.WARNING,
        )
        return ""
    return f"Pruned {len(deleted)} old version(s): {', '.join(deleted)}." if deleted else ""


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
