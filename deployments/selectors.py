"""Reads of apps, stages, env vars and releases that several callers share."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import OuterRef, Prefetch, QuerySet, Subquery

from controlplane.access import Principal
from controlplane.errors import DomainError, NotFound
from regions.endpoints import api_root, resolve_endpoint
from regions.models import AppRegion, StagePlacement

from .choices import DeploymentStatus, RegionStatus
from .models import App, Deployment, EnvVar, RegionDeployment, Release, Stage

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


def region_summaries(app: App, *, states: dict | None = None) -> list[dict]:
    """Per region of ``app``: its code, the regional API endpoint, its health (the worst of its
    stages': down > unknown > up) and, per stage there, the Lambda version, endpoint and the
    current release with its deploy status and warning (``stage_states``; pass ``states`` when
    they were read for many apps at once)."""
    if states is None:
        states = stage_states(stage.pk for stage in app.stages.all())
    served = {
        (stage_id, region.region): region for stage_id, state in states.items() for region in state.regions
    }
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
                        **_served(served.get((sp.stage_id, placement.region.code))),
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


def _served(state: RegionState | None) -> dict:
    return {
        "release": state.release.number if state and state.release else None,
        "deploy_status": state.deploy_status if state else "",
        "warning": state.warning if state else "",
    }


# --- What each stage runs, per region (one rule for the UI and the API) --------------------------

# A region serving a release whose deploy there ended like this gets a warning.
_UNTRUSTED = {
    RegionStatus.FAILED: "its deploy failed here",
    RegionStatus.CANCELLED: "its deploy here was cancelled before it finished",
    RegionStatus.ROLLED_BACK: "its deploy here was rolled back",
    RegionStatus.SKIPPED: "its deploy here was skipped",
}


@dataclass(frozen=True)
class ReleaseRef:
    """What pages show of a release (its number and commit), read without its encrypted env."""

    pk: int
    number: int
    commit_sha: str
    commit_branch: str
    commit_message: str
    commit_author: str
    commit_url: str


@dataclass
class RegionState:
    """What one stage serves in one region and whether that deserves trust."""

    region: str
    version: str
    release: ReleaseRef | None
    deployment_id: int | None  # the deployment that last shipped ``release`` here
    deploy_status: str  # that deployment's status in this region ("" when none is known)
    error: str
    warning: str  # non-empty: traffic runs on a release that failed or was not verified here
    health: str = ""
    endpoint: str = ""
    last_probe_at: datetime | None = None


@dataclass
class StageState:
    """A stage's current release (the one rule: what its regions serve) and each region's state."""

    release: ReleaseRef | None  # what the regions serve; the newest of them when they disagree
    mixed: bool  # the regions serve different releases
    regions: list[RegionState] = field(default_factory=list)

    @property
    def warnings(self) -> list[RegionState]:
        return [r for r in self.regions if r.warning]


_RELEASE_FIELDS = ("number", "commit_sha", "commit_branch", "commit_message", "commit_author", "commit_url")


def stage_states(stage_ids: Iterable[int]) -> dict[int, StageState]:
    """``{stage id: StageState}`` in two queries of plain values, whatever the number of stages.

    The current release of a stage in a region is the release its alias serves there, as the
    deploy engine recorded it on the stage placement. A region gets a warning when the last
    deployment that shipped that release there did not succeed (failed verification with
    policy ``leave``, cancelled after the alias moved...) or when no deployment of it is known
    there (it was not verified)."""
    ids = list(stage_ids)
    if not ids:
        return {}
    rows = list(
        StagePlacement.objects.filter(stage_id__in=ids)
        .exclude(version="")
        .order_by("stage_id", "placement__region__code")
        .values(
            "stage_id", "version", "health_status", "endpoint_url", "last_probe_at", "release_id",
            "placement__region_id",
            "placement__region__code", *(f"release__{f}" for f in _RELEASE_FIELDS),
        )
    )  # fmt: skip
    served = {r["release_id"] for r in rows if r["release_id"]}
    last: dict[tuple, dict] = {}
    for rd in (
        RegionDeployment.objects.filter(deployment__release_id__in=served)
        .order_by("-id")
        .values(
            "deployment_id", "deployment__stage_id", "deployment__release_id", "region_id", "status", "error"
        )
    ):
        last.setdefault((rd["deployment__stage_id"], rd["deployment__release_id"], rd["region_id"]), rd)
    states: dict[int, StageState] = {pk: StageState(release=None, mixed=False) for pk in ids}
    for row in rows:
        release = (
            ReleaseRef(pk=row["release_id"], **{f: row[f"release__{f}"] for f in _RELEASE_FIELDS})
            if row["release_id"]
            else None
        )
        rd = last.get((row["stage_id"], row["release_id"], row["placement__region_id"]))
        status = rd["status"] if rd else ""
        if release is None:
            warning = f"serves Lambda version {row['version']}, which no recorded release explains"
        elif rd is None:
            warning = f"release #{release.number} has no recorded deploy here (not verified)"
        elif status in _UNTRUSTED:
            warning = f"serves release #{release.number}, but {_UNTRUSTED[status]}"
            if rd["error"]:
                warning += f": {rd['error']}"
        else:
            warning = ""
        states[row["stage_id"]].regions.append(
            RegionState(
                region=row["placement__region__code"],
                version=row["version"],
                release=release,
                deployment_id=rd["deployment_id"] if rd else None,
                deploy_status=status,
                error=rd["error"] if rd else "",
                warning=warning,
                health=row["health_status"],
                endpoint=row["endpoint_url"],
                last_probe_at=row["last_probe_at"],
            )
        )
    for state in states.values():
        releases = {r.release.pk: r.release for r in state.regions if r.release is not None}
        state.mixed = len(releases) > 1
        state.release = max(releases.values(), key=lambda r: r.number) if releases else None
    return states
