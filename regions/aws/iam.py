"""The Lambda execution role (IAM is global; its endpoint lives in us-east-1)."""

from __future__ import annotations

import json

from .session import aws_errors, client, register_cache

IAM_REGION = "us-east-1"
LAMBDA_TRUST_POLICY = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Principal": {"Service": "lambda.amazonaws.com"},
            "Action": "sts:AssumeRole",
        }
    ],
}
BASIC_EXECUTION_POLICY = "policy/service-role/AWSLambdaBasicExecutionRole"
INLINE_POLICY_NAME = "controlplane-basic-execution"
# What AWSLambdaBasicExecutionRole grants: writing the function's logs.
BASIC_EXECUTION_INLINE = {
    "Version": "2012-10-17",
    "Statement": [
        {
            "Effect": "Allow",
            "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
            "Resource": "*",
        }
    ],
}

# (name, acting role) -> RoleId of a role this process has seen fully set up.
_ready: dict[tuple[str, str], str] = register_cache({})
# (name, acting role) -> its ARN, for callers that can tell a role gone missing (known_lambda_role).
_arns: dict[tuple[str, str], str] = register_cache({})


def known_lambda_role(name: str = "controlplane-lambda", *, role_arn: str = "") -> str:
    """The ARN of execution role ``name`` if this process has set it up (no call is made), else
    "". A caller using it must handle the role having been deleted since (Lambda then cannot
    assume it): :func:`forget_lambda_role` and :func:`ensure_lambda_role` again."""
    return _arns.get((name, role_arn), "")


def forget_lambda_role(name: str = "controlplane-lambda", *, role_arn: str = "") -> None:
    _arns.pop((name, role_arn), None)
    _ready.pop((name, role_arn), None)


@aws_errors
def ensure_lambda_role(name: str = "controlplane-lambda", *, role_arn: str = "") -> str:
    """The ARN of the execution role ``name`` (trusting lambda.amazonaws.com, with
    AWSLambdaBasicExecutionRole attached), created when missing.

    Once this process has set the role up, a call costs one GetRole: the role is still checked
    to exist, because a role deleted (or deleted and re-made) behind a cached answer would make
    every function creation wait for a role Lambda can never assume."""
    iam = client("iam", IAM_REGION, role_arn=role_arn)
    try:
        role = iam.get_role(RoleName=name)["Role"]
    except iam.exceptions.NoSuchEntityException:
        try:
            role = iam.create_role(
                RoleName=name,
                AssumeRolePolicyDocument=json.dumps(LAMBDA_TRUST_POLICY),
                Description="Execution role of functions deployed by controlplane",
            )["Role"]
        except iam.exceptions.EntityAlreadyExistsException:
            # Another worker created it between our read and our write.
            role = iam.get_role(RoleName=name)["Role"]
    if _ready.get((name, role_arn)) == role["RoleId"]:
        _arns[(name, role_arn)] = role["Arn"]
        return role["Arn"]
    partition = role["Arn"].split(":")[1]
    policy_arn = f"arn:{partition}:iam::aws:{BASIC_EXECUTION_POLICY}"
    pages = iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
    if policy_arn not in {p["PolicyArn"] for page in pages for p in page["AttachedPolicies"]}:
        try:
            iam.attach_role_policy(RoleName=name, PolicyArn=policy_arn)
        except iam.exceptions.NoSuchEntityException:
            # AWS always has its managed policies; an emulator may not (moto loads them only when
            # configured to). The same permissions inline keep the role usable there.
            iam.put_role_policy(
                RoleName=name,
                PolicyName=INLINE_POLICY_NAME,
                PolicyDocument=json.dumps(BASIC_EXECUTION_INLINE),
            )
    _ready[(name, role_arn)] = role["RoleId"]
    _arns[(name, role_arn)] = role["Arn"]
    return role["Arn"]
