"""The app's health page: each stage in each region now (a failed probe shows its failure, not
a latency), its latency over the last hour / day / week as a server-rendered SVG chart, its
uptime, and the incident timeline with durations and the alerts sent."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe

from controlplane.access import principal_for
from regions import history
from regions.endpoints import resolve_endpoint
from regions.models import StagePlacement
from regions.selectors import worst_status

from .. import selectors
from ..models import App
from .common import human_seconds, page, probe_time, safe_url, team_query


@page("GET")
def app_health_page(request: HttpRequest, app: str) -> HttpResponse:
    principal = principal_for(request)
    team = request.GET.get("team") or None
    obj = selectors.app_for(
        principal=principal,
        slug=app,
        team=team,
        queryset=App.objects.visible_to(principal).select_related("team"),
    )
    window = request.GET.get("window") or history.DEFAULT_WINDOW
    if window not in history.WINDOWS:
        window = history.DEFAULT_WINDOW
    placements = list(
        StagePlacement.objects.filter(placement__app=obj)
        .select_related("stage__app__team", "placement__region")
        .order_by("stage__name", "placement__region__code")
    )
    ids = [sp.pk for sp in placements]
    timeline = history.incidents_in(app=obj, window=window)  # every open incident is in it
    open_incidents = {i.stage_placement_id: i for i in timeline if i.closed_at is None}
    series = history.latency_series(ids, window=window)
    last = history.last_probes(ids)
    regions = []
    for sp in placements:
        incident = open_incidents.get(sp.pk)
        probe = last.get(sp.pk)
        s = series[sp.pk]
        fallback = sp.last_latency_ms if sp.consecutive_failures == 0 else None
        regions.append(
            {
                "stage": sp.stage.name,
                "region": sp.placement.region.code,
                "live": sp.live,
                "version": sp.version,
                "status": sp.health_status,
                "endpoint": safe_url(resolve_endpoint(sp) or ""),
                "last_probe_at": probe_time(sp.last_probe_at),
                "consecutive_failures": sp.consecutive_failures,
                "route53_status": sp.route53_status,
                "open_incident": incident,
                "open_for": human_seconds(incident.duration_s) if incident else "",
                # A failed probe shows its failure: its "latency" is how fast it failed.
                "last_ok": probe.ok if probe else (True if fallback is not None else None),
                "last_error": (probe.error or f"status {probe.status_code}")
                if probe and not probe.ok
                else "",
                "last_latency": probe.latency_ms if probe else fallback,
                "uptime": s.uptime,
                "probes": s.probes,
                "failed": s.failed,
                "chart": mark_safe(history.svg_chart(s, window=window)),  # noqa: S308 - numbers only
            }
        )
    incidents = [
        {
            "incident": incident,
            "region": incident.stage_placement.placement.region.code,
            "stage": incident.stage_placement.stage.name,
            "open": incident.closed_at is None,
            "duration": human_seconds(incident.duration_s),
            "alerts": incident.alerts,
        }
        for incident in timeline
    ]
    return render(
        request,
        "deployments/app_health.html",
        {
            "app": obj,
            "team_query": team_query(team),
            "status": worst_status(r["status"] for r in regions if r["live"]),
            "regions": regions,
            "incidents": incidents,
            "window": window,
            "windows": list(history.WINDOWS),
        },
    )
