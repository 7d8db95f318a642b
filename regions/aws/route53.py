"""Route 53 health checks and latency records (Route 53 is global; its endpoint is in us-east-1)."""

from __future__ import annotations

from botocore.exceptions import ClientError
from django.conf import settings

from . import ratelimit
from .session import AwsError, aws_errors, client, register_cache

ROUTE53_REGION = "us-east-1"
RECORD_TTL = 60
# Route 53 calls an endpoint healthy when more than 18% of its checkers see it healthy.
HEALTHY_SHARE = 0.18

_UPDATABLE = ("FullyQualifiedDomainName", "ResourcePath", "Port", "SearchString", "FailureThreshold")
_check_ids: dict[tuple[str, str], str] = register_cache({})  # (role, caller reference) -> id


def _r53(role_arn: str):
    """The Route 53 client; every request it sends (retries included) first takes a token of the
    account's bucket, shared by every worker (``ROUTE53_REQUESTS_PER_SECOND``; see ratelimit)."""
    r53 = client("route53", ROUTE53_REGION, role_arn=role_arn)
    if not getattr(r53, "_controlplane_limited", False):
        bucket = f"route53:{role_arn or 'default'}"

        def limit(**kwargs):
            rate = float(getattr(settings, "ROUTE53_REQUESTS_PER_SECOND", 4.5))
            ratelimit.acquire(bucket, rate=rate, burst=float(getattr(settings, "ROUTE53_BURST", 4)))

        r53.meta.events.register("before-send.route53", limit)
        r53._controlplane_limited = True
    return r53


def _zone(zone_id: str) -> str:
    return zone_id.rsplit("/", 1)[-1]


def _fqdn(name: str) -> str:
    # Route 53 answers names with a trailing dot and "*" escaped as \052.
    return name.replace("\\052", "*").rstrip(".").lower() + "."


def _wanted_config(fqdn: str, path: str, search_string: str) -> dict:
    config = {
        "Type": "HTTPS_STR_MATCH" if search_string else "HTTPS",
        "FullyQualifiedDomainName": fqdn,
        "ResourcePath": path if path.startswith("/") else f"/{path}",
        "Port": 443,
        "RequestInterval": 30,
        "FailureThreshold": 3,
        "EnableSNI": True,
    }
    if search_string:
        config["SearchString"] = search_string
    return config


def _find_health_check(r53, role_arn: str, caller_reference: str) -> dict | None:
    known = _check_ids.get((role_arn, caller_reference))
    if known:
        try:
            return r53.get_health_check(HealthCheckId=known)["HealthCheck"]
        except r53.exceptions.NoSuchHealthCheck:
            _check_ids.pop((role_arn, caller_reference), None)
    for page in r53.get_paginator("list_health_checks").paginate():
        for check in page.get("HealthChecks", []):
            if check.get("CallerReference") == caller_reference:
                return check
    return None


@aws_errors
def ensure_health_check(
    *,
    fqdn: str,
    path: str,
    region: str,
    caller_reference: str,
    search_string: str = "",
    role_arn: str = "",
    known_id: str = "",
) -> str:
    """The id of the HTTPS health check (HTTPS_STR_MATCH with ``search_string``) of
    ``https://{fqdn}{path}`` known by ``caller_reference``: created once, then kept up to date.

    Route 53 allows five requests a second for the whole account, so a check costs one request
    where it can: ``known_id`` (the id recorded at the last deploy) is read and updated if
    needed; without one the check is created at once (Route 53 answers a repeated
    ``CallerReference`` with the same settings with the existing check), and only a refusal of
    the reference leads to a search. ``region`` is the endpoint's region (in errors).
    Route 53 cannot change a check's type, nor reuse a caller reference, so a reference first
    used with a search string must keep one (and the other way round): AwsError
    ``HealthCheckTypeChanged`` otherwise."""
    r53 = _r53(role_arn)
    wanted = _wanted_config(fqdn, path, search_string)
    if known_id and (role_arn, caller_reference) not in _check_ids:
        _check_ids[(role_arn, caller_reference)] = known_id
    check = None
    if (role_arn, caller_reference) in _check_ids:
        check = _find_health_check(r53, role_arn, caller_reference)
    if check is None:
        try:
            created = r53.create_health_check(CallerReference=caller_reference, HealthCheckConfig=wanted)
            check = created["HealthCheck"]
        except r53.exceptions.HealthCheckAlreadyExists:
            check = _find_health_check(r53, role_arn, caller_reference)
            if check is None:
                raise
    have = check.get("HealthCheckConfig") or {}
    if have.get("Type") != wanted["Type"]:
        raise AwsError(
            "HealthCheckTypeChanged",
            f"health check {check['Id']} ({caller_reference}) is {have.get('Type')}, "
            f"not {wanted['Type']}; use another caller reference",
            operation="UpdateHealthCheck",
            retryable=False,
            region=region,
        )
    changes = {key: wanted[key] for key in _UPDATABLE if key in wanted and have.get(key) != wanted[key]}
    if changes:
        version = check.get("HealthCheckVersion")
        r53.update_health_check(
            HealthCheckId=check["Id"], **({"HealthCheckVersion": version} if version else {}), **changes
        )
    _check_ids[(role_arn, caller_reference)] = check["Id"]
    return check["Id"]


@aws_errors
def health_check_status(health_check_id: str, *, role_arn: str = "") -> str:
    """``Healthy``/``Unhealthy`` as Route 53's checkers last saw the endpoint, ``Unknown`` before any
    observation (or where the API is not implemented, as in some emulators). Raises AwsError
    ``NoSuchHealthCheck`` when the check is gone."""
    r53 = _r53(role_arn)
    try:
        response = r53.get_health_check_status(HealthCheckId=health_check_id)
    except NotImplementedError:  # an in-process emulator without this API
        return "Unknown"
    except ClientError as exc:
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status == 501 or "not been implemented" in str(exc.response.get("Error", {}).get("Message", "")):
            return "Unknown"
        raise
    observations = response.get("HealthCheckObservations") or []
    reports = [(o.get("StatusReport") or {}).get("Status", "") for o in observations]
    if not reports:
        return "Unknown"
    healthy = sum(1 for report in reports if report.startswith("Success"))
    return "Healthy" if healthy / len(reports) > HEALTHY_SHARE else "Unhealthy"


@aws_errors
def delete_health_check(health_check_id: str, *, role_arn: str = "") -> None:
    """Delete the health check (already gone is fine). Raises AwsError ``HealthCheckInUse`` while a
    record still refers to it."""
    r53 = _r53(role_arn)
    try:
        r53.delete_health_check(HealthCheckId=health_check_id)
    except r53.exceptions.NoSuchHealthCheck:
        pass
    for key, value in list(_check_ids.items()):
        if value == health_check_id:
            _check_ids.pop(key, None)


def _record_sets(r53, zone_id: str, name: str) -> list[dict]:
    """Every record set named ``name`` in the zone (they sort together, so stop at the first other)."""
    fqdn = _fqdn(name)
    found: list[dict] = []
    pages = r53.get_paginator("list_resource_record_sets").paginate(
        HostedZoneId=_zone(zone_id), StartRecordName=fqdn
    )
    for page in pages:
        for record in page.get("ResourceRecordSets", []):
            if _fqdn(record["Name"]) != fqdn:
                return found
            found.append(record)
    return found


def _latency_view(record: dict) -> dict:
    alias = record.get("AliasTarget") or {}
    values = [r["Value"] for r in record.get("ResourceRecords") or []]
    return {
        "name": _fqdn(record["Name"]),
        "set_identifier": record.get("SetIdentifier", ""),
        "region": record.get("Region", ""),
        "health_check_id": record.get("HealthCheckId", ""),
        "type": record["Type"],
        "target": (alias.get("DNSName") or (values[0] if values else "")).rstrip(".").lower(),
        "target_zone_id": alias.get("HostedZoneId", ""),
        "ttl": record.get("TTL"),
    }


@aws_errors
def list_latency_records(zone_id: str, name: str, *, role_arn: str = "") -> list[dict]:
    """The latency records of ``name``: dicts with ``name``, ``set_identifier``, ``region``,
    ``health_check_id``, ``type`` (A for an alias, CNAME), ``target``, ``target_zone_id``, ``ttl``."""
    records = _record_sets(_r53(role_arn), zone_id, name)
    return [_latency_view(record) for record in records if record.get("Region")]


def _wanted_record(
    *, name: str, region: str, set_identifier: str, target: str, target_zone_id: str, health_check_id: str
) -> dict:
    record: dict = {"Name": _fqdn(name), "SetIdentifier": set_identifier, "Region": region}
    if target_zone_id:
        # Route 53 follows the health check named here; evaluating the target's health too would add
        # nothing for an API Gateway domain.
        record["Type"] = "A"
        record["AliasTarget"] = {
            "HostedZoneId": target_zone_id,
            "DNSName": target,
            "EvaluateTargetHealth": False,
        }
    else:
        record["Type"] = "CNAME"
        record["TTL"] = RECORD_TTL
        record["ResourceRecords"] = [{"Value": target}]
    if health_check_id:
        record["HealthCheckId"] = health_check_id
    return record


@aws_errors
def upsert_latency_record(
    *,
    zone_id: str,
    name: str,
    region: str,
    set_identifier: str,
    target: str,
    target_zone_id: str = "",
    health_check_id: str,
    role_arn: str = "",
) -> bool:
    """The latency record of ``name`` for ``set_identifier``: an A alias to ``target`` in
    ``target_zone_id`` (an API Gateway regional domain), or a CNAME (TTL 60) to ``target`` when there
    is no target zone, answered for ``region`` while ``health_check_id`` passes. Returns True when a
    change was sent (nothing is sent when the record is already so)."""
    r53 = _r53(role_arn)
    wanted = _wanted_record(
        name=name,
        region=region,
        set_identifier=set_identifier,
        target=target,
        target_zone_id=target_zone_id,
        health_check_id=health_check_id,
    )
    existing = next(
        (r for r in _record_sets(r53, zone_id, name) if r.get("SetIdentifier") == set_identifier), None
    )
    if existing is not None and _latency_view(existing) == _latency_view(wanted):
        return False
    if existing is not None and existing["Type"] != wanted["Type"]:
        # A record set is keyed by name, type and set identifier: switching between alias and CNAME
        # is a delete and a create, in one atomic batch.
        changes = [
            {"Action": "DELETE", "ResourceRecordSet": existing},
            {"Action": "CREATE", "ResourceRecordSet": wanted},
        ]
    else:
        changes = [{"Action": "UPSERT", "ResourceRecordSet": wanted}]
    r53.change_resource_record_sets(
        HostedZoneId=_zone(zone_id),
        ChangeBatch={"Comment": f"controlplane: {set_identifier}", "Changes": changes},
    )
    return True


@aws_errors
def upsert_latency_records(*, zone_id: str, name: str, records: list[dict], role_arn: str = "") -> int:
    """Every region's latency record of ``name`` in one change batch: ``records`` are dicts with
    ``region``, ``set_identifier``, ``target``, ``target_zone_id`` and ``health_check_id`` (as
    :func:`upsert_latency_record` takes them). The record sets of ``name`` are read once; only
    those that differ are sent, in one ``ChangeResourceRecordSets``. Returns how many changed.
    Route 53 applies a batch atomically and counts it as one request against the account's
    five a second."""
    r53 = _r53(role_arn)
    existing = {r.get("SetIdentifier"): r for r in _record_sets(r53, zone_id, name)}
    changes = []
    for spec in records:
        wanted = _wanted_record(name=name, **spec)
        have = existing.get(spec["set_identifier"])
        if have is not None and _latency_view(have) == _latency_view(wanted):
            continue
        if have is not None and have["Type"] != wanted["Type"]:
            changes.append({"Action": "DELETE", "ResourceRecordSet": have})
            changes.append({"Action": "CREATE", "ResourceRecordSet": wanted})
        else:
            changes.append({"Action": "UPSERT", "ResourceRecordSet": wanted})
    if changes:
        r53.change_resource_record_sets(
            HostedZoneId=_zone(zone_id),
            ChangeBatch={
                "Comment": f"controlplane: {_fqdn(name)} in {len(records)} regions",
                "Changes": changes,
            },
        )
    return sum(1 for c in changes if c["Action"] != "DELETE")


@aws_errors
def delete_latency_record(*, zone_id: str, name: str, set_identifier: str, role_arn: str = "") -> bool:
    """Delete the latency record of ``name`` for ``set_identifier``. Returns False when there was none."""
    r53 = _r53(role_arn)
    existing = next(
        (r for r in _record_sets(r53, zone_id, name) if r.get("SetIdentifier") == set_identifier), None
    )
    if existing is None:
        return False
    r53.change_resource_record_sets(
        HostedZoneId=_zone(zone_id),
        ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": existing}]},
    )
    return True


@aws_errors
def find_hosted_zone(domain: str, *, role_arn: str = "") -> str | None:
    """The id of the public hosted zone that holds ``domain`` (the longest matching zone), or None."""
    fqdn = _fqdn(domain)
    best: tuple[int, str] | None = None
    for page in _r53(role_arn).get_paginator("list_hosted_zones").paginate():
        for zone in page.get("HostedZones", []):
            if (zone.get("Config") or {}).get("PrivateZone"):
                continue
            zone_name = _fqdn(zone["Name"])
            if (fqdn == zone_name or fqdn.endswith("." + zone_name)) and (
                best is None or len(zone_name) > best[0]
            ):
                best = (len(zone_name), _zone(zone["Id"]))
    return best[1] if best else None


@aws_errors
def upsert_record(
    *, zone_id: str, name: str, type: str, value: str, ttl: int = 300, role_arn: str = ""
) -> None:
    """A plain record (e.g. an ACM validation CNAME) ``name`` → ``value``."""
    _r53(role_arn).change_resource_record_sets(
        HostedZoneId=_zone(zone_id),
        ChangeBatch={
            "Changes": [
                {
                    "Action": "UPSERT",
                    "ResourceRecordSet": {
                        "Name": _fqdn(name),
                        "Type": type,
                        "TTL": ttl,
                        "ResourceRecords": [{"Value": value}],
                    },
                }
            ]
        },
    )
