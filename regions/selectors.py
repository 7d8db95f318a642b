"""Reads of health that several callers share (the health API, the web UI, alerts)."""

from __future__ import annotations

from django.db.models import Prefetch, QuerySet

from .endpoints import resolve_endpoint
from .models import Incident, StagePlacement

RECENT_INCIDENTS = 20


def stage_placements_of(*, app, stage: str | None = None) -> QuerySet[StagePlacement]:
    """``app``'s stages in each of its regions, with their open incident prefetched as
    ``open_incidents`` (a list of at most one)."""
    qs = (
        StagePlacement.objects.filter(placement__app=app)
        .select_related("stage__app__team", "placement__region")
        .prefetch_related(
            Prefetch(
                "incidents",
                queryset=Incident.objects.filter(closed_at__isnull=True),
                to_attr="open_incidents",
            )
        )
        .order_by("stage__name", "placement__region__code")
    )
    if stage:
        qs = qs.filter(stage__name=stage)
    return qs


def recent_incidents(*, app, stage: str | None = None, limit: int = RECENT_INCIDENTS) -> list[Incident]:
    """``app``'s latest incidents, open or closed, newest first."""
    qs = Incident.objects.filter(stage_placement__placement__app=app).select_related(
        "stage_placement__stage", "stage_placement__placement__region"
    )
    if stage:
        qs = qs.filter(stage_placement__stage__name=stage)
    return list(qs.order_by("-opened_at", "-id")[:limit])


def worst_status(statuses) -> str:
    """``down`` if any is down, else ``unknown`` if any is unknown, else ``up`` (``unknown`` for none)."""
    statuses = set(statuses)
    return next((s for s in ("down", "unknown", "up") if s in statuses), "unknown")


def app_health(*, app, stage: str | None = None) -> dict:
    """The health of ``app`` per stage and region: status, last probe, latency, Route 53's view,
    the open incident; the overall (worst live) status; and recent incidents."""
    rows = []
    for sp in stage_placements_of(app=app, stage=stage):
        incident = sp.open_incidents[0] if sp.open_incidents else None
        rows.append(
            {
                "region": sp.placement.region.code,
                "stage": sp.stage.name,
                "live": sp.live,
                "version": sp.version or None,
                "status": sp.health_status,
                "endpoint": resolve_endpoint(sp) or None,
                "last_probe_at": sp.last_probe_at,
                "latency_ms": sp.last_latency_ms,
                "consecutive_failures": sp.consecutive_failures,
                "route53_status": sp.route53_status or None,
                "open_incident": incident,
            }
        )
    return {
        "app": app.slug,
        "status": worst_status(r["status"] for r in rows if r["live"]),
        "regions": rows,
        "incidents": recent_incidents(app=app, stage=stage),
    }
