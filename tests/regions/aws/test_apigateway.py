from __future__ import annotations

from regions.aws import acm, apigateway

from .conftest import ACCOUNT, REGION, plain


def _methods(api_id: str) -> dict[str, dict]:
    items = plain("apigateway").get_resources(restApiId=api_id, embed=["methods"])["items"]
    return {item["path"]: item.get("resourceMethods", {}) for item in items}


def _deployments(api_id: str) -> list[dict]:
    return plain("apigateway").get_deployments(restApiId=api_id)["items"]


def _api_with_proxy(function_name: str = "shop") -> str:
    api_id = apigateway.ensure_rest_api(REGION, "shop")
    apigateway.ensure_lambda_proxy(
        REGION, rest_api_id=api_id, function_name=function_name, account_id=ACCOUNT
    )
    return api_id


def test_rest_api_is_regional_and_found_again_by_name(fake_aws):
    api_id = apigateway.ensure_rest_api(REGION, "shop")
    assert apigateway.ensure_rest_api(REGION, "shop") == api_id
    apis = plain("apigateway").get_rest_apis()["items"]
    assert [(a["id"], a["name"]) for a in apis] == [(api_id, "shop")]
    assert apis[0]["endpointConfiguration"]["types"] == ["REGIONAL"]
    assert apigateway.ensure_rest_api(REGION, "other") != api_id


def test_lambda_proxy_routes_every_path_to_the_stage_alias(fake_aws):
    api_id = apigateway.ensure_rest_api(REGION, "shop")
    changed = apigateway.ensure_lambda_proxy(
        REGION, rest_api_id=api_id, function_name="shop", account_id=ACCOUNT
    )
    assert changed is True
    uri = (
        f"arn:aws:apigateway:{REGION}:lambda:path/2015-03-31/functions/"
        f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:shop:${{stageVariables.alias}}/invocations"
    )
    methods = _methods(api_id)
    assert set(methods) == {"/", "/{proxy+}"}
    for path in ("/", "/{proxy+}"):
        integration = methods[path]["ANY"]["methodIntegration"]
        assert (integration["type"], integration["httpMethod"], integration["uri"]) == (
            "AWS_PROXY",
            "POST",
            uri,
        )
    assert methods["/{proxy+}"]["ANY"]["requestParameters"] == {"method.request.path.proxy": True}


def test_lambda_proxy_twice_changes_nothing(fake_aws):
    api_id = _api_with_proxy()
    before = _methods(api_id)
    assert (
        apigateway.ensure_lambda_proxy(REGION, rest_api_id=api_id, function_name="shop", account_id=ACCOUNT)
        is False
    )
    assert _methods(api_id) == before


def test_new_stage_is_deployed_with_its_variables(fake_aws):
    api_id = _api_with_proxy()
    url = apigateway.ensure_stage(
        REGION, rest_api_id=api_id, stage="production", variables={"alias": "production"}
    )
    assert url == f"https://{api_id}.execute-api.{REGION}.amazonaws.com/production"
    stage = plain("apigateway").get_stage(restApiId=api_id, stageName="production")
    assert stage["variables"] == {"alias": "production"}
    assert [d["id"] for d in _deployments(api_id)] == [stage["deploymentId"]]
    assert apigateway.get_stage_variables(REGION, api_id, "production") == {"alias": "production"}


def test_stage_already_in_place_is_not_redeployed(fake_aws):
    api_id = _api_with_proxy()
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="production", variables={"alias": "production"})
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="production", variables={"alias": "production"})
    assert len(_deployments(api_id)) == 1


def test_changed_variables_are_set_without_a_new_deployment(fake_aws):
    api_id = _api_with_proxy()
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="staging", variables={"alias": "staging"})
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="staging", variables={"alias": "staging-2"})
    assert apigateway.get_stage_variables(REGION, api_id, "staging") == {"alias": "staging-2"}
    assert len(_deployments(api_id)) == 1


def test_changed_methods_reach_an_existing_stage(fake_aws):
    api_id = _api_with_proxy("shop")
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="production", variables={"alias": "production"})
    first = plain("apigateway").get_stage(restApiId=api_id, stageName="production")["deploymentId"]

    apigateway.ensure_lambda_proxy(REGION, rest_api_id=api_id, function_name="shop-v2", account_id=ACCOUNT)
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="production", variables={"alias": "production"})

    now = plain("apigateway").get_stage(restApiId=api_id, stageName="production")["deploymentId"]
    assert now != first
    assert len(_deployments(api_id)) == 2


def test_stages_of_one_api_keep_their_own_variables(fake_aws):
    api_id = _api_with_proxy()
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="production", variables={"alias": "production"})
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="staging", variables={"alias": "staging"})
    assert apigateway.get_stage_variables(REGION, api_id, "production") == {"alias": "production"}
    assert apigateway.get_stage_variables(REGION, api_id, "staging") == {"alias": "staging"}


def test_variables_of_a_missing_stage_are_empty(fake_aws):
    api_id = _api_with_proxy()
    assert apigateway.get_stage_variables(REGION, api_id, "nope") == {}


def _calls(service: str = "apigateway") -> list[str]:
    """The operations the control plane's client for ``service`` sends from now on."""
    from regions.aws.session import client

    seen: list[str] = []
    client(service, REGION).meta.events.register("before-call", lambda model, **_: seen.append(model.name))
    return seen


def _lambda_api(function_name: str = "shop", stage: str = "production") -> apigateway.LambdaApi:
    return apigateway.ensure_lambda_api(
        REGION, name="shop", function_name=function_name, account_id=ACCOUNT, stage=stage,
        variables={"alias": stage},
    )  # fmt: skip


def test_lambda_api_makes_a_new_api_without_reading_it_back(fake_aws):
    calls = _calls()
    made = _lambda_api()
    assert made.created is True
    assert made.endpoint == f"https://{made.id}.execute-api.{REGION}.amazonaws.com/production"
    assert [c for c in calls if c.startswith("Get")] == ["GetRestApis"]
    methods = _methods(made.id)
    assert {path: methods[path]["ANY"]["methodIntegration"]["type"] for path in methods} == {
        "/": "AWS_PROXY",
        "/{proxy+}": "AWS_PROXY",
    }
    stage = plain("apigateway").get_stage(restApiId=made.id, stageName="production")
    assert stage["variables"] == {"alias": "production"}
    # The deployment is marked with the methods as AWS reports them: checking the stage the
    # reading way finds nothing to redeploy.
    apigateway.ensure_stage(
        REGION, rest_api_id=made.id, stage="production", variables={"alias": "production"}
    )
    assert len(_deployments(made.id)) == 1


def test_lambda_api_in_place_costs_four_reads_and_changes_nothing(fake_aws):
    first = _lambda_api()
    calls = _calls()
    again = _lambda_api()
    assert (again.id, again.created, again.endpoint) == (first.id, False, first.endpoint)
    assert calls == ["GetRestApis", "GetResources", "GetStage", "GetDeployment"]
    assert len(_deployments(first.id)) == 1


def test_lambda_api_on_an_existing_api_adds_a_stage_and_follows_method_changes(fake_aws):
    api_id = _api_with_proxy("shop")
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="production", variables={"alias": "production"})
    staging = _lambda_api(stage="staging")
    assert (staging.id, staging.created) == (api_id, False)
    assert apigateway.get_stage_variables(REGION, api_id, "staging") == {"alias": "staging"}
    before = plain("apigateway").get_stage(restApiId=api_id, stageName="production")["deploymentId"]

    _lambda_api("shop-v2", stage="production")

    now = plain("apigateway").get_stage(restApiId=api_id, stageName="production")["deploymentId"]
    assert now != before
    uris = {m["ANY"]["methodIntegration"]["uri"] for m in _methods(api_id).values()}
    assert len(uris) == 1 and ":function:shop-v2:" in uris.pop()
    # A reading check agrees the stage now serves what the API holds.
    count = len(_deployments(api_id))
    apigateway.ensure_stage(REGION, rest_api_id=api_id, stage="production", variables={"alias": "production"})
    assert len(_deployments(api_id)) == count


def test_source_arn_covers_every_method_of_the_stage():
    assert apigateway.source_arn(REGION, account_id=ACCOUNT, rest_api_id="abc", stage="production") == (
        f"arn:aws:execute-api:{REGION}:{ACCOUNT}:abc/production/*"
    )


def test_custom_domain_is_regional_and_made_once(fake_aws):
    cert = acm.request_certificate(REGION, "api.example.com")
    name, zone = apigateway.ensure_custom_domain(REGION, domain="api.example.com", certificate_arn=cert)
    domain = plain("apigateway").get_domain_name(domainName="api.example.com")
    assert (name, zone) == (domain["regionalDomainName"], domain["regionalHostedZoneId"])
    assert domain["endpointConfiguration"]["types"] == ["REGIONAL"]
    assert domain["regionalCertificateArn"] == cert
    assert apigateway.ensure_custom_domain(REGION, domain="api.example.com", certificate_arn=cert) == (
        name,
        zone,
    )
    assert len(plain("apigateway").get_domain_names()["items"]) == 1


def test_base_path_mapping_is_made_once_and_follows_the_stage(fake_aws):
    api_id = _api_with_proxy()
    for stage in ("production", "staging"):
        apigateway.ensure_stage(REGION, rest_api_id=api_id, stage=stage, variables={"alias": stage})
    cert = acm.request_certificate(REGION, "api.example.com")
    apigateway.ensure_custom_domain(REGION, domain="api.example.com", certificate_arn=cert)

    apigateway.ensure_base_path_mapping(
        REGION, domain="api.example.com", rest_api_id=api_id, stage="production"
    )
    apigateway.ensure_base_path_mapping(
        REGION, domain="api.example.com", rest_api_id=api_id, stage="production"
    )
    mappings = plain("apigateway").get_base_path_mappings(domainName="api.example.com")["items"]
    assert mappings == [{"basePath": "(none)", "restApiId": api_id, "stage": "production"}]

    apigateway.ensure_base_path_mapping(REGION, domain="api.example.com", rest_api_id=api_id, stage="staging")
    mappings = plain("apigateway").get_base_path_mappings(domainName="api.example.com")["items"]
    assert mappings == [{"basePath": "(none)", "restApiId": api_id, "stage": "staging"}]


def test_an_existing_base_path_is_moved_to_the_new_stage(fake_aws):
    api_id = _api_with_proxy()
    for stage in ("production", "staging"):
        apigateway.ensure_stage(REGION, rest_api_id=api_id, stage=stage, variables={"alias": stage})
    cert = acm.request_certificate(REGION, "api.example.com")
    apigateway.ensure_custom_domain(REGION, domain="api.example.com", certificate_arn=cert)
    for stage in ("production", "production", "staging"):
        apigateway.ensure_base_path_mapping(
            REGION, domain="api.example.com", rest_api_id=api_id, stage=stage, base_path="v1"
        )
    mappings = plain("apigateway").get_base_path_mappings(domainName="api.example.com")["items"]
    assert mappings == [{"basePath": "v1", "restApiId": api_id, "stage": "staging"}]
