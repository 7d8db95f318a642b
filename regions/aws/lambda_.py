"""Lambda functions, their published versions, stage aliases and invoke permissions."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from .session import AWS_EXCEPTIONS, AwsError, aws_errors, client, translate

T = TypeVar("T")

LATEST = "$LATEST"
# Codes for "no such thing": Lambda says ResourceNotFoundException; moto says it too.
_NOT_FOUND = {"ResourceNotFoundException", "NotFound"}
# AWS answers an existing alias/statement with ResourceConflictException; moto with ConflictException.
_CONFLICT = {"ResourceConflictException", "ConflictException"}


@dataclass(frozen=True)
class FunctionInfo:
    """``$LATEST`` of a function as Lambda reports it."""

    name: str
    arn: str
    code_sha256: str
    state: str
    last_update_status: str
    runtime: str
    handler: str
    memory_mb: int
    timeout_s: int
    env: dict[str, str] = field(default_factory=dict)
    version: str = LATEST
    revision_id: str = ""  # changes with every change to the function (see publish_version)


@dataclass(frozen=True)
class VersionInfo:
    """A published (immutable) version of a function."""

    version: str
    description: str
    code_sha256: str
    env: dict[str, str]
    runtime: str
    handler: str
    memory_mb: int
    timeout_s: int


@dataclass(frozen=True)
class AliasInfo:
    """An alias: the version it points at, plus extra versions and their traffic share (canary)."""

    name: str
    version: str
    weights: dict[str, float] = field(default_factory=dict)


def _env(config: dict) -> dict[str, str]:
    return dict((config.get("Environment") or {}).get("Variables") or {})


def _function_info(config: dict) -> FunctionInfo:
    return FunctionInfo(
        name=config["FunctionName"],
        arn=config["FunctionArn"],
        code_sha256=config.get("CodeSha256", ""),
        state=config.get("State") or "",
        last_update_status=config.get("LastUpdateStatus") or "",
        runtime=config.get("Runtime") or "",
        handler=config.get("Handler") or "",
        memory_mb=int(config.get("MemorySize") or 0),
        timeout_s=int(config.get("Timeout") or 0),
        env=_env(config),
        version=config.get("Version") or LATEST,
        revision_id=config.get("RevisionId") or "",
    )


def _version_info(config: dict) -> VersionInfo:
    return VersionInfo(
        version=config["Version"],
        description=config.get("Description") or "",
        code_sha256=config.get("CodeSha256", ""),
        env=_env(config),
        runtime=config.get("Runtime") or "",
        handler=config.get("Handler") or "",
        memory_mb=int(config.get("MemorySize") or 0),
        timeout_s=int(config.get("Timeout") or 0),
    )


def _alias_info(alias: dict) -> AliasInfo:
    weights = (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}
    return AliasInfo(
        name=alias["Name"],
        version=alias["FunctionVersion"],
        weights={str(k): float(v) for k, v in weights.items()},
    )


@contextlib.contextmanager
def _secrets_redacted(values: Iterable[str]) -> Iterator[None]:
    """Env values never leave in an error message: AWS validation messages and botocore's parameter
    checks quote the offending value, and errors end up in deployment events and logs."""
    try:
        yield
    except AWS_EXCEPTIONS as exc:
        error = translate(exc)
        message = error.message
        for value in sorted({str(v) for v in values if v is not None and len(str(v)) >= 4}, key=len)[::-1]:
            message = message.replace(value, "***")
        if message != error.message:
            error.message = message
            error.args = (error.code, message)
        raise error from None


def _lambda(region: str, role_arn: str):
    return client("lambda", region, role_arn=role_arn)


def _retry_while_updating(region: str, name: str, role_arn: str, call: Callable[[], T], timeout_s=300) -> T:
    """``call()``; while Lambda answers that an update is in progress or that the function is
    still Pending (ResourceConflictException), wait for it to settle and retry."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except AWS_EXCEPTIONS as exc:
            error = translate(exc, region=region)
            busy = "in progress" in error.message.lower() or "state: pending" in error.message.lower()
            if error.code not in _CONFLICT or not busy:
                raise error from exc
            if time.monotonic() > deadline:
                raise error from exc
            wait_until_updated(region, name, timeout_s=max(1, deadline - time.monotonic()), role_arn=role_arn)


@aws_errors
def get_function(region: str, name: str, *, role_arn: str = "") -> FunctionInfo | None:
    """``$LATEST`` of function ``name``, or None when there is no such function."""
    lam = _lambda(region, role_arn)
    try:
        return _function_info(lam.get_function_configuration(FunctionName=name))
    except lam.exceptions.ResourceNotFoundException:
        return None


@aws_errors
def create_function(
    region: str,
    *,
    name: str,
    role: str,
    runtime: str,
    handler: str,
    memory_mb: int,
    timeout_s: int,
    env: dict[str, str],
    s3_bucket: str,
    s3_key: str,
    description: str = "",
    role_arn: str = "",
    role_propagation_s: float = 40.0,
) -> FunctionInfo:
    """Create function ``name`` from the zip at ``s3_bucket/s3_key`` (not published).

    A freshly created execution role takes a few seconds to become assumable by Lambda (IAM is
    eventually consistent); for up to ``role_propagation_s`` the call is retried while Lambda says
    so, with growing pauses. If it never becomes assumable: AwsError ``RoleNotAssumable`` saying
    what to check. Raises AwsError otherwise (``ResourceConflictException`` when the function
    already exists)."""
    lam = _lambda(region, role_arn)
    started = time.monotonic()
    deadline = started + role_propagation_s
    pause = min(1.0, max(0.05, role_propagation_s / 40))
    with _secrets_redacted(env.values()):
        while True:
            try:
                config = lam.create_function(
                    FunctionName=name,
                    Role=role,
                    Runtime=runtime,
                    Handler=handler,
                    MemorySize=memory_mb,
                    Timeout=timeout_s,
                    Environment={"Variables": dict(env)},
                    Code={"S3Bucket": s3_bucket, "S3Key": s3_key},
                    Description=description,
                    PackageType="Zip",
                    Publish=False,
                )
                return _function_info(config)
            except lam.exceptions.InvalidParameterValueException as exc:
                message = exc.response.get("Error", {}).get("Message", "")
                if "cannot be assumed" not in message:
                    raise
                if time.monotonic() + pause > deadline:
                    if role_propagation_s <= 0:
                        raise
                    raise AwsError(
                        "RoleNotAssumable",
                        f"Lambda still cannot assume the execution role {role} after "
                        f"{time.monotonic() - started:.0f} s ({message}). Check that the role exists, "
                        "that its trust policy lets lambda.amazonaws.com call sts:AssumeRole, and that "
                        "no permissions boundary or SCP denies it; then deploy again.",
                        operation="CreateFunction",
                        retryable=False,
                        region=region,
                    ) from exc
                time.sleep(pause)
                pause = min(5.0, pause * 2)


@aws_errors
def update_code(region: str, *, name: str, s3_bucket: str, s3_key: str, role_arn: str = "") -> FunctionInfo:
    """Point ``$LATEST`` of ``name`` at the zip at ``s3_bucket/s3_key`` (not published); waits out an
    update already in progress first."""
    lam = _lambda(region, role_arn)
    config = _retry_while_updating(
        region,
        name,
        role_arn,
        lambda: lam.update_function_code(FunctionName=name, S3Bucket=s3_bucket, S3Key=s3_key, Publish=False),
    )
    return _function_info(config)


@aws_errors
def update_config(
    region: str,
    *,
    name: str,
    runtime: str,
    handler: str,
    memory_mb: int,
    timeout_s: int,
    env: dict[str, str],
    role_arn: str = "",
    role: str = "",
) -> FunctionInfo:
    """Set ``$LATEST``'s runtime, handler, memory, timeout and environment (replacing every
    variable), and its execution ``role`` when given; waits out an update already in progress."""
    lam = _lambda(region, role_arn)
    kwargs = {
        "FunctionName": name,
        "Runtime": runtime,
        "Handler": handler,
        "MemorySize": memory_mb,
        "Timeout": timeout_s,
        "Environment": {"Variables": dict(env)},
    }
    if role:
        kwargs["Role"] = role
    with _secrets_redacted(env.values()):
        config = _retry_while_updating(
            region, name, role_arn, lambda: lam.update_function_configuration(**kwargs)
        )
    return _function_info(config)


@aws_errors
def wait_until_updated(
    region: str, name: str, *, timeout_s: float = 300, role_arn: str = "", poll_s: float = 0.5
) -> FunctionInfo:
    """Poll until ``name`` is no longer Pending and its last update is no longer InProgress:
    first after 0.1 s, then twice as long each time up to ``poll_s`` (Lambda settles in about
    1-3 s, so a deploy waits at most about ``poll_s`` past the moment it did).

    Returns the settled ``$LATEST``. Raises AwsError ``FunctionFailed`` (with Lambda's reason)
    when the function or its last update failed, ``WaiterTimeout`` after ``timeout_s``, and
    ``ResourceNotFoundException`` when there is no such function."""
    lam = _lambda(region, role_arn)
    deadline = time.monotonic() + timeout_s
    pause = min(0.1, poll_s)
    while True:
        config = lam.get_function_configuration(FunctionName=name)
        state = config.get("State") or ""
        update = config.get("LastUpdateStatus") or ""
        if state == "Failed" or update == "Failed":
            prefix = "LastUpdateStatus" if update == "Failed" else "State"
            reason = config.get(f"{prefix}Reason") or "no reason given"
            code = config.get(f"{prefix}ReasonCode") or ""
            raise AwsError(
                "FunctionFailed",
                f"{name}: {reason}" + (f" ({code})" if code else ""),
                operation="GetFunctionConfiguration",
                retryable=False,
                region=region,
            )
        if state != "Pending" and update != "InProgress":
            return _function_info(config)
        if time.monotonic() + pause > deadline:
            raise AwsError(
                "WaiterTimeout",
                f"{name} still {state or 'updating'}/{update or '-'} after {timeout_s:.0f}s",
                operation="GetFunctionConfiguration",
                region=region,
            )
        time.sleep(pause)
        pause = min(poll_s, pause * 2)


@aws_errors
def publish_version(
    region: str,
    *,
    name: str,
    description: str,
    code_sha256: str = "",
    revision_id: str = "",
    role_arn: str = "",
) -> str:
    """Publish ``$LATEST`` as a new version and return its number.

    With ``code_sha256`` Lambda refuses (AwsError) when ``$LATEST`` holds other code, and with
    ``revision_id`` (the function's RevisionId after the caller's last change) when anything
    changed since (AwsError ``PreconditionFailedException``): another change to ``$LATEST``, its
    environment included, is never published under this description. Note that Lambda returns
    the latest existing version, with *its* description, when neither code nor configuration
    changed since it was published."""
    lam = _lambda(region, role_arn)
    kwargs = {"FunctionName": name, "Description": description}
    if code_sha256:
        kwargs["CodeSha256"] = code_sha256
    if revision_id:
        kwargs["RevisionId"] = revision_id
    return _retry_while_updating(region, name, role_arn, lambda: lam.publish_version(**kwargs))["Version"]


def _versions(region: str, name: str, role_arn: str) -> list[dict]:
    lam = _lambda(region, role_arn)
    pages = lam.get_paginator("list_versions_by_function").paginate(FunctionName=name)
    try:
        return [c for page in pages for c in page.get("Versions", []) if c.get("Version") != LATEST]
    except lam.exceptions.ResourceNotFoundException:
        return []  # AWS answers so for a function that does not exist (moto lists nothing)


@aws_errors
def list_versions(region: str, name: str, *, role_arn: str = "") -> list[VersionInfo]:
    """Every published version of ``name``, oldest first (``$LATEST`` excluded); none when there
    is no such function."""
    versions = [_version_info(config) for config in _versions(region, name, role_arn)]
    return sorted(versions, key=lambda v: int(v.version))


@aws_errors
def find_version(
    region: str, name: str, *, description_prefix: str, role_arn: str = ""
) -> VersionInfo | None:
    """The newest published version whose description starts with ``description_prefix``, or None
    (also when there is no such function)."""
    versions = list_versions(region, name, role_arn=role_arn)
    found = [v for v in versions if v.description.startswith(description_prefix)]
    return found[-1] if found else None


@aws_errors
def get_version(region: str, name: str, version: str, *, role_arn: str = "") -> VersionInfo | None:
    """Published ``version`` of ``name``, or None when it (or the function) does not exist."""
    lam = _lambda(region, role_arn)
    try:
        return _version_info(lam.get_function_configuration(FunctionName=name, Qualifier=str(version)))
    except lam.exceptions.ResourceNotFoundException:
        return None


@aws_errors
def get_alias(region: str, name: str, alias: str, *, role_arn: str = "") -> AliasInfo | None:
    """Alias ``alias`` of ``name``, or None when it (or the function) does not exist."""
    lam = _lambda(region, role_arn)
    try:
        return _alias_info(lam.get_alias(FunctionName=name, Name=alias))
    except lam.exceptions.ResourceNotFoundException:
        return None


@aws_errors
def list_aliases(region: str, name: str, *, role_arn: str = "") -> list[AliasInfo]:
    """Every alias of ``name`` (the versions they and their canary weights need must be kept)."""
    pages = _lambda(region, role_arn).get_paginator("list_aliases").paginate(FunctionName=name)
    return [_alias_info(alias) for page in pages for alias in page.get("Aliases", [])]


UNREAD = object()  # ensure_alias: the caller has not read the alias


def _same_weights(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-9 for k in a)


@aws_errors
def ensure_alias(
    region: str,
    *,
    name: str,
    alias: str,
    version: str,
    weights: dict[str, float] | None = None,
    role_arn: str = "",
    current: AliasInfo | None | object = UNREAD,
) -> AliasInfo:
    """Alias ``alias`` of ``name`` pointing at ``version`` with exactly ``weights`` (``{version:
    share}`` of extra traffic, for a canary; none clears them). Nothing is called when it already is.

    ``current``: the alias as the caller has just read it (None: it does not exist), to skip
    reading it again."""
    lam = _lambda(region, role_arn)
    wanted = AliasInfo(alias, str(version), {str(k): float(v) for k, v in (weights or {}).items()})
    if current is UNREAD:
        current = get_alias(region, name, alias, role_arn=role_arn)
    if current and current.version == wanted.version and _same_weights(current.weights, wanted.weights):
        return current
    routing = {"AdditionalVersionWeights": wanted.weights}
    if current is None:
        try:
            created = lam.create_alias(
                FunctionName=name, Name=alias, FunctionVersion=wanted.version, RoutingConfig=routing
            )
            return _alias_info(created)
        except AWS_EXCEPTIONS as exc:
            if translate(exc).code not in _CONFLICT:
                raise
            # Created by someone else between our read and our write: move it like any other.
    return _alias_info(
        lam.update_alias(FunctionName=name, Name=alias, FunctionVersion=wanted.version, RoutingConfig=routing)
    )


@aws_errors
def move_alias(region: str, *, name: str, alias: str, version: str, role_arn: str = "") -> AliasInfo:
    """Point ``alias`` at ``version`` with one call, dropping any canary weights (a rollback: the
    caller has just checked that the version exists). The alias is created if it is missing."""
    lam = _lambda(region, role_arn)
    try:
        return _alias_info(
            lam.update_alias(
                FunctionName=name,
                Name=alias,
                FunctionVersion=str(version),
                RoutingConfig={"AdditionalVersionWeights": {}},
            )  # fmt: skip
        )
    except lam.exceptions.ResourceNotFoundException:
        return _alias_info(lam.create_alias(FunctionName=name, Name=alias, FunctionVersion=str(version)))


@aws_errors
def delete_version(region: str, name: str, version: str, *, role_arn: str = "") -> None:
    """Delete published ``version`` (already gone is fine). Raises AwsError for ``$LATEST`` and
    (``ResourceConflictException``) when an alias still points at it."""
    if str(version) == LATEST or not str(version).isdigit():
        raise AwsError(
            "InvalidParameterValueException",
            f"{version!r} is not a published version",
            operation="DeleteFunction",
            retryable=False,
            region=region,
        )
    lam = _lambda(region, role_arn)
    with contextlib.suppress(lam.exceptions.ResourceNotFoundException):
        lam.delete_function(FunctionName=name, Qualifier=str(version))


def _statements(lam, name: str, qualifier: str) -> list[dict]:
    try:
        policy = lam.get_policy(FunctionName=name, Qualifier=qualifier)["Policy"]
    except lam.exceptions.ResourceNotFoundException:
        return []
    return json.loads(policy).get("Statement", [])


def _source_arn(statement: dict) -> str:
    condition = statement.get("Condition") or {}
    return (condition.get("ArnLike") or {}).get("AWS:SourceArn", "")


@aws_errors
def ensure_invoke_permission(
    region: str,
    *,
    name: str,
    alias: str,
    source_arn: str,
    statement_id: str,
    role_arn: str = "",
    new_alias: bool = False,
) -> None:
    """Let API Gateway (calls matching ``source_arn``) invoke ``name:alias``, as statement
    ``statement_id`` of the alias's resource policy. A statement with that id but another source
    ARN is replaced. ``new_alias``: the caller has just created the alias, which therefore has
    no policy to read."""
    lam = _lambda(region, role_arn)
    # moto keeps one policy per function and lets two statements share an id; AWS keeps one per
    # qualifier and refuses the second. Reading first gives the same answer on both.
    existing = [] if new_alias else [s for s in _statements(lam, name, alias) if s.get("Sid") == statement_id]
    if any(_source_arn(s) == source_arn for s in existing):
        return
    if existing:
        lam.remove_permission(FunctionName=name, Qualifier=alias, StatementId=statement_id)
    try:
        lam.add_permission(
            FunctionName=name,
            Qualifier=alias,
            StatementId=statement_id,
            Action="lambda:InvokeFunction",
            Principal="apigateway.amazonaws.com",
            SourceArn=source_arn,
        )
    except lam.exceptions.ResourceConflictException:
        return  # added by someone else between our read and our write


@aws_errors
def delete_alias(region: str, name: str, alias: str, *, role_arn: str = "") -> bool:
    """Delete alias ``alias`` of ``name``; False when it (or the function) was already gone."""
    lam = _lambda(region, role_arn)
    try:
        lam.delete_alias(FunctionName=name, Name=alias)
    except lam.exceptions.ResourceNotFoundException:
        return False
    return True


@aws_errors
def delete_function(region: str, name: str, *, role_arn: str = "") -> bool:
    """Delete function ``name`` with every version, alias and permission it has; False when it was
    already gone."""
    lam = _lambda(region, role_arn)
    try:
        lam.delete_function(FunctionName=name)
    except lam.exceptions.ResourceNotFoundException:
        return False
    return True
