"""The team web UI's read pages: apps, one app, its deployments, one deployment.

What a user sees is decided by ``controlplane.access`` (another team's app or deployment is a
404). What a stage runs comes from ``selectors.stage_states``, the rule the API's app detail uses.
Secret env values are never read here at all.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC
from urllib.parse import urlencode

from django.db.models import Case, F, Q, Value, When
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.html import format_html_join

from controlplane.access import principal_for
from controlplane.choices import Role
from controlplane.crypto import EncryptedTextField
from controlplane.errors import NotFound
from regions.endpoints import global_endpoint, resolve_endpoint
from regions.models import AppRegion, StagePlacement
from regions.selectors import worst_status

from .. import selectors
from ..choices import (
    ACTIVE_DEPLOYMENT_STATUSES,
    ACTIVE_REGION_STATUSES,
    DeploymentKind,
    DeploymentStatus,
    EventLevel,
    RegionStatus,
)
from ..models import App, Deployment, DeploymentEvent, EnvVar, Release, Stage
from .common import (
    app_query,
    commit_of,
    duration,
    page,
    probe_time,
    safe_url,
    team_query,
    trigger_words,
)
from .forms import DeployForm, EnvVarForm, PromoteForm

RECENT_DEPLOYMENTS = 15
DEPLOYMENTS_PER_PAGE = 50
RELEASES_PER_STAGE = 10
EVENTS_ON_PAGE = 2000  # more are fetched by the live log (or read through the API)
HEALTH_FILTERS = ("up", "down", "unknown")


def _stage_summary(stage, state: selectors.StageState | None) -> dict:
    release = state.release if state else None
    return {
        "stage": stage,
        "release": release,
        "commit": commit_of(release) if release else None,
        "mixed": bool(state and state.mixed),
        "warnings": state.warnings if state else [],
        "regions": state.regions if state else [],
    }


@page("GET")
def app_list(request: HttpRequest) -> HttpResponse:
    """The user's apps across their teams: regions, what each stage runs, health; searchable
    by name and filtered by team and health. Plain values throughout: a hundred apps are a few
    thousand values, not a few thousand model instances."""
    principal = principal_for(request)
    q = (request.GET.get("q") or "").strip()[:100]
    team = request.GET.get("team") or ""
    health = request.GET.get("health") or ""
    qs = App.objects.visible_to(principal)
    if q:
        qs = qs.filter(Q(slug__icontains=q) | Q(name__icontains=q) | Q(repo_url__icontains=q))
    if team:
        qs = qs.filter(team__slug=team)
    apps = list(qs.order_by("team__slug", "slug").values("id", "slug", "name", "team__slug"))
    app_ids = [a["id"] for a in apps]
    regions = defaultdict(list)
    for app_id, code in (
        AppRegion.objects.filter(app_id__in=app_ids)
        .order_by("region__code")
        .values_list("app_id", "region__code")
    ):
        regions[app_id].append(code)
    stages = defaultdict(list)
    for stage in (
        Stage.objects.filter(app_id__in=app_ids)
        .order_by("name")
        .values("id", "app_id", "name", "pinned", "pinned_reason")
    ):
        stages[stage["app_id"]].append(stage)
    states = selectors.stage_states(st["id"] for rows in stages.values() for st in rows)
    slugs = Counter(a["slug"] for a in apps)
    rows = []
    for app in apps:
        summaries = [_stage_summary(st, states.get(st["id"])) for st in stages[app["id"]]]
        counts = Counter(r.health for st in stages[app["id"]] for r in states[st["id"]].regions)
        status = worst_status(counts.elements()) if counts else ""
        if health in HEALTH_FILTERS and status != health:
            continue
        query = team_query(app["team__slug"]) if slugs[app["slug"]] > 1 else ""
        rows.append(
            {
                "app": {**app, "team": {"slug": app["team__slug"]}},
                "url": reverse("ui:app", args=[app["slug"]]) + query,
                "health_url": reverse("ui:health", args=[app["slug"]]) + query,
                "regions": regions[app["id"]],
                "stages": summaries,
                "health": {
                    "up": counts["up"],
                    "down": counts["down"],
                    "unknown": counts["unknown"],
                    "status": status,
                },
            }
        )
    teams = list(principal.teams().order_by("slug"))
    return render(
        request,
        "deployments/app_list.html",
        {
            "rows": rows,
            "teams": teams,
            "q": q,
            "team": team,
            "health": health,
            "filtered": bool(q or team or health),
            "can_create": any(principal.can(Role.ADMIN, team_id=t.pk) for t in teams),
        },
    )


def _releases_by_stage(app: App, stages) -> dict[int, list[Release]]:
    """The latest releases of each stage (newest first), in one query."""
    out: dict[int, list[Release]] = defaultdict(list)
    rows = (
        Release.objects.filter(app=app)
        .select_related("artifact")
        .defer("env_snapshot")  # encrypted: decrypting it for a list costs more than the page
        .order_by("-id")[: RELEASES_PER_STAGE * max(1, len(stages))]
    )
    for release in rows:
        if len(out[release.stage_id]) < RELEASES_PER_STAGE:
            out[release.stage_id].append(release)
    return out


def _app_only(request: HttpRequest, slug: str) -> tuple[App, str]:
    """The app ``slug`` the user sees, with its team and nothing prefetched, and the ``?team=``
    query string naming that team when the URL did."""
    principal = principal_for(request)
    team = request.GET.get("team") or None
    queryset = App.objects.visible_to(principal).select_related("team")
    return selectors.app_for(principal=principal, slug=slug, team=team, queryset=queryset), team_query(team)


@page("GET")
def app_detail(request: HttpRequest, app: str) -> HttpResponse:
    """One app: what each stage runs in each region (with warnings), its releases (roll back to
    any), the deploy and promote forms, its regions and their health, recent deployments."""
    principal = principal_for(request)
    obj, query = _app_only(request, app)
    stages = list(Stage.objects.filter(app=obj).order_by("name"))
    placements = list(AppRegion.objects.filter(app=obj).select_related("region").order_by("region__code"))
    states = selectors.stage_states(stage.pk for stage in stages)
    # Where each stage answers in each region as the installation resolves it (the local regions
    # on a dev stack), from what is loaded already: the recorded endpoint on an in-memory placement.
    by_region = {p.region.code: p for p in placements}
    for stage in stages:
        stage.app = obj

    def endpoint(stage: Stage, region) -> str:
        if not region.endpoint or region.region not in by_region:
            return region.endpoint
        return resolve_endpoint(
            StagePlacement(stage=stage, placement=by_region[region.region], endpoint_url=region.endpoint)
        )

    releases = _releases_by_stage(obj, stages)
    deployer_stages = [s.name for s in stages if principal.can(Role.DEPLOYER, app=obj, stage=s.name)]
    stage_rows = []
    here: dict[str, list] = defaultdict(list)
    for stage in stages:
        row = _stage_summary(stage, states.get(stage.pk))
        current = row["release"]
        row["can_deploy"] = stage.name in deployer_stages
        row["global_url"] = safe_url(global_endpoint(stage.domain))
        row["releases"] = [
            {"release": r, "commit": commit_of(r), "current": current is not None and r.pk == current.pk}
            for r in releases.get(stage.pk, [])
        ]
        stage_rows.append(row)
        for region in row["regions"]:
            here[region.region].append(
                {
                    "name": stage.name,
                    "version": region.version,
                    "health": region.health,
                    "endpoint": safe_url(endpoint(stage, region)),
                    "last_probe_at": probe_time(region.last_probe_at),
                }
            )
    counts = Counter(sp["health"] for rows in here.values() for sp in rows)
    regions = [
        {
            "region": p.region,
            "health": worst_status(sp["health"] for sp in here[p.region.code]) if here[p.region.code] else "",
            "stages": here[p.region.code],
        }
        for p in placements
    ]
    deployments = [
        deployment_row(d)
        for d in Deployment.objects.filter(app=obj)
        .select_related("stage", "release", "user")
        .defer("release__env_snapshot")
        .order_by("-created_at", "-id")[:RECENT_DEPLOYMENTS]
    ]
    can_deploy = principal.can(Role.DEPLOYER, app=obj)
    return render(
        request,
        "deployments/app_detail.html",
        {
            "app": obj,
            "team_query": query,
            "stages": stage_rows,
            "placements": regions,
            "deployments": deployments,
            "health": {
                "up": counts["up"],
                "down": counts["down"],
                "unknown": counts["unknown"],
                "status": worst_status(counts.elements()) if counts else "",
            },
            "can_deploy": can_deploy,
            "deploy_form": DeployForm(stages=[(n, n) for n in deployer_stages]) if deployer_stages else None,
            "promote_form": PromoteForm(stages=[(s.name, s.name) for s in stages]) if can_deploy else None,
        },
    )


@page("GET")
def env_page(request: HttpRequest, app: str) -> HttpResponse:
    """The app's env vars with their scope (secret values never), and the form to add one."""
    principal = principal_for(request)
    obj, query = _app_only(request, app)
    can_deploy = principal.can(Role.DEPLOYER, app=obj)
    form = None
    if can_deploy:
        form = EnvVarForm(
            stages=list(Stage.objects.filter(app=obj).order_by("name").values_list("name", flat=True)),
            regions=list(
                AppRegion.objects.filter(app=obj)
                .order_by("region__code")
                .values_list("region__code", flat=True)
            ),
        )
    return render(
        request,
        "deployments/env_list.html",
        {
            "app": obj,
            "team_query": query,
            "env_vars": env_rows(obj),
            "env_form": form,
            "can_deploy": can_deploy,
        },
    )


def deployment_row(d: Deployment) -> dict:
    return {
        "deployment": d,
        "commit": commit_of(d),
        "release_number": d.release.number if d.release_id else None,
        "duration": duration(d.started_at, d.finished_at) if d.started_at else "",
        "active": d.status in ACTIVE_DEPLOYMENT_STATUSES,
        "trigger": trigger_words(d),
    }


def env_rows(app: App) -> list[dict]:
    """Env var rows with their scope, in one query. Only non-secret values are read (and so
    decrypted): a secret's value never leaves the database here."""
    plain = Case(When(secret=False, then=F("value")), default=Value(""), output_field=EncryptedTextField())
    return [
        {
            "id": row["pk"],
            "key": row["key"],
            "stage": row["stage__name"] or "",
            "region": row["region__code"] or "",
            "secret": row["secret"],
            "value": None if row["secret"] else row["plain"],
        }
        for row in EnvVar.objects.filter(app=app)
        .annotate(plain=plain)
        .order_by("key", "stage__name", "region__code", "id")
        .values("pk", "key", "secret", "stage__name", "region__code", "plain")
    ]


@page("GET")
def deployment_list(request: HttpRequest, app: str) -> HttpResponse:
    """All of an app's deployments, newest first, filtered by stage, status and kind, a page
    at a time (no count over the whole table: one row more than a page says there is a next)."""
    obj, query = _app_only(request, app)
    qs = (
        Deployment.objects.filter(app=obj)
        .select_related("stage", "release", "user")
        .defer("release__env_snapshot")
    )
    stage = request.GET.get("stage") or ""
    status = request.GET.get("status") or ""
    kind = request.GET.get("kind") or ""
    if stage:
        qs = qs.filter(stage__name=stage)
    if status in DeploymentStatus.values:
        qs = qs.filter(status=status)
    if kind in DeploymentKind.values:
        qs = qs.filter(kind=kind)
    try:
        number = max(1, min(int(request.GET.get("page") or 1), 100000))
    except ValueError:
        number = 1
    start = (number - 1) * DEPLOYMENTS_PER_PAGE
    rows = list(qs.order_by("-id")[start : start + DEPLOYMENTS_PER_PAGE + 1])
    params = {
        k: v
        for k, v in {"team": request.GET.get("team"), "stage": stage, "status": status, "kind": kind}.items()
        if v
    }

    def link(n: int) -> str:
        return "?" + urlencode({**params, "page": n})

    return render(
        request,
        "deployments/deployment_list.html",
        {
            "app": obj,
            "team_query": query,
            "deployments": [deployment_row(d) for d in rows[:DEPLOYMENTS_PER_PAGE]],
            "page": number,
            "next_url": link(number + 1) if len(rows) > DEPLOYMENTS_PER_PAGE else "",
            "prev_url": link(number - 1) if number > 1 else "",
            "stages": list(Stage.objects.filter(app=obj).order_by("name").values_list("name", flat=True)),
            "statuses": DeploymentStatus.values,
            "kinds": DeploymentKind.values,
            "stage": stage,
            "status": status,
            "kind": kind,
        },
    )


def without_region(message: str, region: str) -> str:
    """The log line without the ``"<region>: "`` the engine puts first (the region has a column)."""
    prefix = f"{region}: "
    return message[len(prefix) :] if region and message.startswith(prefix) else message


def log_rows(events: list[dict]) -> str:
    """The log's table rows, built here rather than in a template loop: a deployment's log runs
    to thousands of lines, and this is several times faster with the same escaping."""
    rows = []
    for e in events:
        at = e["created_at"].astimezone(UTC)
        region = e["region__code"] or ""
        rows.append(
            (
                e["level"], e["seq"], region or "-", e["level"], at.isoformat().replace("+00:00", "Z"),
                at.strftime("%Y-%m-%d %H:%M:%S"), at.strftime("%H:%M:%S"), region, e["step"],
                without_region(e["message"], region),
            )
        )  # fmt: skip
    return format_html_join(
        "\n",
        '<tr class="level-{}" data-seq="{}" data-region="{}" data-level="{}"><td class="ts">'
        '<time datetime="{}" title="{} UTC">{}</time></td><td class="region">{}</td>'
        '<td class="step">{}</td><td class="msg">{}</td></tr>',
        rows,
    )


def failure_summary(regions) -> list[dict]:
    """The regions that failed (or were rolled back) and why, first error first."""
    bad = (RegionStatus.FAILED, RegionStatus.ROLLED_BACK)
    return [
        {"region": rd.region.code, "status": rd.status, "error": rd.error or "No error was recorded."}
        for rd in regions
        if rd.status in bad
    ]


@page("GET")
def deployment_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """One deployment: a failure summary, its commit, every region's status and versions, the
    actions that apply, and the event log (which follows live while the deployment is active)."""
    principal = principal_for(request)
    deployment = (
        Deployment.objects.filter(app__in=App.objects.visible_to(principal), pk=pk)
        .select_related("app__team", "stage", "release", "previous_release", "user")
        .defer("release__env_snapshot", "previous_release__env_snapshot")
        .first()
    )
    if deployment is None:
        raise NotFound(f"No deployment {pk}.")
    rds = list(deployment.regions.select_related("region").order_by("wave", "region__code"))
    regions = [
        {
            "rd": rd,
            "duration": duration(rd.started_at, rd.finished_at),
            "active": rd.status in ACTIVE_REGION_STATUSES,
        }
        for rd in rds
    ]
    events = list(
        DeploymentEvent.objects.filter(deployment=deployment)
        .order_by("seq")
        .values("seq", "level", "step", "message", "created_at", "region__code")[: EVENTS_ON_PAGE + 1]
    )
    truncated = len(events) > EVENTS_ON_PAGE
    events = events[:EVENTS_ON_PAGE]
    query = app_query(principal, deployment.app)
    active = deployment.status in ACTIVE_DEPLOYMENT_STATUSES
    can_deploy = principal.can(Role.DEPLOYER, app=deployment.app, stage=deployment.stage.name)
    finished_badly = deployment.status in (
        DeploymentStatus.FAILED,
        DeploymentStatus.PARTIALLY_FAILED,
        DeploymentStatus.ROLLED_BACK,
        DeploymentStatus.CANCELLED,
    )
    return render(
        request,
        "deployments/deployment_detail.html",
        {
            "deployment": deployment,
            "app": deployment.app,
            "app_url": reverse("ui:app", args=[deployment.app.slug]) + query,
            "team_query": query,
            "commit": commit_of(deployment),
            "compare_url": safe_url(deployment.compare_url),
            "replaced": commit_of(deployment.previous_release) if deployment.previous_release_id else None,
            "regions": regions,
            "region_codes": [rd.region.code for rd in rds],
            "levels": EventLevel.values,
            "failures": failure_summary(rds),
            "events": events,
            "log_rows": log_rows(events),
            "truncated": truncated,
            "last_seq": events[-1]["seq"] if events else 0,
            "active": active,
            "duration": duration(deployment.started_at, deployment.finished_at),
            "trigger": trigger_words(deployment),
            "can_cancel": can_deploy and active,
            "can_retry": can_deploy and not active and finished_badly and deployment.release_id is not None,
            "can_roll_back": can_deploy
            and not active
            and deployment.previous_release_id is not None
            and deployment.kind != DeploymentKind.ROLLBACK,
        },
    )
