"""The git facts of a deploy: from the working tree when there is one, else from the CI's
environment (GitHub Actions, GitLab CI), then from flags."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

SCP_LIKE = re.compile(r"^[\w.-]+@([\w.-]+):(.+)$")


def _git(cwd: Path, *args: str) -> str:
    try:
        result = subprocess.run(
            ["git", "-C", str(cwd), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip() if result.returncode == 0 else ""


def web_url(remote: str) -> str:
    """``https://host/owner/name`` for a remote URL (https or scp-like ssh), or ``""``."""
    remote = remote.strip()
    match = SCP_LIKE.match(remote)
    if match:
        host, path = match.groups()
    elif remote.startswith(("https://", "http://", "ssh://")):
        rest = remote.split("://", 1)[1]
        host, _, path = rest.rsplit("@", 1)[-1].partition("/")
        host = host.split(":")[0]
    else:
        return ""
    path = path.strip("/").removesuffix(".git")
    return f"https://{host}/{path}" if host and path else ""


def commit_url(repo_web: str, sha: str) -> str:
    if not repo_web or not sha:
        return ""
    sep = "/-/commit/" if "gitlab" in repo_web else "/commit/"
    return f"{repo_web}{sep}{sha}"


def from_ci_env(env: dict[str, str]) -> dict[str, str]:
    if env.get("GITHUB_ACTIONS") == "true":
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        repo = f"{server}/{env['GITHUB_REPOSITORY']}" if env.get("GITHUB_REPOSITORY") else ""
        sha = env.get("GITHUB_SHA", "")
        return {
            "sha": sha,
            "branch": env.get("GITHUB_HEAD_REF") or env.get("GITHUB_REF_NAME", ""),
            "author": env.get("GITHUB_ACTOR", ""),
            "url": commit_url(repo, sha),
        }
    if env.get("GITLAB_CI") == "true":
        sha = env.get("CI_COMMIT_SHA", "")
        return {
            "sha": sha,
            "branch": env.get("CI_COMMIT_REF_NAME", ""),
            "message": env.get("CI_COMMIT_MESSAGE", ""),
            "author": env.get("CI_COMMIT_AUTHOR", ""),
            "url": commit_url(env.get("CI_PROJECT_URL", ""), sha),
        }
    return {}


def commit_facts(path: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    """``sha``, ``branch``, ``message``, ``author``, ``url`` (the keys known), or ``{}``."""
    env = dict(os.environ) if env is None else env
    where = path if path.is_dir() else path.parent
    facts = {k: v for k, v in from_ci_env(env).items() if v}
    sha = _git(where, "rev-parse", "--verify", "HEAD")
    if not sha:
        return facts
    out = _git(where, "log", "-1", "--format=%an <%ae>%x00%B", sha)
    author, _, message = out.partition("\x00")
    branch = _git(where, "symbolic-ref", "--short", "-q", "HEAD")
    local = {
        "sha": sha,
        "branch": branch,
        "message": message.strip(),
        "author": author.strip(),
        "url": commit_url(web_url(_git(where, "remote", "get-url", "origin")), sha),
    }
    # CI checkouts are often detached: the CI's own variables fill what git cannot say.
    return {**facts, **{k: v for k, v in local.items() if v}}
