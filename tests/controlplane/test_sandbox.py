"""The sandbox for untrusted code: what a process inside can see, reach and use."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from django.conf import settings

from controlplane import sandbox
from controlplane.sandbox import Limits
from tests.support.textserver import TextServer

PATH = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
LIMITS = Limits(wall_seconds=60, cpu_seconds=30, memory_bytes=256 << 20, processes=64, disk_bytes=64 << 20)
PUBLIC_STAND_IN = "127.0.0.2"  # "the internet" for these tests: public_networks=[f"{PUBLIC_STAND_IN}/32"]


def sh(command: str, **kwargs) -> tuple[sandbox.RunResult, str]:
    lines: list[str] = []
    kwargs.setdefault("env", PATH)
    kwargs.setdefault("limits", LIMITS)
    result = sandbox.run(["bash", "-c", command], cwd=kwargs.pop("cwd", "/"), on_line=lines.append, **kwargs)
    return result, "\n".join(lines)


@pytest.fixture(scope="module")
def public_server():
    server = TextServer(PUBLIC_STAND_IN, b"public-content")
    yield server
    server.close()


@pytest.fixture(scope="module")
def loopback_server():
    server = TextServer("127.0.0.1", b"control-plane-content")
    yield server
    server.close()


def test_this_host_can_run_sandboxes():
    assert sandbox.missing(refresh=True) == []


def test_missing_bubblewrap_is_named_with_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setattr(sandbox, "DEFAULT_PATH", str(tmp_path))  # no bwrap, no prlimit there
    problems = sandbox.missing(refresh=True)
    monkeypatch.undo()
    sandbox.missing(refresh=True)
    assert any(
        "bubblewrap (bwrap) is not installed" in p and "apt-get install bubblewrap" in p for p in problems
    )
    assert any("prlimit" in p for p in problems)


def test_the_sandbox_sees_no_process_environment_or_file_of_the_worker(monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_TEST_SECRET", "worker-secret-value")
    project = Path(settings.BASE_DIR)
    hunt = f"""
        id -u; id -g
        for f in /proc/[0-9]*/environ; do cat "$f"; done | tr '\\0' '\\n' | grep -c "worker-secret""-value"
        for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f"; echo; done
        ls {settings.DATA_DIR} {project} {os.path.expanduser("~")} /etc/shadow /var /sys/class 2>&1 | sort
        ls /etc
    """
    result, output = sh(hunt, env={**PATH, "MINE": "visible"})

    assert result.ok, output
    assert "worker-secret-value" not in output
    lines = output.splitlines()
    assert lines[:3] == ["65534", "65534", "0"]  # unprivileged; no environ holds the worker's secret
    commands = [line for line in lines if line.startswith(("bwrap", "bash", "/usr/bin/prlimit"))]
    assert all("pytest" not in line and "celery" not in line for line in commands)
    for path in (settings.DATA_DIR, project, os.path.expanduser("~"), "/etc/shadow", "/var", "/sys/class"):
        assert f"ls: cannot access '{path}': No such file or directory" in output
    assert "shadow" not in lines and "passwd" in lines and "ssl" in lines


def test_the_initial_process_starts_with_an_empty_environment():
    result, output = sh("cat /proc/1/environ | wc -c; env | sort", env={**PATH, "ONLY": "this"})
    assert result.ok
    lines = output.splitlines()
    assert lines[0] == "0"  # the sandbox's init: nothing
    names = {line.split("=", 1)[0] for line in lines[1:]}
    assert names - {"PWD", "SHLVL", "_"} == {"PATH", "LANG", "HOME", "ONLY"}


@pytest.fixture
def folders():
    """``folders()``: a new folder a sandbox can mount; all removed after the test."""
    made: list[Path] = []

    def make() -> Path:
        made.append(sandbox.workdir("test-"))
        return made[-1]

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def test_the_system_is_read_only_and_only_the_given_paths_are_writable(folders):
    work = folders()
    (work / "in.txt").write_text("input")
    code = folders()
    (code / "handler.py").write_text("code")
    result, output = sh(
        "cat /work/in.txt && echo out > /work/out.txt && echo home > ~/h && echo tmp > /tmp/t && echo ok;"
        "cat /code/handler.py; for f in /code/x /usr/x /etc/x /x; do touch $f 2>&1; done; exit 0",
        writable=[(work, "/work")],
        readonly=[(code, "/code")],
    )
    assert result.ok, output
    assert "inputok" in output.replace("\n", "") and "code" in output
    assert (work / "out.txt").read_text() == "out\n"
    assert output.count("Read-only file system") == 4
    assert not (code / "x").exists()


def test_a_fork_bomb_is_stopped_with_the_reason():
    started = time.monotonic()
    result, _ = sh(":(){ :|:& };:; sleep 60")
    assert result.stopped_by == "processes" and result.returncode == -9
    assert "limit of 64 processes" in result.stopped
    assert time.monotonic() - started < 30


def test_a_memory_hog_is_stopped_with_the_reason():
    result, _ = sh("python3 -c \"x = []\nwhile True: x.append(b'x' * (8 << 20))\"")
    assert result.stopped_by == "memory_bytes", result
    assert "256 MB memory limit" in result.stopped


def test_a_cpu_hog_is_stopped_with_the_reason():
    result, _ = sh("while :; do :; done", limits=Limits(wall_seconds=60, cpu_seconds=1))
    assert result.stopped_by == "cpu_seconds" and "1 s CPU time limit" in result.stopped
    assert result.usage.cpu_seconds >= 1


def test_a_file_cannot_grow_past_the_disk_limit():
    result, output = sh("head -c 200000000 /dev/zero > /tmp/big; echo status $?")
    # The per-file limit (RLIMIT_FSIZE) stops the write at the disk limit.
    assert "File size limit exceeded" in output and "status 153" in output
    assert not (result.usage.disk_bytes > LIMITS.disk_bytes + (1 << 20))


def test_a_command_past_its_wall_time_is_killed_with_everything_it_started():
    started = time.monotonic()
    result, output = sh(
        "sleep 3027 & setsid sleep 3028 & echo started; sleep 3029", limits=Limits(wall_seconds=1)
    )
    assert result.stopped_by == "wall_seconds" and output == "started"
    assert time.monotonic() - started < 10
    assert not _host_processes_with(b"3027") and not _host_processes_with(b"3028")


def test_background_processes_end_with_the_command():
    result, output = sh("sleep 3037 & echo started")
    assert result.ok and output == "started"
    assert not _host_processes_with(b"3037")


def _host_processes_with(marker: bytes) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes():
                status = (proc / "status").read_text()
                if "State:\tZ" not in status:
                    found.append(proc.name)
        except OSError:
            continue
    return found


def test_without_network_nothing_outside_is_reachable(public_server, loopback_server):
    result, output = sh(
        f"curl -sS -m 5 http://{PUBLIC_STAND_IN}:{public_server.port}/ 2>&1;"
        f"curl -sS -m 5 http://127.0.0.1:{loopback_server.port}/ 2>&1; env | grep -ci proxy",
        public_networks=[f"{PUBLIC_STAND_IN}/32"],
    )
    assert "public-content" not in output and "control-plane-content" not in output
    assert output.count("Failed to connect") == 2 and output.endswith("0")


def test_with_network_only_public_addresses_are_reachable(public_server, loopback_server):
    direct = f"http://127.0.0.1:{loopback_server.port}/"
    result, output = sh(
        f"curl -sS -m 5 http://{PUBLIC_STAND_IN}:{public_server.port}/; echo;"
        # HTTPS and anything else goes through CONNECT: the same check.
        f"curl -sS -m 5 -p http://{PUBLIC_STAND_IN}:{public_server.port}/; echo;"
        f"curl -sS -m 5 {direct} 2>&1; curl -sS -m 5 --noproxy '' {direct} 2>&1;"
        "curl -sS -m 5 http://169.254.169.254/latest/meta-data/ 2>&1;"
        "curl -sS -m 5 https://10.1.2.3/ 2>&1; curl -sS -m 5 http://localhost:5432/ 2>&1",
        network="public",
        public_networks=[f"{PUBLIC_STAND_IN}/32"],
    )
    assert output.splitlines()[:2] == ["public-content", "public-content"], output
    assert "control-plane-content" not in output
    assert f"127.0.0.1:{loopback_server.port}: 127.0.0.1 is a loopback address." in result.refused
    assert "169.254.169.254:80: 169.254.169.254 is a cloud metadata address." in result.refused
    assert "10.1.2.3:443: 10.1.2.3 is a private address." in result.refused
    assert "The sandbox may not connect to 169.254.169.254:80" in output


def test_metadata_addresses_stay_refused_even_inside_public_networks():
    result, _ = sh(
        "curl -sS -m 5 http://169.254.169.254/ 2>&1", network="public", public_networks=["169.254.0.0/16"]
    )
    assert result.refused == ["169.254.169.254:80: 169.254.169.254 is a cloud metadata address."]


def test_only_the_given_loopback_ports_are_reachable(loopback_server, public_server):
    other = TextServer("127.0.0.1", b"web-server-content")
    try:
        result, output = sh(
            f"curl -sS -m 5 http://127.0.0.1:{loopback_server.port}/; echo;"
            f"curl -sS -m 5 http://127.0.0.1:{other.port}/ 2>&1;"
            f"curl -sS -m 5 -x http://127.0.0.1:3128 http://{PUBLIC_STAND_IN}:{public_server.port}/ 2>&1",
            loopback_ports=[loopback_server.port],
            public_networks=[f"{PUBLIC_STAND_IN}/32"],
        )
    finally:
        other.close()
    lines = output.splitlines()
    assert lines[0] == "control-plane-content"
    assert "web-server-content" not in output and "public-content" not in output
    assert "This sandbox has no network access." in output


def test_a_long_lived_process_talks_over_stdin_and_stdout_and_dies_with_kill(folders):
    code = folders()
    (code / "worker.py").write_text(
        "import sys\nfor line in sys.stdin:\n    print(line.strip().upper(), flush=True)\n"
    )
    proc = sandbox.spawn(
        ["python3", "/var/task/worker.py"],
        cwd="/var/task",
        env=PATH,
        readonly=[(code, "/var/task")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        limits=Limits(memory_bytes=256 << 20, processes=32),
    )
    with proc:
        for word in ("ping", "again"):
            proc.stdin.write(word.encode() + b"\n")
            proc.stdin.flush()
            assert proc.stdout.readline() == word.upper().encode() + b"\n"
        assert proc.poll() is None
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=0.2)
        proc.kill()
        assert proc.wait(timeout=10) == -9
    assert proc.stopped is None


def test_the_exit_status_is_the_commands():
    result, _ = sh("exit 7")
    assert result.returncode == 7 and result.stopped is None and not result.ok


def test_a_loopback_service_of_the_host_is_unreachable_without_a_proxy():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        result, output = sh(
            f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo connected || echo refused", network="public"
        )
    finally:
        listener.close()
    assert output.endswith("refused")
