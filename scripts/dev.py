#!/usr/bin/env python3
"""Run controlplane on one machine with nothing but Python 3.11+ and git.

    python3 scripts/dev.py up        # venv + deps, migrate, demo team; run moto, web, worker, beat
    python3 scripts/dev.py test      # venv + deps, then the whole test suite (pytest args pass through)

Other commands: install (venv + deps only), setup (install + migrate + demo team), web, worker, beat,
shell, manage <args>, lint, bench [name] [args]. Only the standard library is used here, because this
file is what creates the environment everything else needs.

Everything runs on embedded defaults (SQLite and a filesystem broker in the data folder, a moto
server as AWS) unless DATABASE_URL, REDIS_URL or CONTROLPLANE_DATA_DIR are set. CONTROLPLANE_PYTHON
names an interpreter whose environment already has the project installed; then no .venv is made.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
# An environment managed some other way (conda, a system package, the interpreter running the
# test suite) may be used as is: no venv is created and nothing is installed.
OWN_PYTHON = os.environ.get("CONTROLPLANE_PYTHON", "")
PY = Path(OWN_PYTHON) if OWN_PYTHON else VENV / "bin" / "python"
STAMP = VENV / ".controlplane-installed"
EXTRAS = "dev"

DEMO_TEAM = "demo"
DEMO_ADMIN = "admin"
DUMMY_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Real-AWS credentials or endpoints from the caller's shell must never reach the emulator stack
# or the test suite.
AWS_OVERRIDES = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL")

STOP_TIMEOUT = 15.0
READY_TIMEOUT = 90.0


def say(message: str) -> None:
    print(f"dev.py: {message}", flush=True)


def fail(message: str, code: int = 1) -> None:
    print(f"dev.py: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(code)


# --- Environment ----------------------------------------------------------------------------


def _wanted_stamp() -> str:
    digest = hashlib.sha256(
        b"".join((ROOT / name).read_bytes() for name in ("pyproject.toml", "cli/pyproject.toml"))
    ).hexdigest()
    return f"{EXTRAS} {digest}\n"


def install() -> None:
    """Create .venv if missing; install the project with its dev extra when pyproject.toml changed."""
    if sys.version_info < (3, 11):  # noqa: UP036 - runs under whatever python3 the machine has
        fail(f"Python 3.11 or newer is needed, this is {sys.version.split()[0]} ({sys.executable})")
    if OWN_PYTHON:
        return
    if not PY.exists():
        say(f"creating {VENV.relative_to(ROOT)} with {sys.executable}")
        result = subprocess.run([sys.executable, "-m", "venv", str(VENV)])
        if result.returncode != 0:
            fail("could not create the virtualenv (on Debian/Ubuntu: apt install python3-venv)")
    if STAMP.exists() and STAMP.read_text() == _wanted_stamp():
        return
    say(f"installing dependencies into {VENV.relative_to(ROOT)} (the first run takes a minute)")
    pip = [str(PY), "-m", "pip", "--disable-pip-version-check"]
    if os.environ.get("CI") != "true":
        pip.append("-q")
    # The CLI (cli/, a distribution of its own) too: the test suite runs it.
    result = subprocess.run([*pip, "install", "-e", f".[{EXTRAS}]", "-e", "./cli"], cwd=ROOT)
    if result.returncode != 0:
        fail("pip install failed (see above)")
    STAMP.write_text(_wanted_stamp())


def app_env(*, emulator_url: str | None) -> dict[str, str]:
    """The environment for web, worker, beat and management commands.

    With ``emulator_url``, AWS calls go to that moto server with dummy credentials.
    """
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    env["PYTHONUNBUFFERED"] = "1"
    if emulator_url:
        env = _with_dummy_aws(env)
        env["AWS_ENDPOINT_URL"] = emulator_url
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    return env


def suite_env() -> dict[str, str]:
    """The environment for the test suite: tests/settings.py picks its own data folder and settings;
    DATABASE_URL and REDIS_URL pass through (CI sets them)."""
    env = _with_dummy_aws(dict(os.environ))
    for name in ("DJANGO_SETTINGS_MODULE", "CONTROLPLANE_DATA_DIR", "CONTROLPLANE_ENV"):
        env.pop(name, None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _with_dummy_aws(env: dict[str, str]) -> dict[str, str]:
    """``env`` without the caller's AWS profile, session or endpoints, with dummy credentials."""
    env = {k: v for k, v in env.items() if k not in AWS_OVERRIDES and not k.startswith("AWS_ENDPOINT_URL_")}
    return env | DUMMY_AWS


def manage(*args: str, env: dict[str, str], capture: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run([str(PY), "manage.py", *args], cwd=ROOT, env=env, text=True, capture_output=capture)


def setup(*, env: dict[str, str]) -> str | None:
    """Migrate, seed the region catalog and the demo team with its admin. Returns the admin's
    password when bootstrap generated it just now (it is stored only hashed, so this is the one
    chance to show it)."""
    if manage("migrate", "--noinput", env=env).returncode != 0:
        fail("manage.py migrate failed (see above)")
    result = manage("bootstrap", "--team", DEMO_TEAM, "--admin-user", DEMO_ADMIN, env=env, capture=True)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    if result.returncode != 0:
        fail("manage.py bootstrap failed (see above)")
    match = re.search(rf"^Generated password for {DEMO_ADMIN}\b.*: (\S+)$", result.stdout, re.MULTILINE)
    return match.group(1) if match else None


# --- Supervised processes ---------------------------------------------------------------------


class Child:
    """One long-running process whose output is prefixed with its name."""

    _print_lock = threading.Lock()

    def __init__(self, name: str, argv: list[str], env: dict[str, str], *, port: int | None = None) -> None:
        # ``port``: the children after this one start only once it listens there.
        self.name, self.argv, self.env, self.port = name, argv, env, port
        self.proc: subprocess.Popen | None = None
        self.pump: threading.Thread | None = None

    def start(self) -> Child:
        # Its own session: Ctrl-C reaches only this launcher, which then stops every child in
        # order, and a signal to the group also reaches grandchildren (runserver's reloader).
        self.proc = subprocess.Popen(
            self.argv,
            cwd=ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pump = threading.Thread(target=self._pump, daemon=True)
        self.pump.start()
        return self

    def wait_listening(self, timeout: float = 30) -> None:
        """Returns once the child listens on its port; raises Stop if it exits or takes too long."""
        deadline = time.monotonic() + timeout
        while self.port and not port_open(self.port):
            if self.exited() is not None or time.monotonic() > deadline:
                say(f"{self.name} did not start listening on port {self.port}")
                raise Stop
            time.sleep(0.1)

    def _pump(self) -> None:
        assert self.proc and self.proc.stdout
        prefix = f"{self.name:<6} | ".encode()
        for line in self.proc.stdout:
            with self._print_lock:
                sys.stdout.buffer.write(prefix + line)
                sys.stdout.buffer.flush()

    def exited(self) -> int | None:
        return self.proc.poll() if self.proc else None

    def signal(self, sig: int) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass


def stop_all(children: list[Child]) -> None:
    """SIGTERM every child (newest first), wait for all, then SIGKILL what is left."""
    for child in reversed(children):
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for child in reversed(children):
        if child.proc is None:
            continue
        try:
            child.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say(f"{child.name} did not stop within {STOP_TIMEOUT:.0f}s; killing it")
            child.signal(signal.SIGKILL)
            child.proc.wait()
    for child in children:
        if child.pump:
            child.pump.join(timeout=2)  # its last words, e.g. why it stopped


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def healthz(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:  # noqa: S310 - our own loopback URL
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


class Stop(Exception):
    """Raised by the signal handler so the supervisor loop unwinds and stops the children."""


def _raise_stop(signum, frame) -> None:
    raise Stop(signal.Signals(signum).name)


def supervise(children: list[Child], *, ready_url: str | None, banner: str) -> int:
    """Start ``children`` in order and run until Ctrl-C/SIGTERM (returns 0) or until one of them
    exits (returns 1); then stop them all. The banner is printed once ``ready_url`` answers 200."""
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)
    code = 0
    try:
        for child in children:
            child.start().wait_listening()
        started = time.monotonic()
        ready = ready_url is None
        if ready and banner:
            print(banner, flush=True)
        while True:
            for child in children:
                rc = child.exited()
                if rc is not None:
                    say(f"{child.name} exited with code {rc}; stopping the others")
                    raise Stop
            if not ready and healthz(ready_url):
                ready = True
                print(banner, flush=True)
            elif not ready and time.monotonic() - started > READY_TIMEOUT:
                say(f"still waiting for {ready_url} after {READY_TIMEOUT:.0f}s")
                started = time.monotonic()
            time.sleep(0.3)
    except Stop as stop:
        # Ctrl-C or SIGTERM is a clean stop; anything else is a child that failed.
        code = 0 if stop.args else 1
        # A second Ctrl-C while stopping should not leave children behind half-stopped.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        running = [c for c in children if c.proc]
        say("stopping " + ", ".join(c.name for c in reversed(running)))
        stop_all(running)
        say("stopped")
    return code


def worker_argv(concurrency: int) -> list[str]:
    return [str(PY), "-m", "celery", "-A", "controlplane", "worker", "--loglevel", "INFO",
            "--pool", "threads", "--concurrency", str(concurrency)]  # fmt: skip


def beat_argv() -> list[str]:
    return [str(PY), "-m", "celery", "-A", "controlplane", "beat", "--loglevel", "INFO"]


def web_argv(port: int) -> list[str]:
    return [str(PY), "manage.py", "runserver", f"127.0.0.1:{port}"]


def moto_argv(port: int) -> list[str]:
    return [str(PY), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def _emulator_url(args: argparse.Namespace) -> str | None:
    return None if args.real_aws else f"http://127.0.0.1:{args.moto_port}"


def _data_dir(env: dict[str, str]) -> str:
    return env.get("CONTROLPLANE_DATA_DIR") or str(ROOT / "data")


# --- Commands -------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    install()
    emulator = _emulator_url(args)
    for port, flag in [(args.port, "--port")] + ([] if args.real_aws else [(args.moto_port, "--moto-port")]):
        if not port_free(port):
            fail(f"port {port} on 127.0.0.1 is in use; choose another with {flag}")
    env = app_env(emulator_url=emulator)
    password = setup(env=env)

    # AWS first, so the worker's first tasks find it.
    children = [Child("moto", moto_argv(args.moto_port), env, port=args.moto_port)] if emulator else []
    children += [
        Child("worker", worker_argv(args.concurrency), env),
        Child("beat", beat_argv(), env),
        Child("web", web_argv(args.port), env),
    ]

    site = f"http://127.0.0.1:{args.port}"
    login = (
        f"sign in as {DEMO_ADMIN!r} (admin of team {DEMO_TEAM!r}), password {password!r} (shown only now)"
        if password
        else f"sign in as {DEMO_ADMIN!r} (password shown on the first run; a new one: "
        f"python3 scripts/dev.py manage changepassword {DEMO_ADMIN})"
    )
    banner = "\n".join(
        [
            "",
            "controlplane is running. Ctrl-C stops everything.",
            f"  Web UI      {site}/   {login}",
            f"  Admin       {site}/admin/   for operators: python3 scripts/dev.py manage createsuperuser",
            f"  API docs    {site}/api/docs/   (schema: {site}/api/schema/)",
            f"  Health      {site}/healthz",
            f"  AWS         {emulator + ' (moto server, in memory)' if emulator else 'real AWS'}",
            f"  Data        {_data_dir(env)}",
            f"  API token   python3 scripts/dev.py manage create_api_token --team {DEMO_TEAM}",
            "",
        ]
    )
    return supervise(children, ready_url=f"{site}/healthz", banner=banner)


def cmd_setup(args: argparse.Namespace) -> int:
    install()
    password = setup(env=app_env(emulator_url=_emulator_url(args)))
    if password:
        say(f"created user {DEMO_ADMIN!r} in team {DEMO_TEAM!r} with password {password!r} (shown only now)")
    return 0


def _one(name: str, argv: list[str], args: argparse.Namespace) -> int:
    install()
    env = app_env(emulator_url=_emulator_url(args))
    return supervise([Child(name, argv, env)], ready_url=None, banner="")


def cmd_web(args: argparse.Namespace) -> int:
    return _one("web", web_argv(args.port), args)


def cmd_worker(args: argparse.Namespace) -> int:
    return _one("worker", worker_argv(args.concurrency), args)


def cmd_beat(args: argparse.Namespace) -> int:
    return _one("beat", beat_argv(), args)


def passthrough(argv: list[str], env: dict[str, str]) -> int:
    """Runs ``argv`` in the foreground, sharing the terminal; returns its exit code."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            # The child got the same Ctrl-C from the terminal; let it finish its own way.
            continue


def cmd_test(rest: list[str]) -> int:
    install()
    code = passthrough([str(PY), "-m", "pytest", *rest], suite_env())
    if code == 5:
        say("pytest collected no tests")
    return code


def cmd_manage(rest: list[str]) -> int:
    install()
    return passthrough([str(PY), "manage.py", *rest], app_env(emulator_url="http://127.0.0.1:5000"))


def cmd_shell(rest: list[str]) -> int:
    return cmd_manage(["shell", *rest])


def cmd_lint(rest: list[str]) -> int:
    install()
    ruff = str(PY.parent / "ruff")
    checked = passthrough([ruff, "check", *(rest or ["."])], dict(os.environ))
    formatted = passthrough([ruff, "format", "--check", *(rest or ["."])], dict(os.environ))
    return checked or formatted


def cmd_bench(rest: list[str]) -> int:
    """``bench [name] [args]``: run bench/<name>.py, or every benchmark script in bench/."""
    install()
    scripts = sorted(p for p in (ROOT / "bench").glob("*.py") if "__main__" in p.read_text())
    if rest and not rest[0].startswith("-"):
        scripts = [p for p in scripts if p.stem == rest[0]]
        if not scripts:
            fail(f"no benchmark bench/{rest[0]}.py")
        rest = rest[1:]
    code = 0
    for script in scripts:
        say(f"running {script.relative_to(ROOT)}")
        # bench/harness.py sets up its own private control plane (settings, data folder, database).
        code = passthrough([str(PY), str(script), *rest], suite_env()) or code
    return code


def main(argv: list[str]) -> int:
    passthrough_commands = {
        "test": cmd_test,
        "manage": cmd_manage,
        "shell": cmd_shell,
        "lint": cmd_lint,
        "bench": cmd_bench,
    }
    if argv and argv[0] in passthrough_commands:
        return passthrough_commands[argv[0]](argv[1:])
    if argv and argv[0] == "install":
        install()
        return 0

    parser = argparse.ArgumentParser(
        prog="python3 scripts/dev.py",
        description=__doc__.split("\n\n")[0],
        epilog="Also: install | test [pytest args] | manage <args> | shell | lint [paths] | bench [name]",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, help_ in [
        ("up", cmd_up, "moto server, web, worker and beat, supervised"),
        ("setup", cmd_setup, "install, migrate and seed the demo team"),
        ("web", cmd_web, "the web server only"),
        ("worker", cmd_worker, "a Celery worker only"),
        ("beat", cmd_beat, "Celery beat only"),
    ]:
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        p.add_argument("--port", type=int, default=8000, help="web port on 127.0.0.1 (default 8000)")
        p.add_argument("--moto-port", type=int, default=5000, help="moto server port (default 5000)")
        p.add_argument("--concurrency", type=int, default=16, help="worker threads (default 16)")
        p.add_argument(
            "--real-aws",
            action="store_true",
            help="no moto server: AWS calls use the usual boto3 credential chain",
        )
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    os.chdir(ROOT)
    try:
        raise SystemExit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # during setup: the foreground command got the same Ctrl-C
        raise SystemExit(130) from None
