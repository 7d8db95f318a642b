"""The function exists with this release's code and configuration in ``$LATEST`` (created, or
updated where it differs), settled, before a version is published from it."""

from __future__ import annotations

import base64

from django.conf import settings

from regions.aws import iam, lambda_
from regions.aws.session import AwsError

from ..context import RegionRun, version_marker
from ..releases import release_env


def lambda_code_sha(sha256_hex: str) -> str:
    """Lambda reports a function's code hash as the base64 of the zip's raw SHA-256."""
    return base64.b64encode(bytes.fromhex(sha256_hex)).decode()


def existing_version(run: RegionRun):
    """The version this release already published in the region, if any (a resumed run)."""
    return lambda_.find_version(
        run.code, run.function, description_prefix=version_marker(run.release), role_arn=run.role
    )


def applies(run: RegionRun) -> bool:
    return True


def _settle(run: RegionRun, info: lambda_.FunctionInfo) -> None:
    """Wait for a create or update to finish unless Lambda's answer says it already has; the
    settled function's RevisionId is what publishing must find (see the version step)."""
    if info.state == "Pending" or info.last_update_status == "InProgress" or not info.state:
        info = lambda_.wait_until_updated(run.code, run.function, role_arn=run.role)
    run.revision_id = info.revision_id


def run(run: RegionRun) -> str:
    info = lambda_.get_function(run.code, run.function, role_arn=run.role)
    if info is not None:
        existing = existing_version(run)
        if existing is not None:
            return f"Version {existing.version} for this release already published; function untouched."
    run.version_searched = True  # (no function: no version of this release either)
    env = release_env(run.release).get(run.code, {})
    cfg = run.config
    artifact = run.release.artifact
    bucket, key = run.region.bucket, artifact.storage_key
    if info is None:
        created = _create(run, env=env, bucket=bucket, key=key)
        run.created_function = True
        _settle(run, created)
        return f"Created function {run.function} ({cfg['runtime']}, {cfg['memory_mb']} MB)."
    changed = []
    run.revision_id = info.revision_id
    if info.code_sha256 != lambda_code_sha(artifact.sha256):
        _settle(
            run,
            lambda_.update_code(run.code, name=run.function, s3_bucket=bucket, s3_key=key, role_arn=run.role),
        )
        changed.append("code")
    wanted = (cfg["runtime"], cfg["handler"], cfg["memory_mb"], cfg["timeout_s"], env)
    have = (info.runtime, info.handler, info.memory_mb, info.timeout_s, info.env)
    if wanted != have:
        _settle(
            run,
            lambda_.update_config(
                run.code, name=run.function, runtime=cfg["runtime"], handler=cfg["handler"],
                memory_mb=cfg["memory_mb"], timeout_s=cfg["timeout_s"], env=env, role_arn=run.role,
            ),
        )  # fmt: skip
        changed.append(f"configuration ({len(env)} env vars)")
    if not changed:
        return f"Function {run.function} already has this code and configuration."
    return f"Updated function {run.function}: {' and '.join(changed)}."


def _create(run: RegionRun, *, env: dict, bucket: str, key: str) -> lambda_.FunctionInfo:
    """Create the function with the execution role (the setting's, or the one this control
    plane makes). A role this process set up earlier is used without asking IAM again; if
    Lambda cannot assume it (deleted since), it is set up again and creation tried once more."""
    cfg = run.config

    def create(role: str, propagation_s: float) -> lambda_.FunctionInfo:
        return lambda_.create_function(
            run.code, name=run.function, role=role, runtime=cfg["runtime"],
            handler=cfg["handler"], memory_mb=cfg["memory_mb"], timeout_s=cfg["timeout_s"],
            env=env, s3_bucket=bucket, s3_key=key, description=f"{run.app.team.slug}/{run.app.slug}",
            role_arn=run.role, role_propagation_s=propagation_s,
        )  # fmt: skip

    if settings.AWS_LAMBDA_ROLE_ARN:
        return create(settings.AWS_LAMBDA_ROLE_ARN, settings.IAM_PROPAGATION_TIMEOUT)
    known = iam.known_lambda_role(role_arn=run.role)
    if known:
        try:
            return create(known, 0.0)  # set up and assumable when it was cached
        except AwsError as err:
            if err.code != "InvalidParameterValueException" or "role" not in err.message.lower():
                raise
            iam.forget_lambda_role(role_arn=run.role)
    return create(iam.ensure_lambda_role(role_arn=run.role), settings.IAM_PROPAGATION_TIMEOUT)
