"""``manage.py check_aws`` and ``GET /api/v1/regions/{code}/check/``: a line per check, ok or what
to fix, against the emulated AWS (strict mode: it answers the account's quotas)."""

from __future__ import annotations

import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from controlplane.choices import Role
from regions.aws.session import reset_clients
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.deploys import boto

pytestmark = pytest.mark.django_db

ROLE = "arn:aws:iam::123456789012:role/deployer"


@pytest.fixture
def ready(aws, team):
    """us-east-1 with a role to assume and an app whose production stage has a domain in a zone."""
    reset_clients()
    zone = boto("route53", "us-east-1", aws).create_hosted_zone(Name="example.com", CallerReference="r1")
    region = RegionFactory(code="us-east-1", role_arn=ROLE)
    app = AppFactory(team=team, slug="shop")
    AppRegionFactory(app=app, region=region)
    StageFactory(app=app, name="production", domain="shop.example.com",
                 hosted_zone_id=zone["HostedZone"]["Id"].split("/")[-1])  # fmt: skip
    return region


def run_check(*args) -> tuple[str, int]:
    from io import StringIO

    out = StringIO()
    try:
        call_command("check_aws", *args, stdout=out)
    except CommandError as exc:
        return out.getvalue() + str(exc), exc.returncode
    return out.getvalue(), 0


def test_a_ready_account_passes_every_check(ready):
    output, code = run_check("--region", "us-east-1")
    assert code == 0, output
    for name in ("credentials", "role to assume", "artifact bucket", "Lambda execution role",
                 "Route 53 zone", "ACM certificates", "Lambda concurrency"):  # fmt: skip
        assert f"ok   {name}" in output, output
    assert "FIX" not in output and "Every check passed." in output
    assert "does not exist yet; the first deploy creates it" in output  # bucket and role


def test_what_is_wrong_is_said_with_what_to_fix(ready, aws, settings):
    aws.strict.rules.lambda_concurrency = 10  # a new account
    iam = boto("iam", "us-east-1", aws)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "ec2.amazonaws.com"}}]}  # fmt: skip
    role = iam.create_role(RoleName="wrong-trust", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    settings.AWS_LAMBDA_ROLE_ARN = role
    stage = ready.placements.get().app.stages.get()
    stage.hosted_zone_id = "ZNOSUCHZONE"
    stage.save()

    output, code = run_check("--region", "us-east-1")
    assert code == 1
    assert "FIX  Lambda concurrency: 10 concurrent executions" in output
    assert "L-B99A9384" in output
    assert "FIX  Lambda execution role" in output and "lambda.amazonaws.com" in output
    assert "FIX  Route 53 zone ZNOSUCHZONE" in output and "hosted_zone_id" in output
    assert "ok   credentials" in output and "3 check(s) need fixing." in output


def test_an_unknown_region_is_named(ready):
    output, code = run_check("--region", "xx-nowhere-1")
    assert code == 1 and "xx-nowhere-1" in output


def test_admins_get_the_checks_over_the_api(ready, api_for, team, aws):
    aws.strict.rules.acm_certificate_quota = 0
    answer = api_for(team, role=Role.ADMIN).get("/api/v1/regions/us-east-1/check/")
    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["region"] == "us-east-1" and body["ok"] is False
    by_name = {c["name"]: c for c in body["checks"]}
    assert by_name["ACM certificates"]["ok"] is False
    assert "L-F141DD1D" in by_name["ACM certificates"]["fix"]
    assert by_name["credentials"] == {**by_name["credentials"], "ok": True, "fix": ""}


def test_the_check_is_for_admins_only(ready, api_for, team):
    answer = api_for(team, role=Role.DEPLOYER).get("/api/v1/regions/us-east-1/check/")
    assert answer.status_code == 403
    assert answer.json()["code"] == "permission_denied"
    missing = api_for(team, role=Role.ADMIN).get("/api/v1/regions/xx-nowhere-1/check/")
    assert missing.status_code == 404 and missing.json()["code"]
