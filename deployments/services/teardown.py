"""Taking a stage or an app down before deleting it: what still serves in AWS, and the
``teardown`` deployment that removes it (the engine runs it like any deployment and deletes the
rows once every region is down)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from controlplane import audit
from controlplane.access import Principal
from controlplane.errors import Conflict
from regions.models import AppRegion, StagePlacement

from ..choices import ACTIVE_DEPLOYMENT_STATUSES, DeploymentKind
from ..engine import dispatch, states
from ..events import log_event
from ..models import App, Deployment, RegionDeployment, Stage


class StageIsLive(Conflict):
    code = "stage_is_live"


class StageTornDown(Conflict):
    code = "stage_torn_down"


def live_regions(*, app: App, stage: Stage | None = None) -> list[str]:
    """Codes of the regions where the app (or only ``stage``) is recorded as serving."""
    rows = StagePlacement.objects.filter(placement__app=app).exclude(version="")
    if stage is not None:
        rows = rows.filter(stage=stage)
    return sorted(set(rows.values_list("placement__region__code", flat=True)))


def active_teardown(*, app: App, stage: Stage | None = None) -> Deployment | None:
    """The teardown of the app (or of ``stage``) that is queued or running, if any."""
    rows = Deployment.objects.filter(
        app=app, kind=DeploymentKind.TEARDOWN, status__in=ACTIVE_DEPLOYMENT_STATUSES
    )
    if stage is not None:
        rows = rows.filter(stage=stage)
    return rows.order_by("-pk").first()


def check_not_torn_down(stage: Stage) -> None:
    """Raises StageTornDown (409) for a stage being taken down (or whose teardown failed)."""
    if stage.teardown_started_at is not None:
        raise StageTornDown(
            f"Stage '{stage.name}' is being taken down (or its teardown failed); it takes no "
            "deployments. Delete it with force=true to retry the teardown."
        )


def start_teardown(
    *, app: App, stage: Stage | None, principal: Principal | None, live: list[str], request=None
) -> Deployment:
    """Queue a ``teardown`` deployment of ``stage`` (None: the whole app) in every region where
    anything of it may be left, mark the stage(s) so nothing probes them or deploys to them, and
    audit it. Returns the deployment (an already running teardown of the same scope is returned
    as is). The caller checked permissions, that no other deployment is active and that the app
    has regions."""
    with transaction.atomic():
        stages = [stage] if stage is not None else list(app.stages.order_by("name"))
        list(Stage.objects.select_for_update().filter(pk__in=[s.pk for s in stages]).values_list("pk"))
        running = active_teardown(app=app, stage=stage)
        if running is not None and (stage is not None or running.whole_app):
            return running
        # Every region of the app, not only those recorded live: a retried teardown may find a
        # region whose records were cleared but whose function is still there.
        placements = list(AppRegion.objects.filter(app=app).select_related("region").order_by("region__code"))
        Stage.objects.filter(pk__in=[s.pk for s in stages]).update(teardown_started_at=timezone.now())
        owner = stage or next((s for s in stages if s.placements.exclude(version="").exists()), stages[0])
        born, region_status = states.born(recorded_only=False)
        deployment = Deployment.objects.create(
            app=app,
            stage=owner,
            kind=DeploymentKind.TEARDOWN,
            whole_app=stage is None,
            triggered_by=(principal.label if principal is not None else "system")[:200],
            user=getattr(principal, "user", None),
            force=True,
            **born,
        )
        RegionDeployment.objects.bulk_create(
            RegionDeployment(deployment=deployment, region=p.region, wave=0, status=region_status)
            for p in placements
        )
        what = f"app '{app.slug}'" if stage is None else f"stage '{stage.name}'"
        codes = [p.region.code for p in placements]
        log_event(
            deployment_id=deployment.pk,
            step="queue",
            message=f"Teardown of {what} queued by {deployment.triggered_by} for {len(codes)} "
            f"region(s): {', '.join(codes) or 'none'} (live in {', '.join(live) or 'none'}). "
            "Probes and alerts stop now; the rows are deleted once every region is down.",
        )
        audit.record(
            team=app.team,
            principal=principal,
            action="app.teardown" if stage is None else "stage.teardown",
            obj=app if stage is None else stage,
            changes={"deployment": deployment.pk, "live_regions": live, "regions": codes},
            request=request,
        )
        dispatch.start(deployment.pk)
    return deployment
