from __future__ import annotations

import base64
import hashlib
import json

import pytest

from regions.aws import lambda_, s3
from regions.aws.lambda_ import AliasInfo
from regions.aws.session import AwsError, client

from .conftest import ACCOUNT, REGION, canned_response, make_zip, plain

BUCKET = "artifacts-eu"


def code_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


@pytest.fixture
def role(fake_aws):
    return plain("iam", "us-east-1").create_role(RoleName="exec", AssumeRolePolicyDocument="{}")["Role"][
        "Arn"
    ]


@pytest.fixture
def artifact(fake_aws):
    data = make_zip()
    s3.ensure_bucket(REGION, BUCKET)
    s3.put_bytes(REGION, BUCKET, "v1.zip", data)
    return data


def create(role: str, *, name: str = "shop", env: dict | None = None, **overrides):
    kwargs = dict(
        name=name,
        role=role,
        runtime="python3.12",
        handler="app.handler",
        memory_mb=256,
        timeout_s=10,
        env={"MODE": "one"} if env is None else env,
        s3_bucket=BUCKET,
        s3_key="v1.zip",
    )
    kwargs.update(overrides)
    return lambda_.create_function(REGION, **kwargs)


def test_created_function_is_read_back(role, artifact):
    created = create(role, env={"MODE": "one", "LEVEL": "2"})
    info = lambda_.get_function(REGION, "shop")
    assert (info.name, info.arn, info.code_sha256) == (created.name, created.arn, created.code_sha256)
    assert info.arn == f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:shop"
    assert (info.runtime, info.handler, info.memory_mb, info.timeout_s) == (
        "python3.12",
        "app.handler",
        256,
        10,
    )
    assert info.env == {"MODE": "one", "LEVEL": "2"}
    assert info.code_sha256 == code_sha256(artifact)
    assert info.state == "Active"
    assert info.version == "$LATEST"


def test_missing_function_is_none(fake_aws):
    assert lambda_.get_function(REGION, "nothing") is None


def test_creating_waits_for_a_new_role_to_become_assumable(fake_aws, artifact):
    role_arn = f"arn:aws:iam::{ACCOUNT}:role/brand-new"
    attempts: list = []

    def role_appears(http_response, **kwargs):
        # Lambda refused the role once; IAM catches up, as it does seconds after CreateRole.
        attempts.append(http_response.status_code)
        if len(attempts) == 1:
            plain("iam", "us-east-1").create_role(RoleName="brand-new", AssumeRolePolicyDocument="{}")

    client("lambda", REGION).meta.events.register("after-call.lambda.CreateFunction", role_appears)
    create(role_arn, role_propagation_s=5)
    assert plain("lambda").get_function_configuration(FunctionName="shop")["Role"] == role_arn
    assert attempts[0] == 400 and attempts[-1] == 201


def test_a_role_that_never_becomes_assumable_fails_after_the_deadline(fake_aws, artifact):
    with pytest.raises(AwsError) as caught:
        create(f"arn:aws:iam::{ACCOUNT}:role/never", role_propagation_s=0.3)
    assert caught.value.code == "RoleNotAssumable"
    assert "cannot be assumed" in caught.value.message and "trust policy" in caught.value.message
    assert caught.value.retryable is False


def test_creating_an_existing_function_is_a_conflict(role, artifact):
    create(role)
    with pytest.raises(AwsError) as caught:
        create(role)
    assert caught.value.code == "ResourceConflictException"


def test_update_code_points_latest_at_the_new_zip(role, artifact):
    create(role)
    new = make_zip("def handler(event, context):\n    return {'statusCode': 200, 'body': 'v2'}\n")
    s3.put_bytes(REGION, BUCKET, "v2.zip", new)
    info = lambda_.update_code(REGION, name="shop", s3_bucket=BUCKET, s3_key="v2.zip")
    assert info.code_sha256 == code_sha256(new)
    assert plain("lambda").get_function_configuration(FunctionName="shop")["CodeSha256"] == code_sha256(new)


def test_update_config_replaces_settings_and_every_variable(role, artifact):
    create(role, env={"MODE": "one", "OLD": "x"})
    lambda_.update_config(
        REGION,
        name="shop",
        runtime="python3.13",
        handler="app.other",
        memory_mb=512,
        timeout_s=30,
        env={"MODE": "two"},
    )
    config = plain("lambda").get_function_configuration(FunctionName="shop")
    assert (config["Runtime"], config["Handler"], config["MemorySize"], config["Timeout"]) == (
        "python3.13",
        "app.other",
        512,
        30,
    )
    assert config["Environment"]["Variables"] == {"MODE": "two"}


def test_env_values_never_appear_in_error_messages(role, artifact):
    create(role)
    with pytest.raises(AwsError) as caught:
        lambda_.update_config(
            REGION,
            name="shop",
            runtime="python3.12",
            handler="app.handler",
            memory_mb=256,
            timeout_s=10,
            env={"API_TOKEN": 918273645},  # not a string: botocore's message quotes the value
        )
    assert "918273645" not in str(caught.value)
    assert "918273645" not in repr(caught.value.args)
    assert "API_TOKEN" in caught.value.message


def _answers(event: str, patches: list[dict]) -> list:
    """Rewrite the next answers to ``event`` with ``patches`` (one per call), as AWS would send them."""
    seen: list = []

    def hook(parsed, **kwargs):
        if len(seen) < len(patches):
            parsed.update(patches[len(seen)])
        seen.append(dict(parsed))

    client("lambda", REGION).meta.events.register(event, hook)
    return seen


def test_wait_until_updated_polls_until_the_update_finishes(role, artifact):
    create(role)
    seen = _answers(
        "after-call.lambda.GetFunctionConfiguration",
        [{"LastUpdateStatus": "InProgress"}, {"State": "Pending", "LastUpdateStatus": "InProgress"}],
    )
    info = lambda_.wait_until_updated(REGION, "shop", timeout_s=10, poll_s=0.01)
    assert [s["LastUpdateStatus"] for s in seen] == ["InProgress", "InProgress", "Successful"]
    assert info.state == "Active"


def test_a_failed_update_raises_with_lambdas_reason(role, artifact):
    create(role)
    _answers(
        "after-call.lambda.GetFunctionConfiguration",
        [
            {
                "LastUpdateStatus": "Failed",
                "LastUpdateStatusReason": "Unzipped size must be smaller than 262144000 bytes",
                "LastUpdateStatusReasonCode": "InvalidCodeSize",
            }
        ],
    )
    with pytest.raises(AwsError) as caught:
        lambda_.wait_until_updated(REGION, "shop", timeout_s=10, poll_s=0.01)
    assert caught.value.code == "FunctionFailed"
    assert "Unzipped size must be smaller" in caught.value.message
    assert "InvalidCodeSize" in caught.value.message
    assert caught.value.retryable is False


def test_waiting_gives_up_at_the_deadline(role, artifact):
    create(role)
    _answers("after-call.lambda.GetFunctionConfiguration", [{"LastUpdateStatus": "InProgress"}] * 1000)
    with pytest.raises(AwsError) as caught:
        lambda_.wait_until_updated(REGION, "shop", timeout_s=0.2, poll_s=0.02)
    assert (caught.value.code, caught.value.retryable) == ("WaiterTimeout", True)


def test_an_update_in_progress_is_waited_out_then_the_change_is_made(role, artifact):
    create(role)
    conflicts: list = []

    def busy_once(request, **kwargs):
        if not conflicts:
            conflicts.append(request.url)
            body = json.dumps(
                {
                    "__type": "ResourceConflictException",
                    "message": "An update is in progress for resource: shop",
                }
            ).encode()
            return canned_response(request.url, 409, body, {"x-amzn-errortype": "ResourceConflictException"})
        return None

    client("lambda", REGION).meta.events.register_first(
        "before-send.lambda.UpdateFunctionConfiguration", busy_once
    )
    lambda_.update_config(
        REGION, name="shop", runtime="python3.12", handler="app.handler", memory_mb=1024, timeout_s=10, env={}
    )
    assert conflicts
    assert plain("lambda").get_function_configuration(FunctionName="shop")["MemorySize"] == 1024


def test_published_version_is_found_by_its_description(role, artifact):
    create(role)
    version = lambda_.publish_version(
        REGION, name="shop", description="release 7 commit abc123", code_sha256=code_sha256(artifact)
    )
    assert version == "1"
    found = lambda_.find_version(REGION, "shop", description_prefix="release 7 ")
    assert found is not None and found.version == "1"
    assert found.env == {"MODE": "one"}
    assert found.code_sha256 == code_sha256(artifact)
    assert lambda_.find_version(REGION, "shop", description_prefix="release 8 ") is None


def test_versions_list_excludes_latest_and_keep_each_env(role, artifact):
    create(role)
    lambda_.publish_version(REGION, name="shop", description="release 1")
    lambda_.update_config(
        REGION, name="shop", runtime="python3.12", handler="app.handler", memory_mb=256, timeout_s=10,
        env={"MODE": "two"},
    )  # fmt: skip
    lambda_.publish_version(REGION, name="shop", description="release 2")
    versions = lambda_.list_versions(REGION, "shop")
    assert [(v.version, v.description, v.env) for v in versions] == [
        ("1", "release 1", {"MODE": "one"}),
        ("2", "release 2", {"MODE": "two"}),
    ]
    assert lambda_.get_version(REGION, "shop", "2").env == {"MODE": "two"}
    assert lambda_.get_version(REGION, "shop", "9") is None


def _published(role: str, count: int) -> None:
    create(role)
    for n in range(1, count + 1):
        if n > 1:
            lambda_.update_config(
                REGION, name="shop", runtime="python3.12", handler="app.handler", memory_mb=256,
                timeout_s=10, env={"N": str(n)},
            )  # fmt: skip
        lambda_.publish_version(REGION, name="shop", description=f"release {n}")


def _writes(event_names: tuple[str, ...]) -> list:
    writes: list = []
    for event in event_names:
        client("lambda", REGION).meta.events.register(
            f"before-call.lambda.{event}", lambda model, **kwargs: writes.append(model.name)
        )
    return writes


def test_alias_is_created_then_moved(role, artifact):
    _published(role, 2)
    assert lambda_.get_alias(REGION, "shop", "production") is None
    assert lambda_.ensure_alias(REGION, name="shop", alias="production", version="1") == AliasInfo(
        "production", "1", {}
    )
    assert plain("lambda").get_alias(FunctionName="shop", Name="production")["FunctionVersion"] == "1"
    lambda_.ensure_alias(REGION, name="shop", alias="production", version="2")
    assert plain("lambda").get_alias(FunctionName="shop", Name="production")["FunctionVersion"] == "2"
    assert lambda_.get_alias(REGION, "shop", "production") == AliasInfo("production", "2", {})


def test_alias_already_in_place_makes_no_change(role, artifact):
    _published(role, 1)
    lambda_.ensure_alias(REGION, name="shop", alias="production", version="1")
    writes = _writes(("CreateAlias", "UpdateAlias"))
    assert lambda_.ensure_alias(REGION, name="shop", alias="production", version="1").version == "1"
    assert writes == []


def test_move_alias_creates_or_moves_with_one_call_and_clears_canary_weights(role, artifact):
    _published(role, 2)
    assert lambda_.move_alias(REGION, name="shop", alias="production", version="1").version == "1"
    lambda_.ensure_alias(REGION, name="shop", alias="production", version="1", weights={"2": 0.1})
    calls = _writes(("GetAlias", "UpdateAlias", "CreateAlias"))

    assert lambda_.move_alias(REGION, name="shop", alias="production", version="2") == AliasInfo(
        "production", "2", {}
    )
    assert calls == ["UpdateAlias"]
    live = plain("lambda").get_alias(FunctionName="shop", Name="production")
    assert live["FunctionVersion"] == "2" and not live.get("RoutingConfig", {}).get(
        "AdditionalVersionWeights"
    )


def test_canary_weights_are_set_and_cleared(role, artifact):
    _published(role, 2)
    lambda_.ensure_alias(REGION, name="shop", alias="production", version="1", weights={"2": 0.1})
    routing = plain("lambda").get_alias(FunctionName="shop", Name="production")["RoutingConfig"]
    assert routing == {"AdditionalVersionWeights": {"2": 0.1}}
    assert lambda_.get_alias(REGION, "shop", "production").weights == {"2": 0.1}

    lambda_.ensure_alias(REGION, name="shop", alias="production", version="2")
    alias = plain("lambda").get_alias(FunctionName="shop", Name="production")
    assert alias["FunctionVersion"] == "2"
    assert (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights", {}) == {}
    assert [a.name for a in lambda_.list_aliases(REGION, "shop")] == ["production"]


def test_deleting_a_version_is_idempotent(role, artifact):
    _published(role, 2)
    lambda_.delete_version(REGION, "shop", "1")
    lambda_.delete_version(REGION, "shop", "1")
    assert [v.version for v in lambda_.list_versions(REGION, "shop")] == ["2"]


def test_latest_is_never_deleted(role, artifact):
    create(role)
    with pytest.raises(AwsError):
        lambda_.delete_version(REGION, "shop", "$LATEST")
    assert lambda_.get_function(REGION, "shop") is not None


def _statements(alias: str) -> list[dict]:
    policy = plain("lambda").get_policy(FunctionName="shop", Qualifier=alias)["Policy"]
    return json.loads(policy)["Statement"]


def test_invoke_permission_is_granted_once(role, artifact):
    _published(role, 1)
    lambda_.ensure_alias(REGION, name="shop", alias="production", version="1")
    source = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:abc123/production/*"
    for _ in range(2):
        lambda_.ensure_invoke_permission(
            REGION, name="shop", alias="production", source_arn=source, statement_id="apigw-production"
        )
    statements = _statements("production")
    assert len(statements) == 1
    assert statements[0]["Sid"] == "apigw-production"
    assert statements[0]["Principal"] == {"Service": "apigateway.amazonaws.com"}
    assert statements[0]["Condition"]["ArnLike"]["AWS:SourceArn"] == source
    assert statements[0]["Resource"].endswith("function:shop:production")


def test_invoke_permission_for_another_api_replaces_the_statement(role, artifact):
    _published(role, 1)
    lambda_.ensure_alias(REGION, name="shop", alias="production", version="1")
    old = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:old/production/*"
    new = f"arn:aws:execute-api:{REGION}:{ACCOUNT}:new/production/*"
    lambda_.ensure_invoke_permission(
        REGION, name="shop", alias="production", source_arn=old, statement_id="p"
    )
    lambda_.ensure_invoke_permission(
        REGION, name="shop", alias="production", source_arn=new, statement_id="p"
    )
    statements = _statements("production")
    assert [s["Condition"]["ArnLike"]["AWS:SourceArn"] for s in statements] == [new]


def test_versions_of_a_function_that_does_not_exist_are_none_as_on_real_aws(fake_aws):
    from botocore.stub import Stubber

    # moto lists no versions for a missing function; AWS answers ResourceNotFoundException.
    with Stubber(client("lambda", REGION)) as stub:
        for _ in range(2):
            stub.add_client_error(
                "list_versions_by_function", service_error_code="ResourceNotFoundException",
                service_message="Function not found: arn:aws:lambda:eu-west-1:123456789012:function:ghost",
                http_status_code=404, expected_params={"FunctionName": "ghost"},
            )  # fmt: skip
        assert lambda_.list_versions(REGION, "ghost") == []
        assert lambda_.find_version(REGION, "ghost", description_prefix="cp-release-1 ") is None
        stub.assert_no_pending_responses()
