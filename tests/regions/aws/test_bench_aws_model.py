"""The benchmarks' AWS model (bench/aws_model.py) covers every region the catalog offers, and the
emulator that plays it (bench/aws_emulator.py) makes each call take its region's round trip plus
the operation's service time, and lets a new function settle as Lambda does."""

from __future__ import annotations

import io
import json
import sys
import time
import zipfile
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from regions.catalog import commercial_regions
from tests.support.strict_aws import serve

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))

import aws_emulator  # noqa: E402
import aws_model  # noqa: E402

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def test_every_catalog_region_has_a_round_trip_and_a_location():
    catalog = set(commercial_regions())
    assert catalog - set(aws_model.RTT_FROM_US_EAST_1_MS) == set()
    assert catalog - set(aws_model.LOCATIONS) == set()
    assert {source for _, source in aws_model.RTT_FROM_US_EAST_1_MS.values()} <= {"ping", "distance"}


def test_the_round_trip_table_agrees_with_the_distance_between_the_regions():
    # A typo in the table (a digit too many or too few) breaks this; real routes detour, so the
    # measured figures may sit well above the great-circle estimate, never far below it.
    for region, (ms, _) in aws_model.RTT_FROM_US_EAST_1_MS.items():
        if region == "us-east-1":
            continue
        estimate = aws_model.distance_estimate_ms("us-east-1", region)
        assert 0.7 * estimate <= ms <= 1.6 * estimate, (region, ms, round(estimate))


def test_round_trips_grow_with_distance_from_any_home_region():
    assert aws_model.rtt_ms("eu-west-1", "eu-west-1") == aws_model.SAME_REGION_MS
    assert aws_model.rtt_ms("eu-west-1", "eu-west-2") < aws_model.rtt_ms("eu-west-1", "us-east-1")
    assert aws_model.rtt_ms("eu-west-1", "us-east-1") < aws_model.rtt_ms("eu-west-1", "ap-southeast-2")
    assert (
        aws_model.rtt_ms("ap-southeast-2", "us-east-1")
        == aws_model.RTT_FROM_US_EAST_1_MS["ap-southeast-2"][0]
    )
    assert aws_model.regions_by_distance(["us-east-2", "af-south-1", "eu-west-1"]) == [
        "af-south-1", "eu-west-1", "us-east-2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "signing, method, path, query, headers, expected",
    [
        ("lambda", "POST", "/2015-03-31/functions", {}, {}, "lambda:CreateFunction"),
        ("lambda", "GET", "/2015-03-31/functions/f/configuration", {}, {}, "lambda:GetFunctionConfiguration"),
        ("lambda", "PUT", "/2015-03-31/functions/f/aliases/production", {}, {}, "lambda:UpdateAlias"),
        ("lambda", "POST", "/2015-03-31/functions/f/versions", {}, {}, "lambda:PublishVersion"),
        ("s3", "PUT", "/bucket/artifacts/a.zip", {}, {}, "s3:PutObject"),
        ("s3", "PUT", "/bucket/a.zip", {}, {"x-amz-copy-source": "b/a.zip"}, "s3:CopyObject"),
        ("s3", "HEAD", "/bucket", {}, {}, "s3:HeadBucket"),
        ("apigateway", "POST", "/restapis/abc/deployments", {}, {}, "apigateway:CreateDeployment"),
        ("route53", "POST", "/2013-04-01/hostedzone/Z1/rrset/", {}, {}, "route53:ChangeResourceRecordSets"),
        (
            "acm",
            "POST",
            "/",
            {},
            {"x-amz-target": "CertificateManager.DescribeCertificate"},
            "acm:DescribeCertificate",
        ),
    ],
)
def test_a_request_is_named_as_botocore_names_its_operation(signing, method, path, query, headers, expected):
    assert aws_model.operation_of(signing, method, path, query, headers, b"") == expected
    assert (
        aws_model.operation_of("iam", "POST", "/", {}, {}, b"Action=GetRole&Version=2010-05-08")
        == "iam:GetRole"
    )


@pytest.fixture
def emulator():
    model = aws_model.Model(pending_s=0.5, update_s=0.3, service_ms={"lambda:GetFunctionConfiguration": 40})
    _, app = aws_emulator.build(model, strict=False)
    server, url = serve(app)
    yield app, url
    server.shutdown()


def client(service, region, url):
    return boto3.client(
        service, region_name=region, endpoint_url=url, config=NO_RETRIES,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def test_a_call_takes_its_regions_round_trip_plus_the_operations_service_time(emulator):
    app, url = emulator
    near, far = client("lambda", "us-east-1", url), client("lambda", "af-south-1", url)
    for lam in (near, far):  # (connections opened, operation models loaded)
        lam.list_functions()
    near_s = min(_timed(near.list_functions) for _ in range(3))
    far_s = min(_timed(far.list_functions) for _ in range(3))
    list_s = aws_model.DEFAULT_READ_MS / 1000
    assert near_s >= (aws_model.SAME_REGION_MS / 1000 + list_s) * 0.95
    assert far_s >= (aws_model.RTT_FROM_US_EAST_1_MS["af-south-1"][0] / 1000 + list_s) * 0.95
    assert far_s - near_s >= 0.15  # Cape Town is 215 ms further than Virginia, in the table
    assert app.stats()["calls"]["af-south-1 lambda:ListFunctions"] == 4


def test_a_new_function_is_pending_then_active_and_refuses_a_publish_meanwhile(emulator):
    _, url = emulator
    iam, lam = client("iam", "us-east-1", url), client("lambda", "eu-west-1", url)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "lambda.amazonaws.com"}}]}  # fmt: skip
    role = iam.create_role(RoleName="bench-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return 1\n")
    deadline = time.monotonic() + 10
    while True:  # (the role propagates first, as IAM's does)
        try:
            created = lam.create_function(
                FunctionName="fn", Runtime="python3.12", Role=role, Handler="app.handler",
                Code={"ZipFile": buf.getvalue()},
            )  # fmt: skip
            break
        except lam.exceptions.InvalidParameterValueException:
            assert time.monotonic() < deadline
            time.sleep(0.2)
    settled_at = time.monotonic() + 0.5
    assert created["State"] == "Pending"
    with pytest.raises(lam.exceptions.ResourceConflictException):
        lam.publish_version(FunctionName="fn")
    while lam.get_function_configuration(FunctionName="fn")["State"] == "Pending":
        time.sleep(0.05)
    assert time.monotonic() >= settled_at - 0.2  # not before the window the model gives
    assert lam.publish_version(FunctionName="fn")["Version"] == "1"
    lam.update_function_configuration(FunctionName="fn", MemorySize=256)
    assert lam.get_function_configuration(FunctionName="fn")["LastUpdateStatus"] == "InProgress"
