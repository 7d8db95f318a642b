from __future__ import annotations

import json

import pytest
from moto import mock_aws

from regions.aws import iam, session

from .conftest import plain


@pytest.fixture
def aws_with_managed_policies(fake_aws):
    # AWS always has its managed policies; moto loads them only when asked.
    with mock_aws(config={"iam": {"load_aws_managed_policies": True}}):
        session.reset_clients()
        yield


def _attached(name: str) -> list[str]:
    return [
        p["PolicyArn"]
        for p in plain("iam", "us-east-1").list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    ]


def test_lambda_role_trusts_lambda_and_can_write_logs(aws_with_managed_policies):
    arn = iam.ensure_lambda_role()
    role = plain("iam", "us-east-1").get_role(RoleName="controlplane-lambda")["Role"]
    assert role["Arn"] == arn
    trust = role["AssumeRolePolicyDocument"]
    trust = json.loads(trust) if isinstance(trust, str) else trust
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    assert _attached("controlplane-lambda") == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]


def test_ensuring_the_role_twice_makes_one_role(aws_with_managed_policies):
    first = iam.ensure_lambda_role("app-exec")
    session.reset_clients()  # forget the per-process answer: the second call reads IAM again
    assert iam.ensure_lambda_role("app-exec") == first
    roles = [r["RoleName"] for r in plain("iam", "us-east-1").list_roles()["Roles"]]
    assert roles.count("app-exec") == 1
    assert len(_attached("app-exec")) == 1


def test_an_existing_role_without_the_policy_gets_it(aws_with_managed_policies):
    plain("iam", "us-east-1").create_role(
        RoleName="controlplane-lambda", AssumeRolePolicyDocument=json.dumps(iam.LAMBDA_TRUST_POLICY)
    )
    iam.ensure_lambda_role()
    assert _attached("controlplane-lambda") == [
        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
    ]


def test_without_managed_policies_the_role_gets_the_same_rights_inline(fake_aws):
    iam.ensure_lambda_role()
    document = plain("iam", "us-east-1").get_role_policy(
        RoleName="controlplane-lambda", PolicyName=iam.INLINE_POLICY_NAME
    )["PolicyDocument"]
    document = json.loads(document) if isinstance(document, str) else document
    assert document["Statement"][0]["Action"] == [
        "logs:CreateLogGroup",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    ]


def test_a_role_deleted_behind_the_process_cache_is_made_again(aws_with_managed_policies):
    first = iam.ensure_lambda_role()
    admin = plain("iam", "us-east-1")
    for arn in _attached("controlplane-lambda"):
        admin.detach_role_policy(RoleName="controlplane-lambda", PolicyArn=arn)
    admin.delete_role(RoleName="controlplane-lambda")

    assert iam.ensure_lambda_role() == first
    assert admin.get_role(RoleName="controlplane-lambda")["Role"]["Arn"] == first
    assert len(_attached("controlplane-lambda")) == 1
