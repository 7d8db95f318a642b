"""What one run of one region knows: the region deployment, its deployment, release, app, stage
and region (loaded once), and what earlier steps learnt, so later steps need not ask AWS or the
database again. Steps read and write it; :mod:`.run` drives them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from regions.aws import lambda_
from regions.endpoints import resolve_endpoint
from regions.models import AppRegion, StagePlacement
from regions.probes import ProbeResult, ProbeTarget, probe_repeatedly

from ..choices import DeploymentKind, EventLevel
from ..events import log_event
from ..models import Deployment, RegionDeployment, Release
from ..rollout import Rollout, rollout_of

VERSION_MARKER = "cp-release-{release_id} "


class RetryLater(Exception):
    """A transient AWS failure: the region is retried later, resuming at this step."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class Park(Exception):
    """The region waits until ``until`` (a canary bakes, a certificate waits for ISSUED): it stays
    running and held (no other deploy of the app takes the region) but no worker thread waits
    for it; a task resumes it then, and its steps run again (each reads AWS first). ``step`` is
    the step that parked it (recorded, so the resumed run knows why it was parked), ``message``
    what the log says."""

    def __init__(self, until, *, step: str = "shift", message: str = ""):
        super().__init__(f"parked until {until.isoformat()}")
        self.until = until
        self.step = step
        self.message = message or (
            f"Canary baking until {until:%H:%M:%S} UTC; the region is held meanwhile, "
            "and no worker waits for it."
        )


class StepFailed(Exception):
    """A step found the region cannot go on (``code``: the region's ``error_code``)."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


def version_marker(release: Release) -> str:
    return VERSION_MARKER.format(release_id=release.pk)


@dataclass
class RegionRun:
    rd: RegionDeployment
    loaded: Deployment | None = None  # the deployment, when the caller has it loaded already
    deployment: Deployment = field(init=False)
    release: Release | None = field(init=False)  # None for a teardown

    def __post_init__(self) -> None:
        self.deployment = self.loaded or Deployment.objects.select_related(
            "app__team", "stage", "release__artifact"
        ).get(pk=self.rd.deployment_id)
        self.release = self.deployment.release
        self.app = self.deployment.app
        self.stage = self.deployment.stage
        self.stage.app = self.app  # loaded with its team: nothing reads them again
        if self.release is not None and self.release.artifact_id:
            self.release.artifact.app = self.app  # (its storage key names the team and the app)
        self.rollout: Rollout = rollout_of(self.stage)
        self.is_rollback = self.deployment.kind == DeploymentKind.ROLLBACK
        self.is_teardown = self.deployment.kind == DeploymentKind.TEARDOWN
        self.region = self.rd.region
        self.code = self.region.code
        self.role = self.region.role_arn
        self.function = self.app.function_name
        self.config = self.release.config if self.release is not None else {}  # (none: a teardown)
        self.api_id = ""
        self.endpoint = ""
        self.regional_domain: tuple[str, str] | None = None
        self.health_check_id = ""
        # What this run learnt, so later steps need not ask AWS again: the function was created
        # by this run (so it has no other version, alias or policy), and the stage alias as read.
        self.created_function = False
        self.version_searched = False
        self.revision_id = ""  # of $LATEST as this run left it
        self.alias_before: lambda_.AliasInfo | None | Any = lambda_.UNREAD
        self.status: str | None = None  # the region's final status, once known (rollback)
        self.canary_active = False  # the alias shares the stage's traffic with the new version
        self.canary_done = False  # this run moved every request to the new version after a canary
        self._placement_id: int | None = getattr(self.rd, "placement_id", None)  # set by claim
        self.live: StagePlacement | None = None  # the stage's placement as this run recorded it
        self.move_started = 0.0
        self.move_ms = 0  # how long the rollback's alias move took
        self.probed: dict[str, ProbeResult] | None = None  # results probed already (a rollback's)
        # The step that parked this region, when it is resumed from a park ("shift": a canary's
        # bake, "api": a certificate's validation).
        self.parked_for = self.rd.step if self.rd.resume_at is not None else ""

    def log(self, message: str, *, step: str = "", level: str = EventLevel.INFO, duration_ms=None) -> None:
        log_event(
            deployment_id=self.rd.deployment_id,
            region_id=self.rd.region_id,
            level=level,
            step=step,
            message=f"{self.code}: {message}",
            duration_ms=duration_ms,
        )

    def save(self, **fields) -> None:
        """Fields of the region deployment that are not its status (see ``states``)."""
        RegionDeployment.objects.filter(pk=self.rd.pk).update(**fields)
        for name, value in fields.items():
            setattr(self.rd, name, value)

    def placement_id(self) -> int:
        if self._placement_id is None:
            self._placement_id = (
                AppRegion.objects.filter(app=self.app, region=self.region).values_list("pk", flat=True).get()
            )
        return self._placement_id

    def record_live(self, version: str) -> None:
        """The stage serves ``version`` of this release in this region (one upsert)."""
        defaults = {"version": version, "release": self.release}
        if self.endpoint:
            defaults["endpoint_url"] = self.endpoint
        if self.health_check_id:
            defaults["health_check_id"] = self.health_check_id
        row = StagePlacement(placement_id=self.placement_id(), stage=self.stage, **defaults)
        StagePlacement.objects.bulk_create(
            [row], update_conflicts=True, unique_fields=["placement", "stage"], update_fields=list(defaults)
        )
        self.live = row

    def health_url(self) -> str:
        """The region's health URL for this stage ("" until the deploy recorded an endpoint)."""
        sp = self.live
        if sp is None or not sp.endpoint_url:
            sp = StagePlacement.objects.get(placement_id=self.placement_id(), stage=self.stage)
        # What the resolver reads, from the objects this run has loaded already.
        sp.stage = self.stage
        sp.placement = AppRegion(pk=sp.placement_id, app=self.app, region=self.region)
        base = resolve_endpoint(sp)
        return base.rstrip("/") + self.config["health_path"] if base else ""

    def probe(self, urls: list[str], *, steady: bool = False) -> dict[str, ProbeResult]:
        """Probe the release's health check at ``urls`` as the deploy does (DEPLOY_VERIFY_ATTEMPTS
        tries, DEPLOY_VERIFY_INTERVAL apart); ``{url: last result}``. URLs probed already (a
        rollback probes its regions together) are not probed again."""
        if self.probed is not None and all(url in self.probed for url in urls):
            return {url: self.probed[url] for url in urls}
        targets = [
            ProbeTarget(
                url,
                expected_status=self.config.get("health_expected_status", 200),
                expected_text=self.config.get("health_expected_text", ""),
            )
            for url in urls
        ]
        return probe_repeatedly(
            targets,
            attempts=settings.DEPLOY_VERIFY_ATTEMPTS,
            interval=settings.DEPLOY_VERIFY_INTERVAL,
            timeout=settings.HEALTH_PROBE_TIMEOUT,
            steady=steady,
        )
