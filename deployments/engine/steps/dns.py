"""The Route 53 health check and latency record, for a stage with a domain and a hosted zone."""

from __future__ import annotations

from regions.aws import apigateway, route53

from ..context import RegionRun


def applies(run: RegionRun) -> bool:
    return bool(run.stage.domain and run.stage.hosted_zone_id)


def run(run: RegionRun) -> str:
    host = f"{run.api_id}.execute-api.{run.code}.{apigateway._dns_suffix(run.code)}"
    run.health_check_id = route53.ensure_health_check(
        fqdn=host, path=f"/{run.stage.name}{run.config['health_path']}", region=run.code,
        caller_reference=f"cp-{run.app.pk}-{run.stage.pk}-{run.code}",
        search_string=run.config.get("health_expected_text", ""), role_arn=run.role,
    )  # fmt: skip
    target, zone = run.regional_domain or (host, "")
    route53.upsert_latency_record(
        zone_id=run.stage.hosted_zone_id, name=run.stage.domain, region=run.code,
        set_identifier=run.code, target=target, target_zone_id=zone,
        health_check_id=run.health_check_id, role_arn=run.role,
    )  # fmt: skip
    return f"Route 53 latency record {run.stage.domain} ({run.code}) with health check {run.health_check_id}."
