"""The README's quick start, run as a newcomer would: `scripts/dev.py up` on embedded defaults in a
fresh data folder, then the commands of "Your first deploy" exactly as the README gives them (only
the ports differ). The stack's worker is the plain `celery -A controlplane worker`, so the same run
shows that it deploys the regions of one deployment at once."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.support.processes import wait_for

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def readme_block(heading: str) -> str:
    """The first ```sh block under ``heading`` in the README."""
    text = README.read_text()
    section = text[text.index(heading) :]
    match = re.search(r"```sh\n(.*?)```", section, re.S)
    assert match, f"no sh block under {heading!r}"
    return match.group(1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free loopback ports (the local regions take one per
    region after their base port)."""
    for base in range(30000, 60000, count):
        socks = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports")


@pytest.fixture
def dev_stack(tmp_path):
    """`python3 scripts/dev.py up` in a fresh data folder on free ports, with a newcomer's
    environment (no test settings, no database or broker URLs: the embedded defaults)."""
    ports = {"port": free_port(), "moto_port": free_port(), "regions_port": free_port_range(40)}
    env = {
        "PATH": os.environ["PATH"],
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
        "CONTROLPLANE_PYTHON": sys.executable,
        "CONTROLPLANE_DATA_DIR": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
    }
    log = (tmp_path / "up.log").open("wb")
    argv = [sys.executable, "scripts/dev.py", "up"]
    argv += ["--port", str(ports["port"]), "--moto-port", str(ports["moto_port"])]
    argv += ["--regions-port", str(ports["regions_port"])]
    proc = subprocess.Popen(
        argv,
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip

    def output() -> str:
        return (tmp_path / "up.log").read_text(errors="replace")[-6000:]

    site = f"http://127.0.0.1:{ports['port']}"

    def ready() -> bool:
        assert proc.poll() is None, f"dev.py up exited:\n{output()}"
        try:
            return httpx.get(f"{site}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=120, interval=0.3, message="the dev stack's web server")
        yield {"env": env, "site": site, "ports": ports, "output": output}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.mark.worker
def test_readme_first_deploy_succeeds_in_every_region_at_once(dev_stack, tmp_path):
    script = readme_block("### Your first deploy").replace(
        "127.0.0.1:8000", f"127.0.0.1:{dev_stack['ports']['port']}"
    )
    # The newcomer is at the top of a checkout: give the working folder the checkout's launcher.
    work = tmp_path / "work"
    work.mkdir()
    (work / "scripts").symlink_to(ROOT / "scripts")
    run = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script + '\nprintf "\\n%s %s\\n" "$TOKEN" "$DEPLOYMENT"\n'],
        cwd=work, env=dev_stack["env"], capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}\n{dev_stack['output']()}"
    token, deployment_id = run.stdout.strip().splitlines()[-1].split()
    status_lines = [
        line for line in run.stdout.splitlines() if line.startswith(("succeeded", "failed", "partially"))
    ]
    assert status_lines, run.stdout
    final_status, *regions = status_lines[-1].split()
    assert (final_status, sorted(regions)) == (
        "succeeded",
        ["ap-southeast-2=succeeded", "eu-west-1=succeeded", "us-east-1=succeeded"],
    ), f"{run.stdout}\n{dev_stack['output']()}"

    # Then each region's URL answers from code running in that region.
    for code in ("us-east-1", "eu-west-1", "ap-southeast-2"):
        assert f'"region": "{code}", "path": "/hi"' in run.stdout, run.stdout

    deployment = httpx.get(
        f"{dev_stack['site']}/api/v1/deployments/{deployment_id}/",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    ).json()
    # The plain worker command ran the three regions at the same time: every region started before
    # any of them finished.
    spans = [
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in deployment["regions"]
    ]
    assert len(spans) == 3
    assert max(start for start, _ in spans) < min(end for _, end in spans), deployment["regions"]
