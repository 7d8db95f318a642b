"""The regional REST API (``{proxy+}`` → the stage alias), and the stage's custom domain with its
certificate and base path mapping when it has one. Runs alongside the function steps.

A custom domain needs an ISSUED certificate in the region (API Gateway refuses one that is not).
A DNS-validated certificate is issued only once its validation CNAME resolves, so the record is
written into the stage's hosted zone (the record is the same for every region's certificate of
one name: one region writes it, see ``ratelimit.once``), and the region is parked until ACM
issues it: running and held, with no worker thread waiting (the canary's mechanism, see
``Park``); the resumed run finds the certificate issued and makes the domain and its mapping.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from regions.aws import acm, apigateway, ratelimit, route53
from regions.aws.session import account_id
from regions.models import AppRegion

from ..context import Park, RegionRun, StepFailed


def applies(run: RegionRun) -> bool:
    return True


def run(run: RegionRun) -> str:
    api = apigateway.ensure_lambda_api(
        run.code, name=run.function, function_name=run.function,
        account_id=account_id(run.code, role_arn=run.role), stage=run.stage.name,
        variables={"alias": run.stage.name}, role_arn=run.role,
    )  # fmt: skip
    run.api_id, run.endpoint = api.id, api.endpoint
    AppRegion.objects.filter(app=run.app, region=run.region).exclude(rest_api_id=api.id).update(
        rest_api_id=api.id
    )
    message = f"REST API {run.api_id} stage '{run.stage.name}' → alias {run.stage.name}: {run.endpoint}"
    if run.stage.domain:
        cert = issued_certificate(run)
        run.regional_domain = apigateway.ensure_custom_domain(
            run.code, domain=run.stage.domain, certificate_arn=cert, role_arn=run.role
        )
        apigateway.ensure_base_path_mapping(
            run.code, domain=run.stage.domain, rest_api_id=run.api_id, stage=run.stage.name, role_arn=run.role
        )
        message += f"; custom domain {run.stage.domain} → {run.regional_domain[0]}"
    return message


def issued_certificate(run: RegionRun) -> str:
    """The ARN of the region's ISSUED certificate for the stage's domain (the stage's own, an
    existing one, or one requested now). While it waits for validation, raises ``Park``; a
    certificate that failed, or that is still not issued after ``ACM_VALIDATION_TIMEOUT``, fails
    the region with what to fix."""
    domain = run.stage.domain
    arn = (run.stage.certificate_arns or {}).get(run.code) or acm.find_certificate(
        run.code, domain, role_arn=run.role
    )
    if not arn:
        arn = acm.request_certificate(run.code, domain, role_arn=run.role)
    cert = acm.describe(run.code, arn, role_arn=run.role)
    if cert.status == "ISSUED":
        return arn
    if cert.status != "PENDING_VALIDATION":
        raise StepFailed(
            f"Certificate {arn} for {domain} is {cert.status}"
            + (f" ({cert.reason})" if cert.reason else "")
            + ": request a new one (or set the stage's certificate) and deploy again.",
            code="certificate_failed",
        )
    now = timezone.now()
    age = (now - cert.created_at).total_seconds() if cert.created_at else 0.0
    zone = run.stage.hosted_zone_id
    records = ", ".join(f"{r['name']} CNAME {r['value']}" for r in cert.records) or "(not given by ACM yet)"
    if age > settings.ACM_VALIDATION_TIMEOUT:
        where = f"in hosted zone {zone}" if zone else "in the DNS of the domain"
        raise StepFailed(
            f"Certificate {arn} for {domain} is still pending validation after {age / 60:.0f} min: "
            f"check that {records} exists {where} and that the zone is the one the domain's "
            "registrar delegates to.",
            code="certificate_not_issued",
        )
    written = _write_validation_records(run, cert, zone) if zone else []
    wait = min(settings.ACM_POLL_MAX, max(settings.ACM_POLL_MIN, age / 2))
    until = now + timedelta(seconds=wait)
    if written:
        note = f"validation record {', '.join(written)} written to hosted zone {zone}"
    elif zone:
        note = "its validation record is in the stage's hosted zone"
    else:
        note = f"the stage has no hosted zone: add {records} to the domain's DNS"
    raise Park(
        until,
        step="api",
        message=f"Certificate for {domain} pending validation ({note}); the region waits for ACM to "
        f"issue it, checking again at {until:%H:%M:%S} UTC, and no worker waits for it.",
    )


def _write_validation_records(run: RegionRun, cert: acm.Certificate, zone: str) -> list[str]:
    """Write the certificate's validation CNAMEs into ``zone``; each once for every region (the
    record of one name is the same in every region). Returns the names written."""
    written = []
    for record in cert.records:
        key = f"acm-validation:{zone}:{record['name']}:{record['value']}".lower()
        if not ratelimit.once(key, ttl=max(60.0, 4 * settings.ACM_POLL_MAX)):
            continue
        try:
            route53.upsert_record(
                zone_id=zone, name=record["name"], type=record["type"], value=record["value"],
                ttl=300, role_arn=run.role,
            )  # fmt: skip
        except Exception:
            ratelimit.forget(key)  # another region writes it at its next look
            raise
        written.append(record["name"].rstrip("."))
    return written
