"""A later wave's health gate: the earlier waves' regions must still be healthy after the bake;
nothing changes in AWS here before it passes."""

from __future__ import annotations

from django.conf import settings

from regions.endpoints import resolve_endpoint
from regions.models import StagePlacement

from ...choices import RegionStatus
from ...models import RegionDeployment
from ..context import RegionRun, StepFailed


def applies(run: RegionRun) -> bool:
    return bool(run.rd.wave) and settings.DEPLOY_VERIFY


def run(run: RegionRun) -> str:
    earlier = RegionDeployment.objects.filter(
        deployment_id=run.deployment.pk, wave__lt=run.rd.wave, status=RegionStatus.SUCCEEDED
    ).values_list("region_id", flat=True)
    placed = StagePlacement.objects.filter(
        stage=run.stage, placement__app=run.app, placement__region_id__in=list(earlier)
    ).select_related("placement__region")
    urls: dict[str, str] = {}
    for sp in placed:
        sp.stage = run.stage
        base = resolve_endpoint(sp)
        if base:
            urls[sp.placement.region.code] = base.rstrip("/") + run.config["health_path"]
    if not urls:
        return ""
    results = run.probe([urls[code] for code in sorted(urls)])
    unhealthy = {
        code: results[url].error or f"status {results[url].status_code}"
        for code, url in urls.items()
        if not results[url].ok
    }
    if not unhealthy:
        return f"Health gate: the {len(urls)} region(s) of earlier waves are healthy."
    raise StepFailed(
        "Health gate: "
        + "; ".join(f"{code} ({urls[code]}): {why}" for code, why in sorted(unhealthy.items()))
        + f" — an earlier wave is unhealthy, so wave {run.rd.wave + 1} does not start here.",
        code="health_gate_failed",
    )
