"""Reads of apps, stages, env vars and releases that several callers share."""

from __future__ import annotations

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from controlplane.access import Principal
from controlplane.errors import DomainError, NotFound
from regions.endpoints import api_root, resolve_endpoint
from regions.models import AppRegion, StagePlacement

from .choices import DeploymentStatus
from .models import App, Deployment, EnvVar, Release, Stage

# A deployment that ended in these left its release live (in at least one region).
LIVE_STATUSES = (DeploymentStatus.SUCCEEDED, DeploymentStatus.PARTIALLY_FAILED)


class AmbiguousApp(DomainError):
    code = "ambiguous_app"
    status_code = 400


def apps_for(principal: Principal) -> QuerySet[App]:
    """Apps ``principal`` may see, with what an app's detail shows (team, stages, placements)."""
    return (
        App.objects.visible_to(principal)
        .select_related("team")
        .prefetch_related(
            "stages",
            Prefetch(
                "placements",
                queryset=AppRegion.objects.select_related("region").prefetch_related(
                    Prefetch("stages", queryset=StagePlacement.objects.select_related("stage"))
                ),
            ),
        )
    )


def app_for(*, principal: Principal, slug: str, team: str | None = None, queryset=None) -> App:
    """The app ``slug`` among those ``principal`` sees (``team``: a team slug, needed only when two
    of the caller's teams have an app of that name). Raises NotFound, AmbiguousApp."""
    qs = (queryset if queryset is not None else App.objects.visible_to(principal)).filter(slug=slug)
    if team:
        qs = qs.filter(team__slug=team)
    apps = list(qs[:2])
    if not apps:
        raise NotFound(f"No app '{slug}'.")
    if len(apps) > 1:
        raise AmbiguousApp(f"Several of your teams have an app '{slug}': add ?team=<slug> to the URL.")
    return apps[0]


def stage_for(*, app: App, name: str) -> Stage:
    """Stage ``name`` of ``app``. Raises NotFound."""
    stage = Stage.objects.filter(app=app, name=name).select_related("app", "app__team").first()
    if stage is None:
        raise NotFound(f"{app.slug} has no stage '{name}'.")
    return stage


def env_vars_of(*, app: App) -> QuerySet[EnvVar]:
    """``app``'s env var rows, with their stage and region."""
    return EnvVar.objects.filter(app=app).select_related("app", "app__team", "stage", "region")


def region_summaries(app: App) -> list[dict]:
    """Per region of ``app``: its code, the regional API endpoint, its health (the worst of its
    stages': down > unknown > up) and the Lambda version and endpoint of each stage there."""
    out = []
    for placement in app.placements.all():
        stages = list(placement.stages.all())
        endpoints = {sp.pk: resolve_endpoint(sp) or None for sp in stages}
        healths = {sp.health_status for sp in stages}
        health = next((h for h in ("down", "unknown", "up") if h in healths), "unknown")
        out.append(
            {
                "region": placement.region.code,
                "endpoint": (
                    api_root(next(e for e in endpoints.values() if e))
                    if any(endpoints.values())
                    else f"https://{placement.rest_api_id}.execute-api.{placement.region.code}.amazonaws.com"
                    if placement.rest_api_id
                    else None
                ),
                "health": health,
                "versions": {sp.stage.name: sp.version or None for sp in stages},
                "stages": {
                    sp.stage.name: {
                        "version": sp.version or None,
                        "endpoint": endpoints[sp.pk],
                        "health": sp.health_status,
                    }
                    for sp in stages
                },
            }
        )
    return out


def current_releases(stage_ids) -> dict[int, Release]:
    """``{stage id: release}`` each stage last moved to successfully (in any region), in one
    query; a stage that never did is left out."""
    latest = (
        Deployment.objects.filter(stage=OuterRef("pk"), release__isnull=False, status__in=LIVE_STATUSES)
        .order_by("-finished_at", "-id")
        .values("release_id")[:1]
    )
    pairs = list(
        Stage.objects.filter(pk__in=list(stage_ids))
        .annotate(current_id=Subquery(latest))
        .values_list("pk", "current_id")
    )
    releases = Release.objects.in_bulk([rid for _, rid in pairs if rid])
    return {sid: releases[rid] for sid, rid in pairs if rid in releases}


def current_release(*, stage: Stage) -> Release | None:
    """The release the stage last moved to successfully (any region), or None."""
    return current_releases([stage.pk]).get(stage.pk)
