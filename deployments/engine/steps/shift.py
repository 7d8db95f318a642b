"""A canary's end. Its bake first: the region is parked until the bake is over (its worker
thread is free meanwhile; the health monitor keeps probing the region). Then the endpoint is
probed again and the monitor's results since the canary started are read: any failure fails
the region, and the canary is withdrawn. Else every request goes to the new version."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from regions.aws import lambda_
from regions.models import Probe

from ..context import Park, RegionRun, StepFailed


def applies(run: RegionRun) -> bool:
    return run.canary_active


def run(run: RegionRun) -> str:
    bake = timedelta(seconds=run.rollout.canary.bake_s)
    now = timezone.now()
    if bake and run.rd.resume_at is None:
        run.save(resume_at=now + bake)
        raise Park(run.rd.resume_at)
    if run.rd.resume_at is not None and now < run.rd.resume_at:
        raise Park(run.rd.resume_at)  # resumed early (a redelivered message)
    problem = _problem(run, since=(run.rd.resume_at or now) - bake)
    if problem:
        raise StepFailed(f"Canary failed: {problem}", code="canary_failed")
    version = run.rd.version
    lambda_.ensure_alias(
        run.code, name=run.function, alias=run.stage.name, version=version, role_arn=run.role
    )
    run.canary_active = False
    run.canary_done = True
    run.record_live(version)
    return (
        f"Canary healthy for {int(bake.total_seconds())} s: alias {run.stage.name} on version "
        f"{version} for every request (was {run.rd.previous_version})."
    )


def _problem(run: RegionRun, *, since) -> str:
    """Why the canary is unhealthy ("" when it is not): a failed probe of the monitor since
    ``since``, or the endpoint failing now."""
    failed = (
        Probe.objects.filter(
            stage_placement__placement_id=run.placement_id(), stage_placement__stage=run.stage,
            ok=False, created_at__gte=since,
        ).order_by("created_at").values_list("created_at", "error").first()
    )  # fmt: skip
    if failed:
        return f"the health monitor's probe at {failed[0]:%H:%M:%S} UTC failed ({failed[1] or 'unhealthy'})."
    url = run.health_url() if settings.DEPLOY_VERIFY else ""
    if not url:
        return ""
    result = run.probe([url], steady=True)[url]
    return "" if result.ok else f"{url}: " + (result.error or f"status {result.status_code}")
