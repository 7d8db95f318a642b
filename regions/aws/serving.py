"""Reads that serving deployed code needs (the local regions, ``regions/local/``): which function
and alias a REST API stage invokes, a published version's configuration and code, what a custom
domain maps to, and a Route 53 health check's settings. Plain values in, plain values out."""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse

from .lambda_ import get_alias
from .route53 import find_hosted_zone, list_latency_records
from .session import aws_errors, client, register_cache

# ``...:function:<name>:${stageVariables.alias}/invocations`` (or a fixed qualifier, or none).
_FUNCTION_IN_URI = re.compile(r":function:([A-Za-z0-9_-]+)(?::([^/]+))?/invocations$")


@dataclass(frozen=True)
class StageRoute:
    """What a REST API stage invokes: ``resources`` maps a resource path (``/``, ``/{proxy+}``)
    to ``(function name, qualifier)``; the qualifier may name a stage variable."""

    rest_api_id: str
    stage: str
    variables: dict[str, str]
    resources: dict[str, tuple[str, str]]


@dataclass(frozen=True)
class VersionCode:
    """A published version: its configuration and where its zip is."""

    function_name: str
    function_arn: str
    version: str
    runtime: str
    handler: str
    memory_mb: int
    timeout_s: int
    code_sha256: str
    env: dict[str, str] = field(default_factory=dict)
    code_location: str = ""


@dataclass(frozen=True)
class HealthCheck:
    """A Route 53 health check's target and cadence."""

    id: str
    type: str
    fqdn: str
    port: int
    path: str
    search_string: str
    interval_s: int
    failure_threshold: int


@aws_errors
def stage_route(region: str, rest_api_id: str, stage: str) -> StageRoute | None:
    """The functions a REST API stage's methods invoke, or None when the API or stage does not exist."""
    api = client("apigateway", region)
    try:
        found = api.get_stage(restApiId=rest_api_id, stageName=stage)
        pages = api.get_paginator("get_resources").paginate(restApiId=rest_api_id, embed=["methods"])
        items = [item for page in pages for item in page.get("items", [])]
    except api.exceptions.NotFoundException:
        return None
    resources: dict[str, tuple[str, str]] = {}
    for item in items:
        for method in (item.get("resourceMethods") or {}).values():
            uri = (method.get("methodIntegration") or {}).get("uri") or ""
            match = _FUNCTION_IN_URI.search(uri)
            if match:
                resources[item["path"]] = (match.group(1), match.group(2) or "")
    return StageRoute(rest_api_id, stage, dict(found.get("variables") or {}), resources)


@aws_errors
def version_code(region: str, function_name: str, version: str) -> VersionCode | None:
    """A published version's configuration and where its code is (``code_location``), or None when
    the function or version does not exist."""
    lam = client("lambda", region)
    try:
        found = lam.get_function(FunctionName=function_name, Qualifier=str(version))
    except lam.exceptions.ResourceNotFoundException:
        return None
    config = found["Configuration"]
    return VersionCode(
        function_name=config["FunctionName"],
        function_arn=":".join(config["FunctionArn"].split(":")[:7]),
        version=config.get("Version") or str(version),
        runtime=config.get("Runtime") or "",
        handler=config.get("Handler") or "",
        memory_mb=int(config.get("MemorySize") or 128),
        timeout_s=int(config.get("Timeout") or 3),
        code_sha256=config.get("CodeSha256") or "",
        env=dict((config.get("Environment") or {}).get("Variables") or {}),
        code_location=(found.get("Code") or {}).get("Location") or "",
    )


@aws_errors
def code_bytes(region: str, location: str, code_sha256: str) -> bytes:
    """The zip behind a version's ``Code.Location``: a presigned URL on AWS; on an emulator that
    names only the S3 key, the bucket of this region holding that key whose SHA-256 is the
    version's ``CodeSha256``. ``b""`` when it cannot be found."""
    return _code_bytes(region, location, code_sha256)


def _code_bytes(region: str, location: str, code_sha256: str) -> bytes:
    """The zip behind a ``Code.Location``: on an emulator that names only an S3 key (and, for an
    older version, may name the key of the newest code), the object of this region's buckets at
    that key, or next to it under the content-addressed name the deploy engine gives artifacts
    (``<sha256 hex>.zip``), whose SHA-256 is the version's ``CodeSha256``."""
    key = urlparse(location).path.lstrip("/")
    if not key:
        return b""
    keys = [key]
    if code_sha256:
        hex_digest = base64.b64decode(code_sha256).hex()
        keys.append(f"{key.rsplit('/', 1)[0]}/{hex_digest}.zip" if "/" in key else f"{hex_digest}.zip")
    s3 = client("s3", region)
    known = _code_buckets.get(region)
    buckets = [b["Name"] for b in s3.list_buckets().get("Buckets", [])] if not known else [known]
    for attempt in (buckets, [b["Name"] for b in s3.list_buckets().get("Buckets", [])] if known else []):
        for bucket in attempt:
            for candidate in keys:
                try:
                    body = s3.get_object(Bucket=bucket, Key=candidate)["Body"].read()
                except Exception:  # noqa: BLE001, S112 - no such key, or a bucket of another region
                    continue
                if not code_sha256 or base64.b64encode(hashlib.sha256(body).digest()).decode() == code_sha256:
                    _code_buckets[region] = bucket  # a region's artifacts are in one bucket: try it first
                    return body
    return b""


_code_buckets: dict[str, str] = register_cache({})


@aws_errors
def base_path_target(region: str, domain: str, base_path: str = "") -> tuple[str, str] | None:
    """``(rest api id, stage)`` a regional custom domain's base path maps to, or None."""
    api = client("apigateway", region)
    try:
        items = api.get_base_path_mappings(domainName=domain).get("items", [])
    except api.exceptions.NotFoundException:
        return None
    for item in items:
        if (item.get("basePath") or "(none)") in ((base_path or "(none)"), "(none)"):
            return item["restApiId"], item.get("stage") or ""
    return None


@aws_errors
def zone_for(domain: str) -> str | None:
    """The id of the public hosted zone holding ``domain`` (the longest match), or None."""
    return find_hosted_zone(domain)


@aws_errors
def latency_records(zone_id: str, domain: str) -> list[dict]:
    """The latency records of ``domain``: ``region``, ``set_identifier``, ``health_check_id``, ``target``."""
    return list_latency_records(zone_id, domain)


@aws_errors
def health_check(health_check_id: str) -> HealthCheck | None:
    """A health check's settings, or None when it is gone."""
    r53 = client("route53", "us-east-1")
    try:
        config = r53.get_health_check(HealthCheckId=health_check_id)["HealthCheck"]["HealthCheckConfig"]
    except r53.exceptions.NoSuchHealthCheck:
        return None
    kind = config.get("Type") or "HTTPS"
    return HealthCheck(
        id=health_check_id,
        type=kind,
        fqdn=(config.get("FullyQualifiedDomainName") or "").rstrip("."),
        port=int(config.get("Port") or (443 if kind.startswith("HTTPS") else 80)),
        path=config.get("ResourcePath") or "/",
        search_string=config.get("SearchString") or "",
        interval_s=int(config.get("RequestInterval") or 30),
        failure_threshold=int(config.get("FailureThreshold") or 3),
    )


@aws_errors
def alias_routing(region: str, function_name: str, alias: str) -> tuple[str, dict[str, float]] | None:
    """``(version, {other version: weight})`` of an alias, or None when it does not exist."""
    found = get_alias(region, function_name, alias)
    return (found.version, dict(found.weights)) if found else None


@aws_errors
def ensure_hosted_zone(name: str) -> str:
    """The id of the public hosted zone called ``name``, created when there is none (the local
    regions' demo makes one in the emulator)."""
    found = find_hosted_zone(name)
    if found:
        return found
    r53 = client("route53", "us-east-1")
    zone = r53.create_hosted_zone(Name=name, CallerReference=f"controlplane-demo-{name}")["HostedZone"]
    return zone["Id"].rsplit("/", 1)[-1]
