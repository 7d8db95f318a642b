"""The region's health path answers as the app expects, on the version the alias now serves."""

from __future__ import annotations

from django.conf import settings

from ..context import RegionRun, StepFailed


def applies(run: RegionRun) -> bool:
    return True


def run(run: RegionRun) -> str:
    if not settings.DEPLOY_VERIFY:
        return "Health verification is turned off (DEPLOY_VERIFY=false)."
    url = run.health_url()
    if not url:
        return "No endpoint to probe yet; health verification skipped."
    result = run.probe([url])[url]
    if result.ok:
        return f"Healthy: {url} answered {result.status_code} in {result.latency_ms:.0f} ms."
    raise StepFailed(
        f"Health check failed after {max(1, settings.DEPLOY_VERIFY_ATTEMPTS)} tries: {url}: "
        + (result.error or f"status {result.status_code}"),
        code="health_check_failed",
    )
