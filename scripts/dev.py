#!/usr/bin/env python3
"""Run controlplane on one machine with nothing but Python 3.11+ and git.

    python3 scripts/dev.py up        # venv + deps, migrate, demo team; run moto, web, worker, beat
    python3 scripts/dev.py test      # venv + deps, then the whole test suite (pytest args pass through)

Other commands: install (venv + deps only), setup (install + migrate + demo team), web, worker, beat,
regions (the local regions alone), fault (inject or clear a fault in a local region), shell,
manage <args>, lint, bench [name] [args]. Only the standard library is used here, because this
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

# The local regions: global endpoints and the admin API here, each region on one of the next 34 ports.
REGIONS_PORT = 9100
REGION_COUNT = 34
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


def app_env(*, emulator_url: str | None, regions_port: int = REGIONS_PORT) -> dict[str, str]:
    """The environment for web, worker, beat and management commands.

    With ``emulator_url``, AWS calls go to that moto server with dummy credentials, and the
    deployed code is served by the local regions on ``regions_port``: the endpoint resolver points
    probes, verify and the URLs shown at them (loopback http, so private http URLs are allowed).
    """
    env = dict(os.environ)
    env["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    env["PYTHONUNBUFFERED"] = "1"
    if emulator_url:
        env = _with_dummy_aws(env)
        env["AWS_ENDPOINT_URL"] = emulator_url
        env.setdefault("AWS_DEFAULT_REGION", "us-east-1")
        env["ENDPOINT_RESOLVER"] = "regions.local.endpoints.local_endpoint"
        env["LOCAL_REGIONS_PORT"] = str(regions_port)
        env["GLOBAL_ENDPOINT_URL"] = f"http://127.0.0.1:{regions_port}/{{domain}}"
        env.setdefault("ALLOW_PRIVATE_URLS", "true")
        env.setdefault("ALLOW_HTTP_URLS", "true")
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


def supervise(children: list[Child], *, ready_url: str | None, banner: str, when_ready=None) -> int:
    """Start ``children`` in order and run until Ctrl-C/SIGTERM (returns 0) or until one of them
    exits (returns 1); then stop them all. The banner is printed once ``ready_url`` answers 200,
    and ``when_ready`` (if any) is then started on a thread of its own."""
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
                if when_ready:
                    threading.Thread(target=when_ready, daemon=True).start()
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


def worker_argv(concurrency: int | None) -> list[str]:
    """The production command as the README gives it: the pool and its size come from the Celery
    app's settings (threads, CELERY_WORKER_CONCURRENCY); ``--concurrency`` only when asked for."""
    argv = [str(PY), "-m", "celery", "-A", "controlplane", "worker", "--loglevel", "INFO"]
    return argv + (["--concurrency", str(concurrency)] if concurrency else [])


def beat_argv() -> list[str]:
    return [str(PY), "-m", "celery", "-A", "controlplane", "beat", "--loglevel", "INFO"]


def web_argv(port: int) -> list[str]:
    return [str(PY), "manage.py", "runserver", f"127.0.0.1:{port}"]


def regions_argv(port: int) -> list[str]:
    return [str(PY), "manage.py", "local_regions", "--port", str(port)]


def moto_argv(port: int) -> list[str]:
    return [str(PY), "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]


def _emulator_url(args: argparse.Namespace) -> str | None:
    return None if args.real_aws else f"http://127.0.0.1:{args.moto_port}"


def _data_dir(env: dict[str, str]) -> str:
    return env.get("CONTROLPLANE_DATA_DIR") or str(ROOT / "data")


# --- Commands -------------------------------------------------------------------------------


def check_sandbox(env: dict[str, str]) -> list[str]:
    """Say what this machine lacks for the build sandbox (controlplane/sandbox), if anything: every
    build from git runs in it, so without it builds fail (everything else works). Returns it."""
    if env.get("BUILD_BACKEND", "sandbox") != "sandbox":
        return []
    # Bare settings: the probe needs no database, keys or data folder.
    probe = (
        "import django; from django.conf import settings; settings.configure(); django.setup(); "
        "from controlplane.sandbox import missing; print('\\n'.join(missing()))"
    )
    try:
        done = subprocess.run(
            [str(PY), "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        problems = done.stdout.strip().splitlines() if done.returncode == 0 else [done.stderr.strip()]
    except (OSError, subprocess.TimeoutExpired) as exc:
        problems = [str(exc)]
    if problems:
        say("the build sandbox cannot run on this machine, so builds from git will fail:")
        for problem in problems:
            say(f"  - {problem}")
        say("  (install bubblewrap, or build on AWS CodeBuild with BUILD_BACKEND=codebuild; see README)")
    return problems


def cmd_up(args: argparse.Namespace) -> int:
    install()
    emulator = _emulator_url(args)
    ports = [(args.port, "--port")]
    if not args.real_aws:
        ports += [(args.moto_port, "--moto-port")]
        ports += [(args.regions_port + i, "--regions-port") for i in range(REGION_COUNT + 1)]
    for port, flag in ports:
        if not port_free(port):
            fail(f"port {port} on 127.0.0.1 is in use; choose another with {flag}")
    if args.demo and args.real_aws:
        fail("--demo deploys to the local regions; it cannot be combined with --real-aws")
    env = app_env(emulator_url=emulator, regions_port=args.regions_port)
    env.setdefault("SITE_URL", f"http://127.0.0.1:{args.port}")  # the links in alerts
    if check_sandbox(env) and emulator and "LOCAL_REGIONS_SANDBOX" not in env:
        env["LOCAL_REGIONS_SANDBOX"] = "false"
        say("WARNING: without the sandbox, the local regions run deployed Lambda code UNSANDBOXED: it can")
        say("  read this machine's files and reach the web server, database and broker (install bubblewrap)")
    password = setup(env=env)

    # AWS first, so the worker's first tasks find it; then the regions that serve what is deployed.
    children = []
    if emulator:
        children += [
            Child("moto", moto_argv(args.moto_port), env, port=args.moto_port),
            Child("regions", regions_argv(args.regions_port), env, port=args.regions_port),
        ]
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
            *(
                [
                    f"  Regions     http://127.0.0.1:{args.regions_port}/_status   (the local regions: "
                    "deployed code runs here; faults: python3 scripts/dev.py fault)"
                ]  # fmt: skip
                if emulator
                else []
            ),
            f"  Data        {_data_dir(env)}",
            f"  API token   python3 scripts/dev.py manage create_api_token --team {DEMO_TEAM}",
            "",
        ]
    )
    demo = (lambda: run_demo(env, site)) if args.demo else None
    return supervise(children, ready_url=f"{site}/healthz", banner=banner, when_ready=demo)


def run_demo(env: dict[str, str], site: str) -> None:
    """Deploy the demo app through the API (``up --demo``), its output prefixed ``demo``."""
    demo = Child("demo", [str(PY), "manage.py", "local_regions_demo", "--site", site], env).start()
    assert demo.proc is not None
    if demo.proc.wait() != 0:
        say("the demo did not finish (see its output above); the stack keeps running")


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
    install()
    check_sandbox(app_env(emulator_url=_emulator_url(args)))
    return _one("worker", worker_argv(args.concurrency), args)


def cmd_beat(args: argparse.Namespace) -> int:
    return _one("beat", beat_argv(), args)


def cmd_regions(args: argparse.Namespace) -> int:
    if args.real_aws:
        fail("the local regions serve what is deployed to the local AWS; drop --real-aws")
    install()
    env = app_env(emulator_url=_emulator_url(args), regions_port=args.regions_port)
    return supervise([Child("regions", regions_argv(args.regions_port), env)], ready_url=None, banner="")


def _seconds(text: str) -> float:
    """``90``, ``90s``, ``2m``, ``1h`` as seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smh]?)", text.strip())
    if not match:
        fail(f"--for {text!r}: give a duration like 60s, 2m or 1h")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def cmd_fault(args: argparse.Namespace) -> int:
    """``fault <region> <mode> [--for 60s]``, ``fault clear [region]``, ``fault list``."""
    import json

    base = f"http://127.0.0.1:{args.regions_port}/_faults"
    if args.target == "list":
        request = urllib.request.Request(base)
    elif args.target == "clear":
        query = f"?region={args.mode}" if args.mode else ""
        request = urllib.request.Request(base + query, method="DELETE")  # noqa: S310 - loopback http
    else:
        if not args.mode:
            fail("give a mode: down, error, slow, hang or flaky (e.g. fault eu-west-1 down --for 60s)")
        fault = {
            "region": args.target, "mode": args.mode, "app": args.app, "stage": args.stage,
            "ms": args.ms, "percent": args.percent, "for_s": _seconds(args.for_) if args.for_ else 0,
        }  # fmt: skip
        request = urllib.request.Request(
            base, data=json.dumps(fault).encode(), method="POST", headers={"Content-Type": "application/json"}
        )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 - our own loopback URL
            answer = json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        fail(json.loads(exc.read() or b"{}").get("detail") or str(exc))
    except OSError as exc:
        fail(f"the local regions do not answer on port {args.regions_port} ({exc}); is `dev.py up` running?")
    if args.target == "list":
        for fault in answer["faults"] or [{}]:
            say(json.dumps(fault) if fault else "no faults")
    elif args.target == "clear":
        say(f"cleared {len(answer['cleared'])} fault(s)")
    else:
        until = f" for {answer['expires_in_s']:.0f}s" if answer.get("expires_in_s") else " until cleared"
        narrowed = f" ({answer['app']} {answer['stage']})".rstrip() if answer.get("app") else ""
        say(f"{answer['region']}{narrowed} is now {answer['mode']}{until}")
    return 0


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
    check_sandbox(suite_env())
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


# Scripts in bench/ that the benchmarks run, not benchmarks themselves.
BENCH_HELPERS = {"aws_emulator"}


def cmd_bench(rest: list[str]) -> int:
    """``bench [name] [args]``: run bench/<name>.py with ``args``, or every benchmark script in
    bench/ with ``--quick`` (their smaller sizes: all of them in a few minutes) and ``args``."""
    install()
    scripts = sorted(
        p
        for p in (ROOT / "bench").glob("*.py")
        if p.stem not in BENCH_HELPERS and "__main__" in p.read_text()
    )
    if rest and not rest[0].startswith("-"):
        scripts = [p for p in scripts if p.stem == rest[0]]
        if not scripts:
            fail(f"no benchmark bench/{rest[0]}.py")
        rest = rest[1:]
    elif "--quick" not in rest:
        rest = ["--quick", *rest]
    code = 0
    started = time.monotonic()
    for script in scripts:
        say(f"running {script.relative_to(ROOT)} {' '.join(rest)}".rstrip())
        # bench/harness.py sets up its own private control plane (settings, data folder, database).
        code = passthrough([str(PY), str(script), *rest], suite_env()) or code
    if len(scripts) > 1:
        say(f"{len(scripts)} benchmarks in {time.monotonic() - started:.0f} s")
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
        ("regions", cmd_regions, "the local regions only (needs the moto server that up runs)"),
    ]:
        p = sub.add_parser(name, help=help_)
        p.set_defaults(func=func)
        p.add_argument("--port", type=int, default=8000, help="web port on 127.0.0.1 (default 8000)")
        p.add_argument("--moto-port", type=int, default=5000, help="moto server port (default 5000)")
        p.add_argument(
            "--concurrency", type=int, help="worker threads (default: CELERY_WORKER_CONCURRENCY, 16)"
        )
        p.add_argument(
            "--real-aws",
            action="store_true",
            help="no moto server: AWS calls use the usual boto3 credential chain",
        )
        p.add_argument(
            "--regions-port",
            type=int,
            default=REGIONS_PORT,
            help=f"local regions' base port (default {REGIONS_PORT}; the regions on the next {REGION_COUNT})",
        )
        if name == "up":
            p.add_argument(
                "--demo",
                action="store_true",
                help="deploy a demo app to three local regions through the API and say what to try",
            )
    fault = sub.add_parser("fault", help="inject a fault into a local region, or clear faults")
    fault.set_defaults(func=cmd_fault)
    fault.add_argument("target", help="a region code, 'clear' or 'list'")
    fault.add_argument(
        "mode", nargs="?", default="", help="down | error | slow | hang | flaky (after clear: a region)"
    )
    fault.add_argument(
        "--for", dest="for_", default="", help="how long, e.g. 60s or 2m (default: until cleared)"
    )
    fault.add_argument("--app", default="", help="narrow the fault to one app")
    fault.add_argument("--stage", default="", help="narrow it further to one stage of that app")
    fault.add_argument("--ms", type=int, default=0, help="slow: milliseconds added (default 2000)")
    fault.add_argument(
        "--percent", type=float, default=0, help="flaky: share of requests failing (default 50)"
    )
    fault.add_argument("--regions-port", type=int, default=REGIONS_PORT)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    os.chdir(ROOT)
    try:
        raise SystemExit(main(sys.argv[1:]))
    except KeyboardInterrupt:  # during setup: the foreground command got the same Ctrl-C
        raise SystemExit(130) from None
