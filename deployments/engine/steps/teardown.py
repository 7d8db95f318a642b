"""Taking a stage (or a whole app) down in one region, as a deployment of kind ``teardown``:
its Route 53 latency record and health check, its custom domain and the certificate this
control plane requested for it, its API Gateway stage, its alias and the versions only it
published; when no stage of the app is left in the region, the function and the REST API too.
Every delete reads or tolerates what is already gone, so a retried teardown resumes.

:func:`complete` deletes the rows once every region is down."""

from __future__ import annotations

from django.db import transaction
from django.db.models import Q

from controlplane import audit
from regions.aws import acm, apigateway, lambda_, route53
from regions.models import AppRegion, StagePlacement

from ...choices import DeploymentKind, DeploymentStatus, RegionStatus
from ...models import Deployment, RegionDeployment, Stage
from ..context import RegionRun
from ..removal import delete_app_rows, delete_stage_rows


def applies(run: RegionRun) -> bool:
    return True


def stages_of(deployment: Deployment) -> list[Stage]:
    """The stages a teardown takes down: its own, or every stage of the app."""
    if deployment.whole_app:
        return list(Stage.objects.filter(app_id=deployment.app_id).order_by("name"))
    return [deployment.stage]


def run(run: RegionRun) -> str:
    done: list[str] = []
    # Read from AWS, not the id last recorded: a retried teardown may have deleted it already.
    api_id = apigateway.find_rest_api(run.code, run.function, role_arn=run.role)
    for stage in stages_of(run.deployment):
        done += _take_down_stage(run, stage, api_id)
    remaining = (
        [a.name for a in lambda_.list_aliases(run.code, run.function, role_arn=run.role)]
        if (lambda_.get_function(run.code, run.function, role_arn=run.role) is not None)
        else []
    )
    if run.deployment.whole_app or not remaining:
        # No stage of the app is served here any more: the function and its API go too.
        if api_id and apigateway.delete_rest_api(run.code, api_id, role_arn=run.role):
            done.append(f"REST API {api_id}")
        AppRegion.objects.filter(pk=run.placement_id()).update(rest_api_id="")
        if lambda_.delete_function(run.code, run.function, role_arn=run.role):
            done.append(f"function {run.function}")
    elif remaining:
        done.append(f"kept function {run.function} (still serves {', '.join(sorted(remaining))})")
    return "Removed " + "; ".join(done) + "." if done else "Nothing of it was left in this region."


def _take_down_stage(run: RegionRun, stage: Stage, api_id: str | None) -> list[str]:
    done: list[str] = []
    placement = StagePlacement.objects.filter(placement_id=run.placement_id(), stage=stage).first()
    # DNS first, so users stop being sent here before anything stops answering.
    if stage.domain and stage.hosted_zone_id:
        if route53.delete_latency_record(
            zone_id=stage.hosted_zone_id, name=stage.domain, set_identifier=run.code, role_arn=run.role
        ):
            done.append(f"latency record of {stage.domain}")
    check_ids = {placement.health_check_id} if placement is not None and placement.health_check_id else set()
    check_ids |= set(
        RegionDeployment.objects.filter(deployment__stage=stage, region=run.region)
        .exclude(dns_record={})
        .values_list("dns_record__health_check_id", flat=True)
    ) - {None, ""}
    for check_id in sorted(check_ids):
        route53.delete_health_check(check_id, role_arn=run.role)
        done.append(f"health check {check_id}")
    if stage.domain:
        if apigateway.delete_custom_domain(run.code, stage.domain, role_arn=run.role):
            done.append(f"custom domain {stage.domain}")
        if not (stage.certificate_arns or {}).get(run.code):  # (a certificate of its own is kept)
            for arn in acm.delete_managed_certificates(run.code, stage.domain, role_arn=run.role):
                done.append(f"certificate {arn}")
    if api_id and apigateway.delete_stage(run.code, api_id, stage.name, role_arn=run.role):
        done.append(f"API stage {stage.name}")
    if lambda_.delete_alias(run.code, run.function, stage.name, role_arn=run.role):
        done.append(f"alias {stage.name}")
    done += _delete_versions_of(run, stage)
    if placement is not None:
        # Not live here any more: nothing probes it, nothing counts it as serving.
        StagePlacement.objects.filter(pk=placement.pk).delete()
    return done


def _delete_versions_of(run: RegionRun, stage: Stage) -> list[str]:
    """The versions the stage's deployments published here that no remaining alias needs."""
    if lambda_.get_function(run.code, run.function, role_arn=run.role) is None:
        return []
    published = set(
        RegionDeployment.objects.filter(deployment__stage=stage, region=run.region)
        .exclude(Q(version="") | Q(deployment__kind=DeploymentKind.ROLLBACK))
        .values_list("version", flat=True)
    )
    needed: set[str] = set()
    for alias in lambda_.list_aliases(run.code, run.function, role_arn=run.role):
        needed.add(alias.version)
        needed.update(alias.weights)
    gone = sorted((v for v in published - needed if v.isdigit()), key=int)
    for version in gone:
        lambda_.delete_version(run.code, run.function, version, role_arn=run.role)
    return [f"version(s) {', '.join(gone)}"] if gone else []


def complete(deployment_id: int) -> None:
    """A teardown that succeeded in every region: the stage (or the app) is deleted, and the
    audit log says so. A failed one leaves everything in place, marked, for a retry."""
    with transaction.atomic():
        # Locked: of two regions ending at once, one deletes; the other then finds nothing.
        deployment = (
            Deployment.objects.select_for_update(of=("self",))
            .filter(pk=deployment_id, kind=DeploymentKind.TEARDOWN, status=DeploymentStatus.SUCCEEDED)
            .select_related("app__team", "stage")
            .first()
        )
        if deployment is None:  # (not a finished teardown, or its stage is already deleted)
            return
        if (
            RegionDeployment.objects.filter(deployment=deployment)
            .exclude(status=RegionStatus.SUCCEEDED)
            .exists()
        ):
            return
        app = deployment.app
        changes = {"teardown_deployment": deployment.pk, "requested_by": deployment.triggered_by}
        if deployment.whole_app:
            audit.record(
                team=app.team, principal=None, action="app.delete", obj=app,
                changes={"slug": app.slug, **changes},
            )  # fmt: skip
            delete_app_rows(app)
        else:
            stage = deployment.stage
            audit.record(
                team=app.team, principal=None, action="stage.delete", obj=stage,
                changes={"name": stage.name, **changes},
            )  # fmt: skip
            delete_stage_rows(stage)
