"""Keyless login from CI: an OIDC ID token from the CI provider, exchanged for a short-lived
API token by the control plane (its trust policies decide)."""

from __future__ import annotations

from . import exits
from .api import httpx  # imported as api.py imports it (without httpx's own command-line tool)
from .exits import CliError


def github_actions_id_token(env: dict[str, str], audience: str) -> str:
    """Ask the GitHub Actions runner for an ID token for ``audience``. Needs the job's
    ``permissions: id-token: write`` (which sets ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN)."""
    url, bearer = env.get("ACTIONS_ID_TOKEN_REQUEST_URL", ""), env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "")
    if not url or not bearer:
        raise CliError(exits.USAGE, "no GitHub Actions ID token: give the job 'permissions: id-token: write'")
    try:
        # The runner's URL carries its own query (api-version=...): the audience is added to it.
        target = httpx.URL(url).copy_merge_params({"audience": audience})
        response = httpx.get(target, headers={"Authorization": f"Bearer {bearer}"}, timeout=30)
    except httpx.TransportError as exc:
        raise CliError(exits.UNREACHABLE, f"cannot reach the GitHub Actions token endpoint: {exc}")
    if response.status_code != 200:
        raise CliError(exits.USAGE, f"the GitHub Actions token endpoint answered {response.status_code}")
    try:
        return response.json()["value"]
    except (ValueError, KeyError, TypeError):
        raise CliError(exits.USAGE, "the GitHub Actions token endpoint answered without a token")


def ci_id_token(env: dict[str, str], audience: str) -> str:
    """The CI's ID token: ``CONTROLPLANE_OIDC_TOKEN`` when set (GitLab CI's ``id_tokens``, or any
    provider), else the GitHub Actions runner's; ``""`` when neither is available."""
    if env.get("CONTROLPLANE_OIDC_TOKEN"):
        return env["CONTROLPLANE_OIDC_TOKEN"].strip()
    if env.get("ACTIONS_ID_TOKEN_REQUEST_URL") and env.get("ACTIONS_ID_TOKEN_REQUEST_TOKEN"):
        return github_actions_id_token(env, audience)
    return ""
