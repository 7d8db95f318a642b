"""The regional REST API (``{proxy+}`` → the stage alias), and the stage's custom domain with its
certificate and base path mapping when it has one. Runs alongside the function steps."""

from __future__ import annotations

from regions.aws import acm, apigateway
from regions.aws.session import account_id
from regions.models import AppRegion

from ..context import RegionRun


def applies(run: RegionRun) -> bool:
    return True


def run(run: RegionRun) -> str:
    api = apigateway.ensure_lambda_api(
        run.code, name=run.function, function_name=run.function,
        account_id=account_id(run.code, role_arn=run.role), stage=run.stage.name,
        variables={"alias": run.stage.name}, role_arn=run.role,
    )  # fmt: skip
    run.api_id, run.endpoint = api.id, api.endpoint
    AppRegion.objects.filter(app=run.app, region=run.region).exclude(rest_api_id=api.id).update(
        rest_api_id=api.id
    )
    message = f"REST API {run.api_id} stage '{run.stage.name}' → alias {run.stage.name}: {run.endpoint}"
    if run.stage.domain:
        cert = (run.stage.certificate_arns or {}).get(run.code) or acm.find_certificate(
            run.code, run.stage.domain, role_arn=run.role
        )
        if not cert:
            cert = acm.request_certificate(run.code, run.stage.domain, role_arn=run.role)
        run.regional_domain = apigateway.ensure_custom_domain(
            run.code, domain=run.stage.domain, certificate_arn=cert, role_arn=run.role
        )
        apigateway.ensure_base_path_mapping(
            run.code, domain=run.stage.domain, rest_api_id=run.api_id, stage=run.stage.name, role_arn=run.role
        )
        message += f"; custom domain {run.stage.domain} → {run.regional_domain[0]}"
    return message
