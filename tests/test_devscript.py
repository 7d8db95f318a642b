"""``python3 scripts/dev.py up``, the newcomer's first command, run for real on embedded defaults:
it seeds the demo team, starts moto, worker, beat and web, answers /healthz, runs a task sent from
another process, and stops every process it started, on Ctrl-C or when one of them dies."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from .support.localregions import free_port_block
from .support.processes import wait_for

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = ROOT / "scripts" / "dev.py"

pytestmark = pytest.mark.timeout(240)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every living process below ``pid`` (from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces; the parent pid follows its closing parenthesis.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


class Launcher:
    """``scripts/dev.py up`` on free ports with its own data folder, its output collected."""

    def __init__(self, data_dir: Path) -> None:
        self.port, self.moto_port = free_port(), free_port()
        self.regions_port = free_port_block(35)
        self.site = f"http://127.0.0.1:{self.port}"
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "CONTROLPLANE_TEST_WORKER")
            and not k.startswith("AWS_")
        }
        # The suite's interpreter already has everything installed: no venv, no pip.
        self.env |= {"CONTROLPLANE_DATA_DIR": str(data_dir), "CONTROLPLANE_PYTHON": sys.executable}
        self.lines: list[str] = []

    def start(self) -> Launcher:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(LAUNCHER),
                "up",
                "--port",
                str(self.port),
                "--moto-port",
                str(self.moto_port),
                "--regions-port",
                str(self.regions_port),
            ],
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: self.proc.poll() is not None or "controlplane is running" in self.output,
                 timeout=150, message=f"the launcher's banner\n{self.output}")  # fmt: skip
        assert self.proc.poll() is None, self.output
        return self

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def child(self, word: str) -> int:
        """The pid of the launcher's child whose command line contains ``word``."""
        for pid in descendants(self.proc.pid):
            if word in cmdline(pid).split():
                return pid
        raise AssertionError(f"no {word} process under the launcher")

    def manage(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(LAUNCHER), "manage", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("devscript") / "data"


@pytest.fixture
def launcher(data_dir):
    started = []

    def start() -> Launcher:
        started.append(Launcher(data_dir).start())
        return started[-1]

    yield start
    for one in started:
        one.stop()


def test_up_runs_the_stack_and_ctrl_c_stops_every_process(launcher):
    stack = launcher()
    children = descendants(stack.proc.pid)

    # The banner names the URLs, the demo admin's generated password and how to get a token.
    password = re.search(r"sign in as 'admin' \(admin of team 'demo'\), password '([^']+)'", stack.output)
    assert password, stack.output
    for url in (f"{stack.site}/admin/", f"{stack.site}/api/docs/", f"{stack.site}/healthz"):
        assert url in stack.output
    assert "python3 scripts/dev.py manage create_api_token --team demo" in stack.output

    health = httpx.get(f"{stack.site}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["database"] == {"ok": True, "detail": "sqlite"}
    assert health.json()["broker"] == {"ok": True, "detail": "filesystem"}

    # The printed password is the admin's, and the admin runs the demo team.
    check = stack.manage(
        "shell",
        "-c",
        "from django.contrib.auth import authenticate; from controlplane.models import Membership; "
        f"u = authenticate(username='admin', password={password.group(1)!r}); "
        "print(Membership.objects.get(user=u, team__slug='demo').role)",
    )
    assert check.returncode == 0, check.stderr
    assert check.stdout.split()[-1] == "admin"

    # A task sent from another process reaches the supervised worker through the broker.
    pong = stack.manage(
        "shell", "-c", "from workers.tasks import ping; print(ping.delay().get(timeout=60)['pid'])"
    )
    assert pong.returncode == 0, pong.stderr
    assert int(pong.stdout.split()[-1]) == stack.child("worker")

    # Every process runs against the emulator, never real AWS.
    worker_env = Path(f"/proc/{stack.child('worker')}/environ").read_bytes().split(b"\0")
    assert f"AWS_ENDPOINT_URL=http://127.0.0.1:{stack.moto_port}".encode() in worker_env
    assert httpx.get(f"http://127.0.0.1:{stack.moto_port}/moto-api/data.json", timeout=10).status_code == 200

    # The local regions run too, and the control plane finds deployed code through them.
    assert stack.child("local_regions")
    assert b"ENDPOINT_RESOLVER=regions.local.endpoints.local_endpoint" in worker_env
    fault = [sys.executable, str(LAUNCHER), "fault", "us-east-1", "error", "--for", "1m",
             "--regions-port", str(stack.regions_port)]  # fmt: skip
    said = subprocess.run(fault, cwd=ROOT, env=stack.env, capture_output=True, text=True, timeout=60)
    assert said.returncode == 0 and "us-east-1 is now error for 60s" in said.stdout, said.stderr
    status = httpx.get(f"http://127.0.0.1:{stack.regions_port}/_status", timeout=10).json()
    assert [(f["region"], f["mode"]) for f in status["faults"]] == [("us-east-1", "error")]
    clear = [sys.executable, str(LAUNCHER), "fault", "clear", "--regions-port", str(stack.regions_port)]
    assert "cleared 1 fault(s)" in subprocess.run(clear, cwd=ROOT, env=stack.env, capture_output=True,
                                                  text=True, timeout=60).stdout  # fmt: skip

    stack.proc.send_signal(signal.SIGINT)
    assert stack.proc.wait(timeout=60) == 0, stack.output
    assert "dev.py: stopped" in stack.output
    assert not [pid for pid in children if alive(pid)], "processes left running after Ctrl-C"


def test_up_stops_everything_when_one_process_dies(launcher):
    # Second start on the same data folder: the admin exists, so no password is shown again.
    stack = launcher()
    assert "password '" not in stack.output
    worker = stack.child("worker")
    children = descendants(stack.proc.pid) - {worker}

    os.kill(worker, signal.SIGKILL)

    assert stack.proc.wait(timeout=60) == 1, stack.output
    assert "dev.py: worker exited with code -9; stopping the others" in stack.output
    assert not [pid for pid in children if alive(pid)], "processes left running after the worker died"
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{stack.site}/healthz", timeout=5)
