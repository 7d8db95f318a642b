"""Publishing guards against ``$LATEST`` changing under a deploy: a change made between the deploy
setting the function and publishing it (another tool, a console edit, a second control plane)
must never be published as this release, env included.

moto keeps no RevisionId, so hooks on the control plane's Lambda client do what Lambda does: every
answer describing ``$LATEST`` carries a RevisionId that changes with its configuration and code,
and PublishVersion is answered 412 PreconditionFailedException when the RevisionId sent is not the
function's current one.
"""

from __future__ import annotations

import hashlib
import io
import json

import pytest
from botocore.awsrequest import AWSResponse

from deployments.choices import DeploymentStatus
from deployments.engine.context import version_marker
from regions.aws.session import client
from tests.support.deploys import boto

from . import test_engine_support as support
from .test_engine_support import new_deployment, status_of

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "eu-west-1"
FOREIGN_ENV = {"GREETING": "changed behind the deploy's back"}


class _Body(io.BytesIO):
    def stream(self, **kwargs):
        yield self.getvalue()


def _revision(config: dict) -> str:
    fields = ("Environment", "CodeSha256", "Runtime", "Handler", "MemorySize", "Timeout", "Role")
    shape = json.dumps({f: config.get(f) for f in fields}, sort_keys=True, default=str)
    return hashlib.sha256(shape.encode()).hexdigest()[:32]


def _with_revision(parsed, **kwargs):
    if (
        isinstance(parsed, dict)
        and "FunctionName" in parsed
        and parsed.get("Version", "$LATEST") == "$LATEST"
    ):
        parsed["RevisionId"] = _revision(parsed)


DESCRIBING_LATEST = ("GetFunctionConfiguration", "CreateFunction", "UpdateFunctionConfiguration",
                     "UpdateFunctionCode")  # fmt: skip


@pytest.fixture
def lambda_checking_revisions(aws):
    """PublishVersion as Lambda answers it, and a change to ``$LATEST`` made from elsewhere just
    before the first publish in REGION (``changes`` says how many to make)."""
    seen = {"changes": 1, "refused": 0, "revisions": []}
    plain = boto("lambda", REGION, aws)

    def publish(request, **kwargs):
        name = request.url.split("/functions/")[1].split("/")[0]
        if seen["changes"]:
            seen["changes"] -= 1
            plain.update_function_configuration(FunctionName=name, Environment={"Variables": FOREIGN_ENV})
        sent = json.loads(request.body or b"{}").get("RevisionId", "")
        seen["revisions"].append(sent)
        current = _revision(plain.get_function_configuration(FunctionName=name))
        if sent and sent != current:
            seen["refused"] += 1
            body = json.dumps({"Type": "User", "message": "The Revision Id provided does not match"}).encode()
            headers = {"x-amzn-errortype": "PreconditionFailedException", "content-type": "application/json"}
            return AWSResponse(request.url, 412, headers, _Body(body))
        return None

    lam = client("lambda", REGION)
    lam.meta.events.register_first("before-send.lambda.PublishVersion", publish)
    for operation in DESCRIBING_LATEST:
        lam.meta.events.register(f"after-call.lambda.{operation}", _with_revision)
    yield seen
    lam.meta.events.unregister("before-send.lambda.PublishVersion", publish)
    for operation in DESCRIBING_LATEST:
        lam.meta.events.unregister(f"after-call.lambda.{operation}", _with_revision)


def _published(app, aws, deployment) -> list[dict]:
    lam = boto("lambda", REGION, aws)
    marker = version_marker(deployment.release)
    versions = lam.list_versions_by_function(FunctionName=app.function_name)["Versions"]
    return [v for v in versions if v.get("Description", "").startswith(marker)]


def test_a_change_to_latest_before_publishing_is_undone_not_published(
    app_3_regions, engine, lambda_checking_revisions, aws
):
    deployment = new_deployment(app_3_regions)
    engine.deliver()

    status, regions = status_of(deployment)
    assert status == DeploymentStatus.SUCCEEDED, regions
    assert lambda_checking_revisions["refused"] == 1
    assert all(lambda_checking_revisions["revisions"])  # every publish named the revision it expects
    (version,) = _published(app_3_regions, aws, deployment)
    # The published version runs the release's env for this region, not the foreign change.
    assert version["Environment"]["Variables"]["GREETING"] == "bonjour"
    lam = boto("lambda", REGION, aws)
    alias = lam.get_alias(FunctionName=app_3_regions.function_name, Name="production")
    assert alias["FunctionVersion"] == version["Version"]
    warned = deployment.events.filter(step="version", message__contains="changed after this deploy set it")
    assert warned.count() == 1


def test_latest_changing_again_fails_the_region_without_publishing(
    app_3_regions, engine, lambda_checking_revisions, aws
):
    lambda_checking_revisions["changes"] = 2
    deployment = new_deployment(app_3_regions)
    engine.deliver()

    status, regions = status_of(deployment)
    assert regions[REGION] == "failed"
    assert regions["us-east-1"] == regions["ap-southeast-2"] == "succeeded"
    assert status == DeploymentStatus.PARTIALLY_FAILED
    assert _published(app_3_regions, aws, deployment) == []
    rd = deployment.regions.get(region__code=REGION)
    assert rd.error_code == "PreconditionFailedException"
    lam = boto("lambda", REGION, aws)
    aliases = lam.list_aliases(FunctionName=app_3_regions.function_name)["Aliases"]
    assert aliases == []  # nothing was moved in the region
