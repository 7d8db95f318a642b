"""The strict mode of the AWS emulator refuses what AWS refuses, with AWS's codes, and each rule
can be switched off for a test (tests/support/strict_aws.py)."""

from __future__ import annotations

import io
import json
import time
import zipfile

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.support.deploys import boto
from tests.support.processes import wait_for

NO_RETRIES = Config(retries={"total_max_attempts": 1, "mode": "standard"})


def client(service, region, aws):
    import boto3

    return boto3.client(
        service, region_name=region, endpoint_url=aws.url, config=NO_RETRIES,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def code_of(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


@pytest.fixture
def strict(aws):
    return aws.strict


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(e, c):\n    return 1\n")
    return buf.getvalue()


def _role(aws) -> str:
    iam = boto("iam", "us-east-1", aws)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
             "Principal": {"Service": "lambda.amazonaws.com"}}]}  # fmt: skip
    return iam.create_role(RoleName="fn-role", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]


def _create(lam, role):
    return lam.create_function(
        FunctionName="fn", Runtime="python3.12", Role=role, Handler="app.handler", Code={"ZipFile": _zip()}
    )


def test_a_new_role_cannot_be_assumed_by_lambda_until_it_propagated(aws, strict):
    strict.rules.iam_propagation_s = 0.6
    role = _role(aws)
    lam = client("lambda", "us-east-1", aws)
    with pytest.raises(ClientError) as err:
        _create(lam, role)
    assert code_of(err.value) == "InvalidParameterValueException"
    assert "cannot be assumed by Lambda" in err.value.response["Error"]["Message"]
    created = wait_for(lambda: _try(lambda: _create(lam, role)), timeout=5, message="the role to propagate")
    assert created["State"] == "Pending"


def _try(call):
    try:
        return call()
    except ClientError:
        return None


def test_a_pending_function_refuses_updates_and_publishing_until_active(aws, strict):
    strict.rules.iam_propagation = False
    strict.rules.lambda_pending_s = 0.5
    lam = client("lambda", "us-east-1", aws)
    _create(lam, _role(aws))
    assert lam.get_function_configuration(FunctionName="fn")["State"] == "Pending"
    with pytest.raises(ClientError) as err:
        lam.publish_version(FunctionName="fn")
    assert code_of(err.value) == "ResourceConflictException"
    assert "Pending" in err.value.response["Error"]["Message"]
    wait_for(lambda: lam.get_function(FunctionName="fn")["Configuration"]["State"] == "Active", timeout=5)
    assert lam.publish_version(FunctionName="fn")["Version"] == "1"


def test_an_update_in_progress_refuses_another_update(aws, strict):
    strict.rules.iam_propagation = False
    strict.rules.lambda_pending_s = 0
    strict.rules.lambda_update_s = 0.5
    lam = client("lambda", "us-east-1", aws)
    _create(lam, _role(aws))
    answer = lam.update_function_configuration(FunctionName="fn", MemorySize=256)
    assert answer["LastUpdateStatus"] == "InProgress"
    with pytest.raises(ClientError) as err:
        lam.update_function_configuration(FunctionName="fn", MemorySize=512)
    assert code_of(err.value) == "ResourceConflictException"
    assert "An update is in progress" in err.value.response["Error"]["Message"]
    wait_for(lambda: lam.get_function_configuration(FunctionName="fn")["LastUpdateStatus"] == "Successful",
             timeout=5)  # fmt: skip
    lam.update_function_configuration(FunctionName="fn", MemorySize=512)


def test_lambda_states_switched_off_is_moto_as_it_is(aws, strict):
    strict.rules.iam_propagation = strict.rules.lambda_states = False
    lam = client("lambda", "us-east-1", aws)
    _create(lam, _role(aws))
    lam.update_function_configuration(FunctionName="fn", MemorySize=256)
    assert lam.publish_version(FunctionName="fn")["Version"] == "1"


def _zone(aws) -> str:
    r53 = boto("route53", "us-east-1", aws)
    return r53.create_hosted_zone(Name="example.com", CallerReference=str(time.time()))["HostedZone"]["Id"]


def test_a_certificate_is_issued_only_after_its_validation_record_is_in_the_zone(aws, strict):
    strict.rules.acm_issue_delay_s = 0.3
    acm = client("acm", "eu-west-1", aws)
    arn = acm.request_certificate(DomainName="shop.example.com", ValidationMethod="DNS")["CertificateArn"]
    cert = acm.describe_certificate(CertificateArn=arn)["Certificate"]
    assert cert["Status"] == "PENDING_VALIDATION"
    record = cert["DomainValidationOptions"][0]["ResourceRecord"]

    # API Gateway refuses the domain while the certificate is pending.
    apigw = client("apigateway", "eu-west-1", aws)
    with pytest.raises(ClientError) as err:
        apigw.create_domain_name(domainName="shop.example.com", regionalCertificateArn=arn,
                                 endpointConfiguration={"types": ["REGIONAL"]})  # fmt: skip
    assert code_of(err.value) == "BadRequestException"
    assert "not yet issued" in err.value.response["Error"]["Message"]

    time.sleep(0.4)  # longer than the issue delay: without the record it stays pending
    assert acm.describe_certificate(CertificateArn=arn)["Certificate"]["Status"] == "PENDING_VALIDATION"
    boto("route53", "us-east-1", aws).change_resource_record_sets(
        HostedZoneId=_zone(aws),
        ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
            "Name": record["Name"], "Type": "CNAME", "TTL": 300,
            "ResourceRecords": [{"Value": record["Value"]}]}}]},
    )  # fmt: skip
    wait_for(
        lambda: acm.describe_certificate(CertificateArn=arn)["Certificate"]["Status"] == "ISSUED",
        timeout=5, message="the certificate to be issued",
    )  # fmt: skip
    domain = apigw.create_domain_name(domainName="shop.example.com", regionalCertificateArn=arn,
                                      endpointConfiguration={"types": ["REGIONAL"]})  # fmt: skip
    assert domain["regionalDomainName"]


def test_route53_throttles_beyond_five_requests_a_second_for_the_whole_account(aws, strict):
    r53 = client("route53", "us-east-1", aws)
    _zone(aws)
    outcomes = []
    for _ in range(12):
        try:
            r53.list_hosted_zones()
            outcomes.append("ok")
        except ClientError as exc:
            outcomes.append(code_of(exc))
            assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
            assert exc.response["Error"]["Message"] == "Rate exceeded"
    assert "Throttling" in outcomes and outcomes.count("ok") <= 6 + 1
    strict.rules.route53_rate = False
    for _ in range(12):
        r53.list_hosted_zones()


def test_a_change_to_a_record_set_still_pending_is_refused(aws, strict):
    strict.rules.route53_pending_s = 0.5
    zone = _zone(aws)
    r53 = client("route53", "us-east-1", aws)

    def upsert(value):
        r53.change_resource_record_sets(
            HostedZoneId=zone,
            ChangeBatch={"Changes": [{"Action": "UPSERT", "ResourceRecordSet": {
                "Name": "a.example.com", "Type": "CNAME", "TTL": 60,
                "ResourceRecords": [{"Value": value}]}}]},
        )  # fmt: skip

    upsert("one.example.net")
    with pytest.raises(ClientError) as err:
        upsert("two.example.net")
    assert code_of(err.value) == "PriorRequestNotComplete"
    time.sleep(0.6)
    upsert("two.example.net")


def test_api_gateway_refuses_a_second_create_rest_api_within_its_interval_per_region(aws, strict):
    strict.rules.apigw_intervals_s = {"CreateRestApi": 30.0}
    east, west = client("apigateway", "us-east-1", aws), client("apigateway", "eu-west-1", aws)
    east.create_rest_api(name="a")
    west.create_rest_api(name="a")  # another region has its own quota
    with pytest.raises(ClientError) as err:
        east.create_rest_api(name="b")
    assert code_of(err.value) == "TooManyRequestsException"
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert aws.strict.stats()["refused"]["apigw_limits"] == 1
