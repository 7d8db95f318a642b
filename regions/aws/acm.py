"""ACM certificates for regional custom domains (API Gateway takes a certificate from its own region)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from .session import aws_errors, client

_USABLE = ("ISSUED", "PENDING_VALIDATION")
# Certificates this control plane requested carry this tag: only those are ever deleted by it.
MANAGED_TAG = {"Key": "managed-by", "Value": "controlplane"}


def covers(name: str, domain: str) -> bool:
    """True when certificate name ``name`` (maybe ``*.example.com``) covers ``domain``."""
    name, domain = name.lower().rstrip("."), domain.lower().rstrip(".")
    if name == domain:
        return True
    if name.startswith("*."):
        head, _, rest = domain.partition(".")
        return bool(head) and rest == name[2:]
    return False


@aws_errors
def find_certificate(region: str, domain: str, *, role_arn: str = "") -> str | None:
    """The ARN of an issued (preferred) or pending-validation certificate in ``region`` covering
    ``domain`` (exactly, as an alternative name, or by wildcard), or None."""
    acm = client("acm", region, role_arn=role_arn)
    pages = acm.get_paginator("list_certificates").paginate(CertificateStatuses=list(_USABLE))
    matches = []
    for page in pages:
        for summary in page.get("CertificateSummaryList", []):
            names = [summary.get("DomainName", "")]
            names += summary.get("SubjectAlternativeNameSummaries") or []
            if any(covers(name, domain) for name in names):
                matches.append(summary)
    if not matches:
        return None
    matches.sort(key=lambda s: _USABLE.index(s.get("Status", "PENDING_VALIDATION")))
    return matches[0]["CertificateArn"]


@aws_errors
def request_certificate(region: str, domain: str, *, role_arn: str = "") -> str:
    """Request a DNS-validated certificate for ``domain`` in ``region`` and return its ARN. Repeating
    the request within the hour returns the same certificate (idempotency token)."""
    token = hashlib.sha256(domain.lower().encode()).hexdigest()[:32]
    response = client("acm", region, role_arn=role_arn).request_certificate(
        DomainName=domain, ValidationMethod="DNS", IdempotencyToken=token, Tags=[MANAGED_TAG]
    )
    return response["CertificateArn"]


@aws_errors
def certificate_status(region: str, certificate_arn: str, *, role_arn: str = "") -> str:
    """``PENDING_VALIDATION``, ``ISSUED``, ``FAILED``, ... of the certificate."""
    acm = client("acm", region, role_arn=role_arn)
    return acm.describe_certificate(CertificateArn=certificate_arn)["Certificate"]["Status"]


def _validation_records(certificate: dict) -> list[dict[str, str]]:
    """The distinct validation CNAMEs of a described certificate (one per name, whatever the
    number of domains that share it)."""
    records: list[dict[str, str]] = []
    for option in certificate.get("DomainValidationOptions") or []:
        record = option.get("ResourceRecord")
        if record:
            entry = {"name": record["Name"], "type": record["Type"], "value": record["Value"]}
            if entry not in records:
                records.append(entry)
    return records


def validation_records(region: str, certificate_arn: str, *, role_arn: str = "") -> list[dict[str, str]]:
    """The DNS records (``{"name", "type", "value"}``) that prove control of the certificate's
    domains; ACM fills them in a few seconds after the request, so this may be empty at first."""
    return describe(region, certificate_arn, role_arn=role_arn).records


@dataclass(frozen=True)
class Certificate:
    arn: str
    status: str  # PENDING_VALIDATION, ISSUED, FAILED, VALIDATION_TIMED_OUT, ...
    records: list[dict[str, str]]  # the validation CNAMEs ({"name", "type", "value"}), maybe empty
    created_at: datetime | None
    reason: str = ""  # why it failed, when it did


@aws_errors
def describe(region: str, certificate_arn: str, *, role_arn: str = "") -> Certificate:
    """The certificate's status, validation records and creation time, from one call."""
    acm = client("acm", region, role_arn=role_arn)
    certificate = acm.describe_certificate(CertificateArn=certificate_arn)["Certificate"]
    records = _validation_records(certificate)
    return Certificate(
        arn=certificate_arn,
        status=certificate.get("Status", ""),
        records=records,
        created_at=certificate.get("CreatedAt"),
        reason=certificate.get("FailureReason", ""),
    )


@aws_errors
def delete_managed_certificates(region: str, domain: str, *, role_arn: str = "") -> list[str]:
    """Delete the certificates for exactly ``domain`` that this control plane requested (tagged
    ``MANAGED_TAG``) and nothing uses any more; returns their ARNs. A certificate someone else
    made, or one still in use, is left alone."""
    acm = client("acm", region, role_arn=role_arn)
    deleted = []
    for page in acm.get_paginator("list_certificates").paginate():
        for summary in page.get("CertificateSummaryList", []):
            if summary.get("DomainName", "").lower().rstrip(".") != domain.lower().rstrip("."):
                continue
            arn = summary["CertificateArn"]
            tags = acm.list_tags_for_certificate(CertificateArn=arn).get("Tags", [])
            if MANAGED_TAG not in tags:
                continue
            if acm.describe_certificate(CertificateArn=arn)["Certificate"].get("InUseBy"):
                continue
            try:
                acm.delete_certificate(CertificateArn=arn)
            except acm.exceptions.ResourceNotFoundException:
                continue
            deleted.append(arn)
    return deleted
