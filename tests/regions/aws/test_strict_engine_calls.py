"""The AWS calls of ``regions.aws`` against the strict emulator: Lambda calls wait for the state
they need, a role that Lambda cannot assume yet is waited for (and named, with what to check,
when it never can be), and Route 53 calls from many threads stay under the account's limit."""

from __future__ import annotations

import io
import json
import zipfile
from concurrent.futures import ThreadPoolExecutor

import pytest

from regions.aws import lambda_, route53
from regions.aws.session import AwsError, reset_clients
from tests.support.deploys import boto

REGION = "eu-west-1"


@pytest.fixture
def strict(aws, settings):
    settings.AWS_ENDPOINT_URL = aws.url
    reset_clients()
    yield aws.strict
    reset_clients()


def _role(aws, name="fn-role") -> str:
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "lambda.amazonaws.com"}}]}  # fmt: skip
    iam = boto("iam", "us-east-1", aws)
    return iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def _bucket(aws) -> tuple[str, str]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return 1\n")
    s3 = boto("s3", REGION, aws)
    s3.create_bucket(Bucket="code", CreateBucketConfiguration={"LocationConstraint": REGION})
    s3.put_object(Bucket="code", Key="app.zip", Body=buf.getvalue())
    return "code", "app.zip"


def _create(role: str, propagation_s: float):
    return lambda_.create_function(
        REGION, name="fn", role=role, runtime="python3.12", handler="app.handler", memory_mb=128,
        timeout_s=10, env={}, s3_bucket="code", s3_key="app.zip", role_propagation_s=propagation_s,
    )  # fmt: skip


def test_a_new_role_is_waited_for_then_the_function_is_made(aws, strict):
    strict.rules.iam_propagation_s = 2.0  # (longer than making a client takes on a busy machine)
    _bucket(aws)
    lambda_.get_function(REGION, "fn")  # the client is made before the role
    created = _create(_role(aws), propagation_s=20)
    assert created.state == "Pending"
    assert strict.stats()["refused"]["iam_propagation"] >= 1


def test_a_role_that_never_becomes_assumable_is_named_with_what_to_check(aws, strict):
    strict.rules.iam_propagation_s = 60
    _bucket(aws)
    role = _role(aws)
    with pytest.raises(AwsError) as caught:
        _create(role, propagation_s=0.5)
    err = caught.value
    assert (err.code, err.retryable) == ("RoleNotAssumable", False)
    assert role in err.message and "trust policy" in err.message and "lambda.amazonaws.com" in err.message


def test_updates_and_publishing_wait_for_pending_and_in_progress(aws, strict):
    strict.rules.iam_propagation = False
    strict.rules.lambda_pending_s = 0.4
    strict.rules.lambda_update_s = 0.4
    bucket, key = _bucket(aws)
    _create(_role(aws), propagation_s=0)
    # Pending: the update waits for Active; then InProgress: the next update and the publish wait.
    lambda_.update_code(REGION, name="fn", s3_bucket=bucket, s3_key=key)
    updated = lambda_.update_config(REGION, name="fn", runtime="python3.12", handler="app.handler",
                                    memory_mb=256, timeout_s=10, env={"A": "1"})  # fmt: skip
    assert updated.memory_mb == 256
    assert lambda_.publish_version(REGION, name="fn", description="v1") == "1"
    assert strict.stats()["refused"]["lambda_states"] >= 2


def test_route53_calls_from_many_workers_stay_under_the_account_limit(aws, strict, settings):
    settings.ROUTE53_REQUESTS_PER_SECOND, settings.ROUTE53_BURST = 4.5, 4
    zone = boto("route53", "us-east-1", aws).create_hosted_zone(Name="example.com", CallerReference="z")
    zone_id = zone["HostedZone"]["Id"]

    def check(n: int) -> str:
        return route53.ensure_health_check(
            fqdn=f"api{n}.example.com", path="/health", region=REGION, caller_reference=f"ref-{n}"
        )

    with ThreadPoolExecutor(max_workers=12) as pool:
        ids = list(pool.map(check, range(12)))
    assert len(set(ids)) == 12
    assert route53.list_latency_records(zone_id, "example.com") == []
    assert "route53_rate" not in strict.stats()["refused"]
