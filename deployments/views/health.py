"""The app's health page: each stage in each region now (a failed probe shows its failure, not
a latency), its latency over the last hour / day / week as a server-rendered SVG chart, its
uptime, and the incident timeline with durations and the alerts sent."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.safestring import mark_safe

from regions import history
from regions.models import StagePlacement
from regions.selectors import app_health

from .common import find_app, human_seconds, page, probe_time, safe_url


@page("GET")
def app_health_page(request: HttpRequest, app: str) -> HttpResponse:
    obj, query = find_app(request, app)
    window = request.GET.get("window") or history.DEFAULT_WINDOW
    if window not in history.WINDOWS:
        window = history.DEFAULT_WINDOW
    data = app_health(app=obj)
    placements = {(sp.stage.name, sp.placement.region.code): sp.pk for sp in _placements(obj)}
    ids = list(placements.values())
    series = history.latency_series(ids, window=window)
    last = history.last_probes(ids)
    regions = []
    for row in data["regions"]:
        pk = placements.get((row["stage"], row["region"]))
        incident = row["open_incident"]
        probe = last.get(pk)
        s = series.get(pk) or history.Series(stage_placement_id=pk or 0)
        regions.append(
            {
                **row,
                "last_probe_at": probe_time(row["last_probe_at"]),
                "endpoint": safe_url(row["endpoint"] or ""),
                "open_incident": incident,
                "open_for": human_seconds(incident.duration_s) if incident else "",
                "last_ok": probe.ok if probe else (_fallback_latency(row) is not None or None),
                "last_error": (probe.error or f"status {probe.status_code}")
                if probe and not probe.ok
                else "",
                "last_latency": probe.latency_ms if probe else _fallback_latency(row),
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
        for incident in history.incidents_in(app=obj, window=window)
    ]
    return render(
        request,
        "deployments/app_health.html",
        {
            "app": obj,
            "team_query": query,
            "status": data["status"],
            "regions": regions,
            "incidents": incidents,
            "window": window,
            "windows": list(history.WINDOWS),
        },
    )


def _placements(app):
    return StagePlacement.objects.filter(placement__app=app).select_related("stage", "placement__region")


def _fallback_latency(row: dict) -> float | None:
    """Without a probe row (pruned), the placement's last latency, only if that probe passed."""
    return row["latency_ms"] if row["consecutive_failures"] == 0 and row["latency_ms"] is not None else None
