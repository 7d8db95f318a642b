from __future__ import annotations

import socket
import threading

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from regions.aws import lambda_, s3
from regions.aws.session import AwsError, account_id, client, reset_clients, translate

from .conftest import ACCOUNT, REGION, fail_first, make_zip, plain

OTHER_ACCOUNT = "111111111111"
DEPLOYER = f"arn:aws:iam::{OTHER_ACCOUNT}:role/controlplane-deployer"


def test_clients_are_cached_per_service_region_and_role(fake_aws):
    first = client("lambda", REGION)
    assert client("lambda", REGION) is first
    assert client("lambda", "us-west-2") is not first
    assert client("s3", REGION) is not first
    assert client("lambda", REGION, role_arn=DEPLOYER) is not first
    reset_clients()
    assert client("lambda", REGION) is not first


def test_one_client_is_shared_by_threads_and_serves_them_concurrently(fake_aws):
    s3.ensure_bucket(REGION, "artifacts-threads")
    seen: list = []
    errors: list = []

    def work(n: int) -> None:
        try:
            seen.append(client("s3", REGION))
            s3.put_bytes(REGION, "artifacts-threads", f"k/{n}", str(n).encode())
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len({id(c) for c in seen}) == 1
    listed = plain("s3").list_objects_v2(Bucket="artifacts-threads")["KeyCount"]
    assert listed == 16


def test_endpoint_url_setting_overrides_every_service(settings):
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:4566"
    settings.AWS_ENDPOINT_URLS = {}
    reset_clients()
    try:
        assert client("lambda", "eu-west-1").meta.endpoint_url == "http://127.0.0.1:4566"
        assert client("route53", "us-east-1").meta.endpoint_url == "http://127.0.0.1:4566"
    finally:
        reset_clients()


def test_per_service_endpoint_wins_in_either_spelling(settings):
    settings.AWS_ENDPOINT_URL = "http://127.0.0.1:4566"
    # As settings.py reads them from AWS_ENDPOINT_URL_API_GATEWAY and AWS_ENDPOINT_URL_LAMBDA.
    settings.AWS_ENDPOINT_URLS = {"api_gateway": "http://127.0.0.1:9001", "lambda": "http://127.0.0.1:9002"}
    reset_clients()
    try:
        assert client("apigateway", REGION).meta.endpoint_url == "http://127.0.0.1:9001"
        assert client("lambda", REGION).meta.endpoint_url == "http://127.0.0.1:9002"
        assert client("s3", REGION).meta.endpoint_url == "http://127.0.0.1:4566"
    finally:
        reset_clients()


def test_without_override_clients_use_aws_regional_endpoints(settings, monkeypatch):
    settings.AWS_ENDPOINT_URL = ""
    settings.AWS_ENDPOINT_URLS = {}
    # Only settings decide: an endpoint left in the environment is ignored.
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    reset_clients()
    try:
        assert (
            client("lambda", "ap-southeast-2").meta.endpoint_url
            == "https://lambda.ap-southeast-2.amazonaws.com"
        )
    finally:
        reset_clients()


def test_retry_settings_reach_the_client(settings):
    settings.AWS_MAX_ATTEMPTS = 5
    settings.AWS_RETRY_MODE = "adaptive"
    reset_clients()
    try:
        config = client("lambda", REGION).meta.config
        assert config.retries == {"mode": "adaptive", "total_max_attempts": 5}
    finally:
        reset_clients()


def _function(name: str = "api") -> None:
    s3.ensure_bucket(REGION, "artifacts-retry")
    s3.put_bytes(REGION, "artifacts-retry", "a.zip", make_zip())
    role = plain("iam", "us-east-1").create_role(RoleName="fn", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    plain("lambda").create_function(
        FunctionName=name,
        Role=role,
        Runtime="python3.12",
        Handler="app.handler",
        Code={"S3Bucket": "artifacts-retry", "S3Key": "a.zip"},
    )


def test_throttled_call_is_retried_until_it_succeeds(fake_aws, settings):
    settings.AWS_MAX_ATTEMPTS = 4
    reset_clients()
    _function()
    attempts = fail_first(
        client("lambda", REGION),
        "before-send.lambda.GetFunctionConfiguration",
        times=2,
        status=429,
        code="TooManyRequestsException",
    )
    info = lambda_.get_function(REGION, "api")
    assert info is not None and info.name == "api"
    assert len(attempts) == 3


def test_throttling_past_max_attempts_is_a_retryable_error(fake_aws, settings):
    settings.AWS_MAX_ATTEMPTS = 2
    reset_clients()
    attempts = fail_first(
        client("lambda", REGION),
        "before-send.lambda.GetFunctionConfiguration",
        times=99,
        status=429,
        code="TooManyRequestsException",
    )
    with pytest.raises(AwsError) as caught:
        lambda_.get_function(REGION, "api")
    error = caught.value
    assert (error.code, error.status, error.retryable) == ("TooManyRequestsException", 429, True)
    assert error.operation == "GetFunctionConfiguration"
    assert error.region == REGION
    assert len(attempts) == 2


def test_access_denied_is_not_retried_and_not_retryable(fake_aws):
    attempts = fail_first(
        client("lambda", REGION),
        "before-send.lambda.GetFunctionConfiguration",
        times=99,
        status=403,
        code="AccessDeniedException",
    )
    with pytest.raises(AwsError) as caught:
        lambda_.get_function(REGION, "api")
    error = caught.value
    assert (error.code, error.status, error.retryable) == ("AccessDeniedException", 403, False)
    assert len(attempts) == 1


def test_route53_throttling_in_xml_is_retryable(fake_aws, settings):
    settings.AWS_MAX_ATTEMPTS = 1
    reset_clients()
    fail_first(
        client("route53", "us-east-1"),
        "before-send.route53.GetHealthCheckStatus",
        times=99,
        status=400,
        code="Throttling",
        json_protocol=False,
    )
    from regions.aws import route53

    with pytest.raises(AwsError) as caught:
        route53.health_check_status("abc")
    assert (caught.value.code, caught.value.retryable) == ("Throttling", True)


@pytest.mark.parametrize(
    ("code", "status", "retryable"),
    [
        ("ServiceUnavailableException", 503, True),
        ("InternalFailure", 500, True),
        ("SomethingNew", 502, True),
        ("ThrottlingException", 400, True),
        ("ValidationException", 400, False),
        ("ResourceNotFoundException", 404, False),
        ("AccessDenied", 403, False),
    ],
)
def test_translate_marks_only_throttling_and_server_errors_retryable(code, status, retryable):
    exc = ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op"
    )
    error = translate(exc, region="us-west-2")
    assert (error.code, error.status, error.retryable, error.operation, error.region) == (
        code,
        status,
        retryable,
        "Op",
        "us-west-2",
    )


def test_translate_network_failures_are_retryable():
    assert translate(EndpointConnectionError(endpoint_url="https://x")).retryable
    timeout = translate(ReadTimeoutError(endpoint_url="https://x"))
    assert (timeout.code, timeout.retryable) == ("ReadTimeout", True)


def test_unreachable_endpoint_is_a_retryable_error(settings):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings.AWS_ENDPOINT_URL = f"http://127.0.0.1:{port}"
    settings.AWS_ENDPOINT_URLS = {}
    settings.AWS_MAX_ATTEMPTS = 1
    reset_clients()
    try:
        with pytest.raises(AwsError) as caught:
            lambda_.get_function(REGION, "api")
        assert (caught.value.code, caught.value.retryable) == ("EndpointConnectionError", True)
    finally:
        reset_clients()


def test_errors_survive_pickling():
    import pickle

    error = AwsError("ThrottlingException", "slow down", operation="Op", status=400, region="eu-west-1")
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes
    assert (copy.code, copy.message, copy.operation, copy.status, copy.retryable, copy.region) == (
        "ThrottlingException",
        "slow down",
        "Op",
        400,
        True,
        "eu-west-1",
    )


def test_role_is_assumed_and_calls_act_in_its_account(fake_aws):
    identity = client("sts", REGION, role_arn=DEPLOYER).get_caller_identity()
    assert identity["Account"] == OTHER_ACCOUNT
    assert identity["Arn"] == f"arn:aws:sts::{OTHER_ACCOUNT}:assumed-role/controlplane-deployer/controlplane"
    assert account_id(REGION, role_arn=DEPLOYER) == OTHER_ACCOUNT
    assert account_id(REGION) == ACCOUNT

    assumed = client("s3", REGION, role_arn=DEPLOYER)._request_signer._credentials.get_frozen_credentials()
    base = client("s3", REGION)._request_signer._credentials.get_frozen_credentials()
    assert assumed.access_key != base.access_key and assumed.token

    # A bucket made as the role belongs to the other account.
    s3.ensure_bucket(REGION, "deployer-bucket", role_arn=DEPLOYER)
    owner = client("s3", REGION, role_arn=DEPLOYER).get_bucket_acl(Bucket="deployer-bucket")["Owner"]
    mine = plain("s3").list_buckets()["Owner"]
    assert owner["ID"] != mine["ID"]


def _count_assume_role() -> list:
    calls: list = []
    client("sts", REGION).meta.events.register(
        "before-parameter-build.sts.AssumeRole", lambda **kwargs: calls.append(kwargs["params"]["RoleArn"])
    )
    return calls


def test_assumed_credentials_are_reused_until_close_to_expiry(fake_aws):
    calls = _count_assume_role()
    role_sts = client("sts", REGION, role_arn=DEPLOYER)
    for _ in range(3):
        role_sts.get_caller_identity()
    client("lambda", REGION, role_arn=DEPLOYER).list_functions()
    assert calls == [DEPLOYER]


def test_assumed_credentials_are_renewed_within_the_refresh_window(fake_aws, settings):
    # Credentials living 15 minutes are inside botocore's advisory refresh window from the start,
    # so each use renews them: proof the credentials refresh rather than stay frozen.
    settings.AWS_ROLE_DURATION = 900
    calls = _count_assume_role()
    role_sts = client("sts", REGION, role_arn=DEPLOYER)
    role_sts.get_caller_identity()
    role_sts.get_caller_identity()
    assert len(calls) >= 2
    assert role_sts.get_caller_identity()["Account"] == OTHER_ACCOUNT


def test_denied_role_assumption_is_an_aws_error(fake_aws):
    fail_first(
        client("sts", REGION),
        "before-send.sts.AssumeRole",
        times=99,
        status=403,
        code="AccessDenied",
        json_protocol=False,
    )
    with pytest.raises(AwsError) as caught:
        lambda_.get_function(REGION, "api", role_arn=DEPLOYER)
    assert (caught.value.code, caught.value.retryable, caught.value.region) == ("AccessDenied", False, REGION)


def test_everything_works_against_a_moto_server_through_the_endpoint_setting(aws, settings, tmp_path):
    settings.AWS_ENDPOINT_URL = aws.url
    reset_clients()
    assert client("lambda", REGION).meta.endpoint_url == aws.url

    s3.ensure_bucket(REGION, "server-artifacts")
    path = tmp_path / "a.zip"
    path.write_bytes(make_zip())
    s3.upload_file(REGION, "server-artifacts", "a.zip", str(path), sha256_hex="ab" * 32)
    from regions.aws import iam

    role = iam.ensure_lambda_role()
    lambda_.create_function(
        REGION,
        name="served",
        role=role,
        runtime="python3.12",
        handler="app.handler",
        memory_mb=256,
        timeout_s=10,
        env={"MODE": "server"},
        s3_bucket="server-artifacts",
        s3_key="a.zip",
    )
    version = lambda_.publish_version(REGION, name="served", description="release 1")
    lambda_.ensure_alias(REGION, name="served", alias="production", version=version)

    import boto3

    direct = boto3.client("lambda", region_name=REGION, endpoint_url=aws.url)
    assert direct.get_alias(FunctionName="served", Name="production")["FunctionVersion"] == version
    assert direct.get_function_configuration(FunctionName="served")["Environment"]["Variables"] == {
        "MODE": "server"
    }
    reset_clients()
