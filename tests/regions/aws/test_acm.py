from __future__ import annotations

import pytest

from regions.aws import acm
from tests.support.certs import self_signed_pem

from .conftest import REGION, plain


def _import_issued(domain: str) -> str:
    """An ISSUED certificate for ``domain`` (imported, as ACM would hold one that passed validation)."""
    cert, key = self_signed_pem(domain, days=90)
    return plain("acm").import_certificate(Certificate=cert, PrivateKey=key)["CertificateArn"]


def test_requesting_twice_gives_one_dns_validated_certificate(fake_aws):
    first = acm.request_certificate(REGION, "api.example.com")
    assert acm.request_certificate(REGION, "api.example.com") == first
    summaries = plain("acm").list_certificates()["CertificateSummaryList"]
    assert [s["CertificateArn"] for s in summaries] == [first]
    detail = plain("acm").describe_certificate(CertificateArn=first)["Certificate"]
    assert detail["DomainValidationOptions"][0]["ValidationMethod"] == "DNS"
    assert acm.certificate_status(REGION, first) == "PENDING_VALIDATION"


def test_pending_certificate_is_found_for_its_domain_only(fake_aws):
    arn = acm.request_certificate(REGION, "api.example.com")
    assert acm.find_certificate(REGION, "api.example.com") == arn
    assert acm.find_certificate(REGION, "API.example.com.") == arn
    assert acm.find_certificate(REGION, "www.example.com") is None
    assert acm.find_certificate("us-west-2", "api.example.com") is None


def test_issued_certificate_is_preferred_and_wildcards_cover_one_label(fake_aws):
    acm.request_certificate(REGION, "api.example.com")
    issued = _import_issued("*.example.com")
    assert acm.find_certificate(REGION, "api.example.com") == issued
    assert acm.find_certificate(REGION, "deep.api.example.com") is None


def test_validation_records_name_the_cname_to_create(fake_aws):
    arn = acm.request_certificate(REGION, "api.example.com")
    records = acm.validation_records(REGION, arn)
    assert len(records) == 1
    assert records[0]["type"] == "CNAME"
    assert records[0]["name"].endswith(".api.example.com.")


@pytest.mark.parametrize(
    ("name", "domain", "covered"),
    [
        ("api.example.com", "api.example.com", True),
        ("*.example.com", "api.example.com", True),
        ("*.example.com", "example.com", False),
        ("*.example.com", "a.b.example.com", False),
        ("example.com", "api.example.com", False),
    ],
)
def test_certificate_names_cover_domains_as_tls_does(name, domain, covered):
    assert acm.covers(name, domain) is covered
