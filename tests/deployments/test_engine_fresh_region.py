"""The first deploy to a region where the function does not exist yet, with Lambda answering as
real AWS does (moto answers some calls about a missing function differently)."""

from __future__ import annotations

import io
import json

import pytest
from botocore.awsrequest import AWSResponse

from deployments.choices import DeploymentStatus
from regions.aws.session import client
from tests.support.deploys import boto

from . import test_engine_support as support
from .conftest import REGIONS
from .test_engine_support import new_deployment, status_of

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)


class _Body(io.BytesIO):
    def stream(self, **kwargs):
        yield self.getvalue()


@pytest.fixture
def lambda_like_aws(aws):
    """ListVersionsByFunction of a missing function answers ResourceNotFoundException (404)."""
    answered = []

    def hook_for(code: str):
        def missing_function(request, **kwargs):
            name = request.url.split("/functions/")[1].split("/")[0]
            names = [f["FunctionName"] for f in boto("lambda", code, aws).list_functions()["Functions"]]
            if name in names:
                return None
            answered.append((code, name))
            body = json.dumps({"Type": "User", "message": f"Function not found: {name}"}).encode()
            headers = {"x-amzn-errortype": "ResourceNotFoundException", "content-type": "application/json"}
            return AWSResponse(request.url, 404, headers, _Body(body))

        return missing_function

    hooks = [(client("lambda", code), hook_for(code)) for code in REGIONS]
    for lam, hook in hooks:
        lam.meta.events.register_first("before-send.lambda.ListVersionsByFunction", hook)
    yield answered
    for lam, hook in hooks:
        lam.meta.events.unregister("before-send.lambda.ListVersionsByFunction", hook)


def test_the_first_deploy_to_fresh_regions_succeeds(app_3_regions, engine, lambda_like_aws, aws):
    deployment = new_deployment(app_3_regions)
    engine.deliver()
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.SUCCEEDED, regions
    # Where GetFunctionConfiguration said there is no function, nothing listed its versions
    # (there are none to find); had anything asked, it got AWS's ResourceNotFoundException.
    assert lambda_like_aws == []
    for code in REGIONS:
        lam = boto("lambda", code, aws)
        alias = lam.get_alias(FunctionName=app_3_regions.function_name, Name="production")
        assert alias["FunctionVersion"] == "1"


def _delete_role(aws, name: str = "controlplane-lambda") -> None:
    iam = boto("iam", "us-east-1", aws)
    for policy in iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        iam.detach_role_policy(RoleName=name, PolicyArn=policy["PolicyArn"])
    for policy in iam.list_role_policies(RoleName=name)["PolicyNames"]:
        iam.delete_role_policy(RoleName=name, PolicyName=policy)
    iam.delete_role(RoleName=name)


def test_an_execution_role_deleted_behind_the_engine_is_made_again(app_3_regions, team, engine, aws):
    from tests.factories import AppFactory, AppRegionFactory, StageFactory

    first = new_deployment(app_3_regions)
    engine.deliver()
    assert status_of(first)[0] == DeploymentStatus.SUCCEEDED
    _delete_role(aws)  # the engine still knows the role it set up

    other = AppFactory(team=team, slug="cart", runtime="python3.12", handler="app.handler")
    AppRegionFactory(app=other, region=app_3_regions.placements.first().region)
    StageFactory(app=other, name="production")
    deployment = new_deployment(other)
    engine.deliver()

    status, regions = status_of(deployment)
    assert status == DeploymentStatus.SUCCEEDED, regions
    role = boto("iam", "us-east-1", aws).get_role(RoleName="controlplane-lambda")["Role"]
    (code,) = regions
    function = boto("lambda", code, aws).get_function_configuration(FunctionName=other.function_name)
    assert function["Role"] == role["Arn"]
