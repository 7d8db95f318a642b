"""The team web UI: server-rendered pages over the selectors and services the REST API uses.

Every page needs a signed-in user. What they see is decided by ``controlplane.access`` (another
team's app or deployment is a 404, a viewer's POST a 403), and actions call the same services as
the API. Views hand templates plain rows: secret env values are never read here at all.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from functools import wraps
from urllib.parse import urlencode

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from controlplane.access import Principal, principal_for, require
from controlplane.choices import Role
from controlplane.errors import DomainError, Forbidden, NotFound
from regions.endpoints import global_endpoint, resolve_endpoint
from regions.health import probe_lease
from regions.selectors import app_health, worst_status

from . import selectors
from .choices import ACTIVE_DEPLOYMENT_STATUSES, ACTIVE_REGION_STATUSES
from .models import App, Deployment, DeploymentEvent
from .selectors import current_releases as _current_releases
from .services import apps as app_services
from .services.rollback import previous_release, rollback

RECENT_DEPLOYMENTS = 25
EVENTS_ON_PAGE = 2000  # more are fetched by the live log (or read through the API)


# --- Helpers ------------------------------------------------------------------------------------


def page(view):
    """A UI view: signed-in users only; domain errors become HTML pages, not JSON."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except selectors.AmbiguousApp:
            return _ambiguous_app(request, kwargs["app"])
        except NotFound as exc:
            return _error(request, 404, "Not found", exc.detail)
        except Http404:
            return _error(request, 404, "Not found", "There is nothing here, or it is not yours to see.")
        except Forbidden:
            return _error(request, 403, "Not allowed", "Your role in this team does not allow that.")

    return login_required(wrapper)


def _error(request: HttpRequest, status: int, title: str, detail: str, **context) -> HttpResponse:
    return render(
        request,
        "deployments/error.html",
        {"status": status, "title": title, "detail": detail, **context},
        status=status,
    )


def _ambiguous_app(request: HttpRequest, slug: str) -> HttpResponse:
    """Several of the user's own teams have an app ``slug``: a 404 offering one link per team."""
    teams = (
        App.objects.visible_to(principal_for(request))
        .filter(slug=slug)
        .select_related("team")
        .order_by("team__slug")
    )
    choices = [
        {"team": app.team, "url": f"{request.path}?{urlencode({'team': app.team.slug})}"} for app in teams
    ]
    return _error(
        request,
        404,
        "Which team?",
        f"Several of your teams have an app '{slug}'. Pick one:",
        choices=choices,
    )


def _team_query(team: str | None) -> str:
    return f"?{urlencode({'team': team})}" if team else ""


def _find_app(request: HttpRequest, slug: str) -> tuple[App, str]:
    """The app ``slug`` the user sees (``?team=`` when several of their teams have one), and the
    query string that keeps naming that team in the page's links and forms."""
    principal = principal_for(request)
    team = request.GET.get("team") or None
    app = selectors.app_for(principal=principal, slug=slug, team=team, queryset=selectors.apps_for(principal))
    return app, _team_query(team)


def _app_query(principal: Principal, app: App) -> str:
    """``?team=<slug>`` when the user sees more than one app with ``app``'s slug, else ``""``."""
    if App.objects.visible_to(principal).filter(slug=app.slug).count() > 1:
        return _team_query(app.team.slug)
    return ""


def duration(start: datetime | None, end: datetime | None = None) -> str:
    """``"1h 02m"``, ``"3m 05s"``, ``"12s"``; until now when ``end`` is None; ``""`` without a start."""
    if start is None:
        return ""
    seconds = max(0, int(((end or timezone.now()) - start).total_seconds()))
    return human_seconds(seconds)


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return ""
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{secs}s"


def safe_url(url: str) -> str:
    """``url`` if it is a plain web link (commit and compare URLs come from git hosts and CI)."""
    return url if url.startswith(("https://", "http://")) else ""


def commit_of(obj) -> dict:
    """The commit a deployment or release carries, ready to show."""
    message = (obj.commit_message or "").strip()
    return {
        "sha": obj.commit_sha,
        "short_sha": obj.commit_sha[:7],
        "title": message.splitlines()[0] if message else "",
        "message": message,
        "author": obj.commit_author,
        "branch": obj.commit_branch,
        "url": safe_url(obj.commit_url),
    }


def _health_counts(app: App) -> dict:
    """Counts of the app's live stage placements per health status (from prefetched rows)."""
    counts = Counter(
        sp.health_status for placement in app.placements.all() for sp in placement.stages.all() if sp.live
    )
    return {
        "up": counts["up"],
        "down": counts["down"],
        "unknown": counts["unknown"],
        "status": worst_status(counts.elements()) if counts else "",
    }


# --- Pages --------------------------------------------------------------------------------------


@page
@require_GET
def app_list(request: HttpRequest) -> HttpResponse:
    """The user's apps across their teams: regions, each stage's release, health counts."""
    principal = principal_for(request)
    apps = list(selectors.apps_for(principal).order_by("team__slug", "slug"))
    current = _current_releases(stage.pk for app in apps for stage in app.stages.all())
    slugs = Counter(app.slug for app in apps)
    rows = []
    for app in apps:
        query = _team_query(app.team.slug) if slugs[app.slug] > 1 else ""
        rows.append(
            {
                "app": app,
                "url": reverse("ui:app", args=[app.slug]) + query,
                "health_url": reverse("ui:health", args=[app.slug]) + query,
                "regions": [p.region.code for p in app.placements.all()],
                "stages": [
                    {
                        "stage": stage,
                        "release": current.get(stage.pk),
                        "commit": commit_of(current[stage.pk]) if stage.pk in current else None,
                    }
                    for stage in app.stages.all()
                ],
                "health": _health_counts(app),
            }
        )
    return render(request, "deployments/app_list.html", {"rows": rows, "teams": principal.teams()})


@page
@require_GET
def app_detail(request: HttpRequest, app: str) -> HttpResponse:
    """One app: stages (pins, rollback), placements and their health, deployments, env var keys."""
    principal = principal_for(request)
    obj, query = _find_app(request, app)
    stages = list(obj.stages.all())
    current = _current_releases(stage.pk for stage in stages)
    stage_rows = []
    for stage in stages:
        release = current.get(stage.pk)
        stage_rows.append(
            {
                "stage": stage,
                "global_url": safe_url(global_endpoint(stage.domain)),
                "release": release,
                "commit": commit_of(release) if release else None,
                "rollback_to": previous_release(stage=stage) if release else None,
                "can_deploy": principal.can(Role.DEPLOYER, app=obj, stage=stage.name),
            }
        )
    placements = []
    for placement in obj.placements.all():
        sps = sorted(placement.stages.all(), key=lambda sp: sp.stage.name)
        placements.append(
            {
                "region": placement.region,
                "health": worst_status(sp.health_status for sp in sps if sp.live) if sps else "unknown",
                "stages": [
                    {
                        "name": sp.stage.name,
                        "version": sp.version,
                        "health": sp.health_status if sp.live else "",
                        "endpoint": safe_url(resolve_endpoint(sp)),
                        "last_probe_at": _probe_time(sp.last_probe_at),
                    }
                    for sp in sps
                ],
            }
        )
    deployments = [
        _deployment_row(d)
        for d in Deployment.objects.filter(app=obj)
        .select_related("stage", "release")
        .order_by("-created_at", "-id")[:RECENT_DEPLOYMENTS]
    ]
    return render(
        request,
        "deployments/app_detail.html",
        {
            "app": obj,
            "team_query": query,
            "stages": stage_rows,
            "placements": placements,
            "deployments": deployments,
            "env_vars": _env_rows(obj),
            "health": _health_counts(obj),
        },
    )


def _deployment_row(d: Deployment) -> dict:
    return {
        "deployment": d,
        "commit": commit_of(d),
        "release_number": d.release.number if d.release_id else None,
        "duration": duration(d.started_at, d.finished_at) if d.started_at else "",
        "active": d.status in ACTIVE_DEPLOYMENT_STATUSES,
    }


def _env_rows(app: App) -> list[dict]:
    """Env var rows with their scope. Secret values are not even loaded: they stay encrypted."""
    qs = selectors.env_vars_of(app=app).order_by("key", "stage__name", "region__code", "id")
    plain = dict(qs.filter(secret=False).values_list("pk", "value"))
    return [
        {
            "key": row["key"],
            "stage": row["stage__name"] or "",
            "region": row["region__code"] or "",
            "secret": row["secret"],
            "value": None if row["secret"] else plain.get(row["pk"], ""),
        }
        for row in qs.values("pk", "key", "secret", "stage__name", "region__code")
    ]


def _probe_time(value: datetime | None) -> datetime | None:
    """While a probe round holds a placement, ``last_probe_at`` is the claim's expiry (see
    ``regions.api.health.LastProbeField``): show when that round started instead."""
    if value is not None and value > timezone.now():
        return value - timedelta(seconds=probe_lease())
    return value


@page
@require_GET
def app_health_page(request: HttpRequest, app: str) -> HttpResponse:
    """Per stage and region health (state, last probe, latency) and recent incidents."""
    obj, query = _find_app(request, app)
    data = app_health(app=obj)
    regions = []
    for row in data["regions"]:
        incident = row["open_incident"]
        regions.append(
            {
                **row,
                "last_probe_at": _probe_time(row["last_probe_at"]),
                "endpoint": safe_url(row["endpoint"] or ""),
                "open_incident": incident,
                "open_for": human_seconds(incident.duration_s) if incident else "",
            }
        )
    incidents = [
        {
            "incident": incident,
            "region": incident.stage_placement.placement.region.code,
            "stage": incident.stage_placement.stage.name,
            "open": incident.closed_at is None,
            "duration": human_seconds(incident.duration_s),
        }
        for incident in data["incidents"]
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
        },
    )


@page
@require_GET
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One deployment: its commit, every region's status and versions, and the event log (which
    follows live, through the events API, while the deployment is active)."""
    principal = principal_for(request)
    deployment = (
        Deployment.objects.filter(app__in=App.objects.visible_to(principal), pk=pk)
        .select_related("app__team", "stage", "release", "previous_release")
        .first()
    )
    if deployment is None:
        raise NotFound(f"No deployment {pk}.")
    regions = [
        {
            "rd": rd,
            "duration": duration(rd.started_at, rd.finished_at),
            "active": rd.status in ACTIVE_REGION_STATUSES,
        }
        for rd in deployment.regions.select_related("region").order_by("wave", "region__code")
    ]
    events = list(
        DeploymentEvent.objects.filter(deployment=deployment)
        .select_related("region")
        .order_by("seq")[: EVENTS_ON_PAGE + 1]
    )
    truncated = len(events) > EVENTS_ON_PAGE
    events = events[:EVENTS_ON_PAGE]
    query = _app_query(principal, deployment.app)
    return render(
        request,
        "deployments/deployment_detail.html",
        {
            "deployment": deployment,
            "app": deployment.app,
            "app_url": reverse("ui:app", args=[deployment.app.slug]) + query,
            "commit": commit_of(deployment),
            "compare_url": safe_url(deployment.compare_url),
            "replaced": commit_of(deployment.previous_release) if deployment.previous_release_id else None,
            "regions": regions,
            "events": events,
            "truncated": truncated,
            "last_seq": events[-1].seq if events else 0,
            "active": deployment.status in ACTIVE_DEPLOYMENT_STATUSES,
            "duration": duration(deployment.started_at, deployment.finished_at),
        },
    )


# --- Actions ------------------------------------------------------------------------------------


@page
@require_POST
def stage_rollback(request: HttpRequest, app: str, stage: str) -> HttpResponse:
    """Roll ``stage`` back to its previous release (the rollback API's service). A plan that
    refuses (nothing earlier, a pruned version) says why and changes nothing."""
    principal = principal_for(request)
    obj, query = _find_app(request, app)
    target = selectors.stage_for(app=obj, name=stage)
    require(principal, Role.DEPLOYER, app=obj, stage=target.name)
    try:
        deployment = rollback(app=obj, stage=target, principal=principal)
    except Forbidden:
        raise
    except DomainError as exc:
        messages.error(request, f"Rollback of {target.name} refused: {exc.detail}")
        return redirect(reverse("ui:app", args=[obj.slug]) + query)
    messages.success(
        request,
        f"Rolling {target.name} back to release #{deployment.release.number}. "
        "The stage is pinned until someone unpins it.",
    )
    return redirect("ui:deployment", pk=deployment.pk)


@page
@require_POST
def stage_unpin(request: HttpRequest, app: str, stage: str) -> HttpResponse:
    """Unpin ``stage`` so git pushes deploy it again (the stage PATCH API's service)."""
    principal = principal_for(request)
    obj, query = _find_app(request, app)
    target = selectors.stage_for(app=obj, name=stage)
    require(principal, Role.DEPLOYER, app=obj, stage=target.name)
    if not target.pinned:
        messages.info(request, f"{target.name} is not pinned.")
    else:
        try:
            app_services.update_stage(
                principal=principal, stage=target, data={"pinned": False}, request=request
            )
        except Forbidden:
            raise
        except DomainError as exc:
            messages.error(request, f"Could not unpin {target.name}: {exc.detail}")
        else:
            messages.success(request, f"{target.name} is unpinned: git pushes deploy it again.")
    return redirect(reverse("ui:app", args=[obj.slug]) + query)
