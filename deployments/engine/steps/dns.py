"""The Route 53 health check of a region, for a stage with a domain and a hosted zone, and the
latency records of the regions, written together once their wave is done (:func:`publish`).

Route 53 allows five requests a second for the whole account, all regions together (and every
request takes a token of the account's bucket, see ``regions.aws.ratelimit``). A region costs
one request here (its health check: read by the id the last deploy recorded, or created), and
the latency records of every region of a wave go in one change batch: a 16-region first deploy
makes 16 + 3 Route 53 requests instead of four per region. A region's record is written once
it passed its own checks, so the domain never sends users to a region that failed them."""

from __future__ import annotations

from collections import defaultdict

from regions.aws import apigateway, route53
from regions.aws.session import AwsError
from regions.models import StagePlacement

from ...choices import EventLevel, RegionStatus
from ...events import log_event
from ...models import Deployment, RegionDeployment
from ..context import RegionRun


def applies(run: RegionRun) -> bool:
    return bool(run.stage.domain and run.stage.hosted_zone_id)


def run(run: RegionRun) -> str:
    host = f"{run.api_id}.execute-api.{run.code}.{apigateway._dns_suffix(run.code)}"
    known = (
        StagePlacement.objects.filter(placement_id=run.placement_id(), stage=run.stage)
        .values_list("health_check_id", flat=True)
        .first()
    )
    run.health_check_id = route53.ensure_health_check(
        fqdn=host, path=f"/{run.stage.name}{run.config['health_path']}", region=run.code,
        caller_reference=f"cp-{run.app.pk}-{run.stage.pk}-{run.code}",
        search_string=run.config.get("health_expected_text", ""), role_arn=run.role, known_id=known or "",
    )  # fmt: skip
    target, zone = run.regional_domain or (host, "")
    record = {"target": target, "target_zone_id": zone, "health_check_id": run.health_check_id}
    if run.rd.dns_record != record:
        run.save(dns_record=record)
    return (
        f"Route 53 health check {run.health_check_id}; the latency record of {run.stage.domain} "
        f"({run.code}) is written with the other regions' once the wave is done."
    )


def publish(deployment: Deployment) -> None:
    """The latency records of every region of ``deployment`` that succeeded, in one change batch
    per account (role): only the records that differ from Route 53's are sent."""
    stage = deployment.stage
    if not (stage.domain and stage.hosted_zone_id):
        return
    rows = list(
        RegionDeployment.objects.filter(deployment=deployment, status=RegionStatus.SUCCEEDED)
        .exclude(dns_record={})
        .select_related("region")
    )
    by_role: dict[str, list[dict]] = defaultdict(list)
    for rd in rows:
        by_role[rd.region.role_arn].append(
            {"region": rd.region.code, "set_identifier": rd.region.code, **rd.dns_record}
        )
    for role, records in by_role.items():
        regions = ", ".join(r["region"] for r in records)
        try:
            changed = route53.upsert_latency_records(
                zone_id=stage.hosted_zone_id, name=stage.domain, records=records, role_arn=role
            )
        except AwsError as err:
            log_event(
                deployment_id=deployment.pk, level=EventLevel.ERROR, step="dns",
                message=f"Route 53 latency records of {stage.domain} ({regions}) not written: "
                f"{err.code}: {err.message}. The regions serve their endpoints; the next deploy "
                "writes the records.",
            )  # fmt: skip
            continue
        log_event(
            deployment_id=deployment.pk, step="dns",
            message=f"Route 53 latency records of {stage.domain}: {changed} of {len(records)} "
            f"written in one change ({regions})." if changed else
            f"Route 53 latency records of {stage.domain} already up to date ({regions}).",
        )  # fmt: skip
