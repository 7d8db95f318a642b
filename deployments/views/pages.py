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
from django.utils.encoding import escape_uri_path
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

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
    app_url, health_url = url_maker("ui:app", slug="app"), url_maker("ui:health", slug="app")
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
                "url": app_url(app["slug"]) + query,
                "health_url": health_url(app["slug"]) + query,
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
            "rows_html": app_rows_html(rows),
            "teams": teams,
            "q": q,
            "team": team,
            "health": health,
            "filtered": bool(q or team or health),
            "can_create": any(principal.can(Role.ADMIN, team_id=t.pk) for t in teams),
        },
    )


def url_maker(name: str, *, slug: str):
    """``make(value)``: the URL ``reverse(name, kwargs={slug: value})`` gives, resolved once for
    a whole page (reversing for each of a hundred rows costs more than the rest of the row)."""
    marker = "0slug0"
    template = reverse(name, kwargs={slug: marker})
    head, tail = template.split(marker, 1)

    def make(value: str) -> str:
        return head + escape_uri_path(value) + tail

    return make


NO_REGIONS = mark_safe('<span class="muted">none</span>')
NO_STAGES = mark_safe('<span class="muted">no stages</span>')
NOT_LIVE = mark_safe('<span class="muted">not live</span>')
MIXED = '<span class="badge pinned" title="Its regions serve different releases">mixed</span>'


def _stage_line(s: dict) -> str:
    stage = s["stage"]
    parts = [format_html('<div class="stage-line">\n<span class="stage-name">{}</span>', stage["name"])]
    release = s["release"]
    if release:
        parts.append(format_html("<span>#{}</span>", release.number))
        commit = s["commit"]
        if commit["short_sha"]:
            parts.append(format_html('<code title="{}">{}</code>', commit["title"], commit["short_sha"]))
        if s["mixed"]:
            parts.append(MIXED)
    else:
        parts.append('<span class="muted">not deployed</span>')
    warnings = s["warnings"]
    if warnings:
        title = format_html_join("", "{}: {}&#10;", ((w.region, w.warning) for w in warnings))
        n = len(warnings)
        parts.append(
            format_html(
                '<span class="badge status-failed warn" title="{}">⚠ {} region{} unverified</span>',
                title, n, "" if n == 1 else "s",
            )
        )  # fmt: skip
    if stage["pinned"]:
        reason = stage["pinned_reason"]
        parts.append(format_html('<span class="badge pinned" title="{}">pinned</span>', reason))
    parts.append("</div>")
    return "\n".join(parts)


def app_rows_html(rows: list[dict]) -> str:
    """The apps table's rows, built here rather than in template loops: a hundred apps with
    their stages are thousands of template nodes, several times slower with the same escaping."""
    out = []
    for row in rows:
        app = row["app"]
        name = (
            format_html('<div class="muted small">{}</div>', app["name"])
            if app["name"] and app["name"] != app["slug"]
            else ""
        )
        chips = (
            format_html_join("", '<span class="chip">{}</span>', ((code,) for code in row["regions"]))
            or NO_REGIONS
        )
        stage_lines = "\n".join(_stage_line(s) for s in row["stages"]) or NO_STAGES
        h = row["health"]
        if h["status"]:
            health = format_html(
                '<span class="count health-up">{} up</span>\n<span class="count health-down">{} down</span>\n'
                '<span class="count health-unknown">{} unknown</span>',
                h["up"], h["down"], h["unknown"],
            )  # fmt: skip
        else:
            health = NOT_LIVE
        out.append(
            format_html(
                '<tr>\n<td data-label="App"><a class="strong" href="{}">{}</a>{}</td>\n'
                '<td data-label="Team">{}</td>\n<td data-label="Regions">{}</td>\n'
                '<td data-label="Stages">\n{}\n</td>\n'
                '<td data-label="Health">\n<a class="health-summary" href="{}">\n{}\n</a>\n</td>\n</tr>',
                row["url"],
                app["slug"],
                name,
                app["team"]["slug"],
                chips,
                mark_safe(stage_lines),  # noqa: S308
                row["health_url"],
                health,
            )  # fmt: skip
        )
    return mark_safe("\n".join(out))  # noqa: S308 - every value above went through format_html


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
        for d in deployment_page(
            Deployment.objects.filter(app=obj).order_by("-created_at", "-id")[:RECENT_DEPLOYMENTS]
        )
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


def deployment_page(page) -> list[Deployment]:
    """The deployments of ``page`` (a sliced, ordered queryset) with their stage, release and
    user, in one statement. The page's ids are picked first (on the deployments' own index) and
    only those rows are joined: joining first would join every deployment the app ever had."""
    ids = page.values("pk")
    return list(
        Deployment.objects.filter(pk__in=ids)
        .select_related("stage", "release", "user")
        .defer("release__env_snapshot")
        .order_by(*page.query.order_by)
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
    qs = Deployment.objects.filter(app=obj)
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
    rows = deployment_page(qs.order_by("-id")[start : start + DEPLOYMENTS_PER_PAGE + 1])
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
