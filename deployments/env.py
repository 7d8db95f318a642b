"""Env var rules (Lambda's) and the one resolver of an app's effective env."""

from __future__ import annotations

import json
import re

from controlplane.errors import DomainError

# Lambda's own pattern for a variable name: a letter, then one or more letters, digits, underscores.
KEY_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_]+$")
# Lambda sets these itself and refuses them in a function's configuration.
RESERVED_KEYS = frozenset(
    {
        "_HANDLER",
        "_X_AMZN_TRACE_ID",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
        "AWS_EXECUTION_ENV",
        "AWS_ACCESS_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
    }
)
RESERVED_PREFIXES = ("AWS_LAMBDA_",)
# Under the reserved prefix, but meant to be set by the function's owner.
SETTABLE_KEYS = frozenset({"AWS_LAMBDA_EXEC_WRAPPER"})
ENV_SIZE_LIMIT = 4096  # bytes, Lambda's limit for all of a function's variables together


class InvalidEnvVar(DomainError):
    code = "invalid_env_var"
    status_code = 400


class EnvTooLarge(DomainError):
    code = "env_too_large"
    status_code = 400


def env_key_problem(key: str) -> str | None:
    """None when ``key`` is a valid Lambda env var name, otherwise the reason."""
    if key not in SETTABLE_KEYS and (key in RESERVED_KEYS or key.startswith(RESERVED_PREFIXES)):
        return f"'{key}' is reserved by AWS Lambda and cannot be set."
    if not key or not KEY_RE.match(key):
        return (
            f"'{key}' is not a valid env var name: it must start with a letter, be at least 2 "
            "characters long and contain only letters, digits and underscores."
        )
    if len(key) > 128:
        return "Env var names are at most 128 characters."
    return None


def env_size(env: dict[str, str]) -> int:
    """Bytes Lambda counts for a set of variables (their JSON, as the API carries them)."""
    return len(json.dumps(env, separators=(",", ":"), ensure_ascii=False).encode())


def effective_env(rows, *, stage_id: int, region_id: int) -> dict[str, str]:
    """The env for one stage in one region from an app's rows: the most specific row per key wins.

    ``rows`` are EnvVar-like objects (key, value, stage_id, region_id). Raises EnvTooLarge when the
    result is over Lambda's 4 KB limit, naming the largest keys.
    """
    best: dict[str, tuple[int, str]] = {}
    for row in rows:
        if row.stage_id not in (None, stage_id) or row.region_id not in (None, region_id):
            continue
        spec = (2 if row.region_id else 0) + (1 if row.stage_id else 0)
        if row.key not in best or spec > best[row.key][0]:
            best[row.key] = (spec, row.value)
    env = {key: value for key, (_, value) in sorted(best.items())}
    size = env_size(env)
    if size > ENV_SIZE_LIMIT:
        largest = sorted(env, key=lambda k: len(k) + len(env[k].encode()), reverse=True)[:3]
        raise EnvTooLarge(
            f"The env vars come to {size} bytes, over Lambda's {ENV_SIZE_LIMIT}-byte limit. "
            f"Largest: {', '.join(largest)}."
        )
    return env


def resolve_env(*, app, stage, region) -> dict[str, str]:
    """The effective env of ``app`` for ``stage`` in ``region``: region+stage > region > stage > app.

    Raises EnvTooLarge over Lambda's 4 KB limit.
    """
    return effective_env(app.env_vars.all(), stage_id=stage.pk, region_id=region.pk)
