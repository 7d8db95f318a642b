"""The CLI run as a user runs it: a subprocess (``python -m controlplane_cli``) talking to a real
web server (pytest-django's live server), with a real Celery worker and moto behind it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLI_SRC = ROOT / "cli"
if str(CLI_SRC) not in sys.path:  # an environment where the cli distribution is not installed
    sys.path.insert(0, str(CLI_SRC))

# Variables of the CI the suite itself may run in, which the CLI reads.
CI_PREFIXES = ("CONTROLPLANE_", "GITHUB_", "GITLAB_", "CI_", "ACTIONS_")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(CI_PREFIXES)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CLI_SRC), env.get("PYTHONPATH", "")]))
    env["PYTHONUNBUFFERED"] = "1"
    return {**env, **extra}


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "controlplane_cli", *args]


def run_cli(*args: str, env: dict[str, str], stdin: str | None = None, timeout: float = 120):
    return subprocess.run(
        cli_argv(*args), env=env, input=stdin, capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


@pytest.fixture
def cli_env_for():
    """``cli_env_for(url, token)``: the environment of a CLI run against that control plane."""

    def make(url: str, token: str = "", **extra: str) -> dict[str, str]:
        values = {"CONTROLPLANE_URL": url, **extra}
        if token:
            values["CONTROLPLANE_TOKEN"] = token
        return cli_env(**values)

    return make
