"""Readiness of an AWS region for its first deploy: each check one line, ok or what to fix.

Plain values in (the region, the role to assume, the bucket, the execution role, the hosted
zones), :class:`Check` rows out; :func:`regions.readiness.check_region` gathers the values from
the database. Every check catches its own errors: one failing check never hides the others.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from urllib.parse import unquote

from .session import AWS_EXCEPTIONS, AwsError, client, translate

# Service Quotas codes (https://docs.aws.amazon.com/general/latest/gr/acm.html,
# https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html).
ACM_CERTIFICATES_QUOTA = ("acm", "L-F141DD1D")
ACM_DEFAULT_QUOTA = 2500
LAMBDA_CONCURRENCY_QUOTA = ("lambda", "L-B99A9384")
# Below this, a region runs out of concurrency under modest load (new accounts start at 10).
MIN_CONCURRENCY = 100
DEFAULT_EXECUTION_ROLE = "controlplane-lambda"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str  # what was found
    fix: str = ""  # what to do, when not ok

    def as_dict(self) -> dict:
        return asdict(self)


def _error(exc: BaseException, region: str) -> AwsError:
    return exc if isinstance(exc, AwsError) else translate(exc, region=region)


def _run(name: str, region: str, body: Callable[[], Check], fix: Callable[[AwsError], str]) -> Check:
    try:
        return body()
    except (AwsError, *AWS_EXCEPTIONS) as exc:
        err = _error(exc, region)
        return Check(name, False, f"{err.code}: {err.message}", fix(err))


def _denied(err: AwsError) -> bool:
    return "denied" in err.code.lower() or err.code in ("UnauthorizedOperation", "AuthorizationError")


def check_region(
    region: str,
    *,
    role_arn: str = "",
    bucket: str,
    execution_role_arn: str = "",
    hosted_zone_ids: list[str] | None = None,
) -> list[Check]:
    """Every check of ``region``: credentials, the role to assume, the artifact bucket, the Lambda
    execution role, access to the hosted zones, the ACM certificate quota, Lambda concurrency."""
    checks = [_credentials(region)]
    if role_arn:
        checks.append(_assumed_role(region, role_arn))
        if not checks[-1].ok:
            return checks  # every other call acts as the role
    checks.append(_bucket(region, bucket, role_arn))
    checks.append(_execution_role(region, execution_role_arn, role_arn))
    for zone in hosted_zone_ids or []:
        checks.append(_zone(region, zone, role_arn))
    checks.append(_acm_quota(region, role_arn))
    checks.append(_lambda_concurrency(region, role_arn))
    return checks


def _credentials(region: str) -> Check:
    def body():
        who = client("sts", region).get_caller_identity()
        return Check("credentials", True, f"account {who['Account']} as {who['Arn']}")

    return _run(
        "credentials", region, body,
        lambda err: "Give the worker AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
        "or an instance or task role) that can call sts:GetCallerIdentity in this region.",
    )  # fmt: skip


def _assumed_role(region: str, role_arn: str) -> Check:
    def body():
        who = client("sts", region, role_arn=role_arn).get_caller_identity()
        return Check("role to assume", True, f"{role_arn} assumed: account {who['Account']}")

    return _run(
        "role to assume", region, body,
        lambda err: f"Let the control plane's principal assume {role_arn}: the role's trust policy must "
        "allow sts:AssumeRole from it, and the principal needs sts:AssumeRole on the role.",
    )  # fmt: skip


def _bucket(region: str, bucket: str, role_arn: str) -> Check:
    s3 = client("s3", region, role_arn=role_arn)
    try:
        s3.head_bucket(Bucket=bucket)
    except AWS_EXCEPTIONS as exc:
        err = _error(exc, region)
        if err.status == 404 or err.code in ("404", "NoSuchBucket", "NotFound"):
            return Check(
                "artifact bucket", True,
                f"s3://{bucket} does not exist yet; the first deploy creates it (needs s3:CreateBucket).",
            )  # fmt: skip
        if err.status == 403 or err.code in ("403", "Forbidden"):
            return Check(
                "artifact bucket", False, f"s3://{bucket}: access denied (or owned by another account)",
                f"Grant s3:ListBucket, s3:GetObject and s3:PutObject on {bucket}, or set the region's "
                "artifact_bucket to a bucket of this account.",
            )  # fmt: skip
        return Check(
            "artifact bucket", False, f"{err.code}: {err.message}", "Check the bucket and the region."
        )
    return Check("artifact bucket", True, f"s3://{bucket} is reachable")


def _execution_role(region: str, execution_role_arn: str, role_arn: str) -> Check:
    name = execution_role_arn.rsplit("/", 1)[-1] if execution_role_arn else DEFAULT_EXECUTION_ROLE
    iam = client("iam", "us-east-1", role_arn=role_arn)
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except AWS_EXCEPTIONS as exc:
        err = _error(exc, region)
        if err.code == "NoSuchEntity" and not execution_role_arn:
            return Check(
                "Lambda execution role", True,
                f"{name} does not exist yet; the first deploy creates it (needs iam:CreateRole, "
                "iam:AttachRolePolicy and iam:PassRole).",
            )  # fmt: skip
        if err.code == "NoSuchEntity":
            return Check(
                "Lambda execution role", False, f"{execution_role_arn} does not exist",
                "Create it with a trust policy for lambda.amazonaws.com, or unset AWS_LAMBDA_ROLE_ARN "
                "to let the control plane make one.",
            )  # fmt: skip
        return Check(
            "Lambda execution role", False, f"{err.code}: {err.message}",
            f"Grant iam:GetRole and iam:PassRole on {name}.",
        )  # fmt: skip
    document = role.get("AssumeRolePolicyDocument") or {}
    if isinstance(document, str):
        document = json.loads(unquote(document))
    services = []
    for statement in document.get("Statement", []):
        if statement.get("Effect") == "Allow" and "sts:AssumeRole" in str(statement.get("Action")):
            service = (statement.get("Principal") or {}).get("Service") or []
            services += [service] if isinstance(service, str) else service
    if "lambda.amazonaws.com" not in services:
        return Check(
            "Lambda execution role", False, f"{role['Arn']} does not trust lambda.amazonaws.com",
            "Add lambda.amazonaws.com as a principal allowed sts:AssumeRole in the role's trust policy.",
        )  # fmt: skip
    return Check("Lambda execution role", True, f"{role['Arn']} trusts lambda.amazonaws.com")


def _zone(region: str, zone_id: str, role_arn: str) -> Check:
    label = f"Route 53 zone {zone_id}"

    def body():
        zone = client("route53", "us-east-1", role_arn=role_arn).get_hosted_zone(Id=zone_id)["HostedZone"]
        if (zone.get("Config") or {}).get("PrivateZone"):
            return Check(label, False, f"{zone['Name']} is a private zone",
                         "Use the public hosted zone of the stage's domain.")  # fmt: skip
        return Check(label, True, f"{zone['Name'].rstrip('.')} is readable")

    return _run(
        label, region, body,
        lambda err: "Set the stage's hosted_zone_id to the zone of its domain"
        if err.code == "NoSuchHostedZone"
        else f"Grant route53:GetHostedZone, route53:ListResourceRecordSets, route53:ChangeResourceRecordSets "
        f"on hostedzone/{zone_id} and route53:CreateHealthCheck, route53:GetHealthCheck.",
    )  # fmt: skip


def _quota(region: str, role_arn: str, code: tuple[str, str]) -> float | None:
    """A quota's value from Service Quotas, or None when it cannot be read."""
    try:
        quota = client("service-quotas", region, role_arn=role_arn).get_service_quota(
            ServiceCode=code[0], QuotaCode=code[1]
        )
        return float(quota["Quota"]["Value"])
    except AWS_EXCEPTIONS:
        return None


def _acm_quota(region: str, role_arn: str) -> Check:
    def body():
        acm = client("acm", region, role_arn=role_arn)
        count = sum(
            len(p.get("CertificateSummaryList", []))
            for p in acm.get_paginator("list_certificates").paginate()
        )
        quota = _quota(region, role_arn, ACM_CERTIFICATES_QUOTA)
        limit = int(quota) if quota is not None else ACM_DEFAULT_QUOTA
        source = "" if quota is not None else " (default quota; Service Quotas could not be read)"
        if count >= limit:
            return Check(
                "ACM certificates", False, f"{count} of {limit}{source}: no room for a new certificate",
                "Delete unused certificates or request a higher 'ACM certificates' quota "
                f"({ACM_CERTIFICATES_QUOTA[1]}) in Service Quotas.",
            )  # fmt: skip
        return Check("ACM certificates", True, f"{count} of {limit}{source}")

    return _run(
        "ACM certificates",
        region,
        body,
        lambda err: "Grant acm:ListCertificates (and acm:RequestCertificate).",
    )


def _lambda_concurrency(region: str, role_arn: str) -> Check:
    def body():
        settings = client("lambda", region, role_arn=role_arn).get_account_settings()
        limit = int(settings["AccountLimit"]["ConcurrentExecutions"])
        unreserved = int(settings["AccountLimit"].get("UnreservedConcurrentExecutions", limit))
        if limit < MIN_CONCURRENCY:
            return Check(
                "Lambda concurrency", False, f"{limit} concurrent executions ({unreserved} unreserved)",
                f"Request a higher 'Concurrent executions' quota ({LAMBDA_CONCURRENCY_QUOTA[1]}) in Service "
                f"Quotas for this region: new accounts start at 10, {MIN_CONCURRENCY} or more is needed.",
            )  # fmt: skip
        return Check("Lambda concurrency", True, f"{limit} concurrent executions ({unreserved} unreserved)")

    return _run("Lambda concurrency", region, body, lambda err: "Grant lambda:GetAccountSettings.")
