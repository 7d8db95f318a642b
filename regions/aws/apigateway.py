"""Regional REST APIs in front of a function: ``ANY /`` and ``ANY /{proxy+}`` invoke the alias named
by the stage's ``alias`` variable, so moving a stage is moving an alias, not redeploying the API."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from .session import aws_errors, client

PROXY_PATH = "/{proxy+}"
DEPLOYMENT_MARKER = "controlplane methods "  # + fingerprint of the methods a deployment was made from
_NO_BASE_PATH = "(none)"


def _partition(region: str) -> str:
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def _dns_suffix(region: str) -> str:
    return "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"


def invoke_url(region: str, rest_api_id: str, stage: str) -> str:
    """``https://{id}.execute-api.{region}.amazonaws.com/{stage}``."""
    return f"https://{rest_api_id}.execute-api.{region}.{_dns_suffix(region)}/{stage}"


def lambda_integration_uri(region: str, *, account_id: str, function_name: str) -> str:
    """The AWS_PROXY integration URI invoking ``function_name:${stageVariables.alias}``."""
    partition = _partition(region)
    function_arn = (
        f"arn:{partition}:lambda:{region}:{account_id}:function:{function_name}:${{stageVariables.alias}}"
    )
    return f"arn:{partition}:apigateway:{region}:lambda:path/2015-03-31/functions/{function_arn}/invocations"


def source_arn(region: str, *, account_id: str, rest_api_id: str, stage: str = "*") -> str:
    """The ``execute-api`` ARN covering every method and path of ``stage`` (for the Lambda
    invoke permission)."""
    return f"arn:{_partition(region)}:execute-api:{region}:{account_id}:{rest_api_id}/{stage}/*"


def _api(region: str, role_arn: str):
    return client("apigateway", region, role_arn=role_arn)


@dataclass(frozen=True)
class RestApi:
    """A REST API found or made by :func:`_find_or_create`; ``root_id`` is set only when it was
    just created (its one resource is then ``/``, and it has no stages)."""

    id: str
    root_id: str = ""

    @property
    def created(self) -> bool:
        return bool(self.root_id)


def _find_or_create(api, name: str) -> RestApi:
    """The REST API called ``name`` (the oldest if several), created as a REGIONAL API when there
    is none."""
    found = [
        item
        for page in api.get_paginator("get_rest_apis").paginate(PaginationConfig={"PageSize": 500})
        for item in page.get("items", [])
        if item.get("name") == name
    ]
    if found:
        return RestApi(min(found, key=lambda item: item.get("createdDate") or 0)["id"])
    created = api.create_rest_api(
        name=name,
        description="Managed by controlplane",
        endpointConfiguration={"types": ["REGIONAL"]},
    )
    return RestApi(created["id"], root_id=created["rootResourceId"])


@aws_errors
def ensure_rest_api(region: str, name: str, *, role_arn: str = "") -> str:
    """The id of the REST API called ``name`` (see :func:`_find_or_create`)."""
    return _find_or_create(_api(region, role_arn), name).id


def _resources(api, rest_api_id: str) -> list[dict]:
    pages = api.get_paginator("get_resources").paginate(
        restApiId=rest_api_id, embed=["methods"], PaginationConfig={"PageSize": 500}
    )
    return [item for page in pages for item in page.get("items", [])]


def _proxy_methods(api, rest_api_id: str, uri: str, resources: list[dict]) -> tuple[list[dict], bool]:
    """Make ``ANY /`` and ``ANY /{proxy+}`` integrate with ``uri`` given the API's ``resources``
    (with their methods); returns the resources as they are afterwards, and whether anything
    changed. Calls run one after another: API Gateway refuses concurrent changes to one API."""
    by_path = {item["path"]: dict(item) for item in resources}
    root = by_path["/"]
    proxy = by_path.get(PROXY_PATH)
    changed = False
    if proxy is None:
        made = api.create_resource(restApiId=rest_api_id, parentId=root["id"], pathPart="{proxy+}")
        proxy = by_path[PROXY_PATH] = {"id": made["id"], "path": PROXY_PATH}
        changed = True
    for resource in (root, proxy):
        methods = resource["resourceMethods"] = dict(resource.get("resourceMethods") or {})
        method = methods.get("ANY")
        if method is None:
            params = {"method.request.path.proxy": True} if resource is proxy else {}
            api.put_method(
                restApiId=rest_api_id,
                resourceId=resource["id"],
                httpMethod="ANY",
                authorizationType="NONE",
                requestParameters=params,
            )
            method = methods["ANY"] = {"authorizationType": "NONE"}
            changed = True
        integration = method.get("methodIntegration") or {}
        if integration.get("type") != "AWS_PROXY" or integration.get("uri") != uri:
            api.put_integration(
                restApiId=rest_api_id,
                resourceId=resource["id"],
                httpMethod="ANY",
                type="AWS_PROXY",
                integrationHttpMethod="POST",
                uri=uri,
            )
            integration = {"type": "AWS_PROXY", "httpMethod": "POST", "uri": uri}
            methods["ANY"] = {**method, "methodIntegration": integration}
            changed = True
    return list(by_path.values()), changed


@aws_errors
def ensure_lambda_proxy(
    region: str, *, rest_api_id: str, function_name: str, account_id: str, role_arn: str = ""
) -> bool:
    """``ANY /`` and ``ANY /{proxy+}`` with an AWS_PROXY integration invoking
    ``function_name:${stageVariables.alias}``. Returns True when anything had to change (the
    change reaches a stage at its next :func:`ensure_stage`)."""
    api = _api(region, role_arn)
    uri = lambda_integration_uri(region, account_id=account_id, function_name=function_name)
    return _proxy_methods(api, rest_api_id, uri, _resources(api, rest_api_id))[1]


def _fingerprint(resources: list[dict]) -> str:
    """A digest of every method and integration of an API's ``resources``: a stage whose
    deployment was made from another digest serves stale methods and needs a new deployment."""
    shape = {}
    for resource in resources:
        for verb, method in (resource.get("resourceMethods") or {}).items():
            integration = method.get("methodIntegration") or {}
            shape[f"{verb} {resource['path']}"] = [
                method.get("authorizationType"),
                integration.get("type"),
                integration.get("httpMethod"),
                integration.get("uri"),
            ]
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:20]


def _ensure_stage(
    api, region: str, rest_api_id: str, stage: str, variables: dict[str, str], fingerprint: str, new_api: bool
) -> str:
    marker = DEPLOYMENT_MARKER + fingerprint
    current = None
    if not new_api:  # a REST API made moments ago has no stages
        try:
            current = api.get_stage(restApiId=rest_api_id, stageName=stage)
        except api.exceptions.NotFoundException:
            pass
    if current is None:
        api.create_deployment(
            restApiId=rest_api_id, stageName=stage, variables=dict(variables), description=marker
        )
        return invoke_url(region, rest_api_id, stage)
    operations = []
    deployed = api.get_deployment(restApiId=rest_api_id, deploymentId=current["deploymentId"])
    if deployed.get("description") != marker:
        deployment = api.create_deployment(restApiId=rest_api_id, description=marker)
        operations.append({"op": "replace", "path": "/deploymentId", "value": deployment["id"]})
    have = current.get("variables") or {}
    for key, value in sorted(variables.items()):
        if have.get(key) != value:
            operations.append({"op": "replace", "path": f"/variables/{key}", "value": value})
    if operations:
        api.update_stage(restApiId=rest_api_id, stageName=stage, patchOperations=operations)
    return invoke_url(region, rest_api_id, stage)


@aws_errors
def ensure_stage(
    region: str, *, rest_api_id: str, stage: str, variables: dict[str, str], role_arn: str = ""
) -> str:
    """Stage ``stage`` serving the API's current methods, with ``variables`` set (other variables are
    left alone). A deployment is created only when the stage is new or its methods changed.
    Returns the stage's invoke URL."""
    api = _api(region, role_arn)
    fingerprint = _fingerprint(_resources(api, rest_api_id))
    return _ensure_stage(api, region, rest_api_id, stage, variables, fingerprint, new_api=False)


@dataclass(frozen=True)
class LambdaApi:
    id: str
    endpoint: str  # the stage's invoke URL
    created: bool  # the REST API was made by this call


@aws_errors
def ensure_lambda_api(
    region: str,
    *,
    name: str,
    function_name: str,
    account_id: str,
    stage: str,
    variables: dict[str, str],
    role_arn: str = "",
) -> LambdaApi:
    """What :func:`ensure_rest_api`, :func:`ensure_lambda_proxy` and :func:`ensure_stage` do one
    after another, reading each thing once: the API's resources are read once (not at all for an
    API this call creates), and the stage's deployment is checked against the methods as they
    are after the changes, so a deploy to a region that has everything costs four reads."""
    api = _api(region, role_arn)
    found = _find_or_create(api, name)
    uri = lambda_integration_uri(region, account_id=account_id, function_name=function_name)
    resources = [{"id": found.root_id, "path": "/"}] if found.created else _resources(api, found.id)
    resources, _ = _proxy_methods(api, found.id, uri, resources)
    endpoint = _ensure_stage(
        api, region, found.id, stage, variables, _fingerprint(resources), new_api=found.created
    )
    return LambdaApi(found.id, endpoint, found.created)


@aws_errors
def get_stage_variables(region: str, rest_api_id: str, stage: str, *, role_arn: str = "") -> dict[str, str]:
    """The stage's variables; ``{}`` when the stage does not exist."""
    api = _api(region, role_arn)
    try:
        return dict(api.get_stage(restApiId=rest_api_id, stageName=stage).get("variables") or {})
    except api.exceptions.NotFoundException:
        return {}


@aws_errors
def ensure_custom_domain(
    region: str, *, domain: str, certificate_arn: str, role_arn: str = ""
) -> tuple[str, str]:
    """Regional custom domain ``domain`` served with ``certificate_arn`` (an ACM certificate in the same
    region). Returns its regional domain name and hosted zone id (the Route 53 alias target)."""
    api = _api(region, role_arn)
    try:
        current = api.get_domain_name(domainName=domain)
    except api.exceptions.NotFoundException:
        current = api.create_domain_name(
            domainName=domain,
            regionalCertificateArn=certificate_arn,
            endpointConfiguration={"types": ["REGIONAL"]},
            securityPolicy="TLS_1_2",
        )
    else:
        if current.get("regionalCertificateArn") != certificate_arn:
            current = api.update_domain_name(
                domainName=domain,
                patchOperations=[
                    {"op": "replace", "path": "/regionalCertificateArn", "value": certificate_arn}
                ],
            )
    return current["regionalDomainName"], current["regionalHostedZoneId"]


@aws_errors
def ensure_base_path_mapping(
    region: str, *, domain: str, rest_api_id: str, stage: str, base_path: str = "", role_arn: str = ""
) -> None:
    """Requests to ``https://{domain}/{base_path}`` go to ``stage`` of the API (the whole domain when
    ``base_path`` is empty); an existing mapping of that path to something else is moved."""
    api = _api(region, role_arn)
    wanted_path = base_path or _NO_BASE_PATH
    # Create first, read on conflict: moto cannot read the mappings of a domain that has none yet
    # (it fails where AWS answers an empty list), and AWS answers a duplicate with ConflictException.
    kwargs = {"domainName": domain, "restApiId": rest_api_id, "stage": stage}
    if base_path:
        kwargs["basePath"] = base_path
    try:
        api.create_base_path_mapping(**kwargs)
        return
    except api.exceptions.ConflictException:
        pass
    current = api.get_base_path_mapping(domainName=domain, basePath=wanted_path)
    operations = []
    if current.get("restApiId") != rest_api_id:
        operations.append({"op": "replace", "path": "/restapiId", "value": rest_api_id})
    if current.get("stage") != stage:
        operations.append({"op": "replace", "path": "/stage", "value": stage})
    if operations:
        api.update_base_path_mapping(domainName=domain, basePath=wanted_path, patchOperations=operations)


@aws_errors
def find_rest_api(region: str, name: str, *, role_arn: str = "") -> str | None:
    """The id of the REST API called ``name`` (the oldest if several), or None."""
    found = [
        item
        for page in _api(region, role_arn)
        .get_paginator("get_rest_apis")
        .paginate(PaginationConfig={"PageSize": 500})
        for item in page.get("items", [])
        if item.get("name") == name
    ]
    return min(found, key=lambda item: item.get("createdDate") or 0)["id"] if found else None


@aws_errors
def delete_stage(region: str, rest_api_id: str, stage: str, *, role_arn: str = "") -> bool:
    """Delete ``stage`` of the API; False when it (or the API) was already gone."""
    api = _api(region, role_arn)
    try:
        api.delete_stage(restApiId=rest_api_id, stageName=stage)
    except api.exceptions.NotFoundException:
        return False
    return True


@aws_errors
def delete_rest_api(region: str, rest_api_id: str, *, role_arn: str = "") -> bool:
    """Delete the REST API with its stages and deployments; False when it was already gone."""
    api = _api(region, role_arn)
    try:
        api.delete_rest_api(restApiId=rest_api_id)
    except api.exceptions.NotFoundException:
        return False
    return True


@aws_errors
def delete_custom_domain(region: str, domain: str, *, role_arn: str = "") -> bool:
    """Delete custom domain ``domain`` and its base path mappings; False when it was already gone."""
    api = _api(region, role_arn)
    try:
        api.delete_domain_name(domainName=domain)
    except api.exceptions.NotFoundException:
        return False
    return True
