"""What the CLI costs a CI job: ``controlplane deploy --wait`` against the deployment's own
duration (1 MB zip upload included), and how soon ``logs --follow`` shows a line after the
worker wrote it. A real web server (gunicorn), worker and AWS emulator on loopback.

    python bench/cli.py [--delay-ms 20] [--repeat 5] [--lines 40] [--port 24080]

Targets: deploy --wait adds <= 150 ms; logs --follow shows a line <= 500 ms after it is written.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from harness import ROOT, RUN, Stack, timed

CLI_SRC = ROOT / "cli"


def free_port(start: int) -> int:
    for port in range(start, start + 100):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port from {start}")


def cpu_seconds(pid: int) -> float:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    """CPU of ``pid`` and its live children (gunicorn's workers)."""
    total = cpu_seconds(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                total += cpu_seconds(int(entry.name))
    return total


class Web:
    """gunicorn serving the benchmark's control plane (its test database, data folder, queue)."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = Path(tempfile.mkstemp(prefix="cli-bench-requests-", suffix=".jsonl")[1])
        self.read_upto = 0
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "CONTROLPLANE_TEST_WORKER": "1",
               "CONTROLPLANE_TEST_RUN": RUN, "BENCH_REQUEST_LOG": str(self.log)}  # fmt: skip
        # As the image runs it (threaded workers), plus a hook logging each request's CPU time.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "controlplane.wsgi:application", "--bind", f"127.0.0.1:{port}",
             "--workers", "2", "--worker-class", "gthread", "--threads", "8", "--log-level", "warning",
             "-c", str(ROOT / "bench" / "gunicorn_timing.py")],
            cwd=ROOT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("gunicorn did not answer")

    def requests(self) -> list[dict]:
        """The requests served since the last call: method, path, status, wall_ms, cpu_ms."""
        with self.log.open() as f:
            f.seek(self.read_upto)
            lines = f.read()
            self.read_upto = f.tell()
        return [json.loads(line) for line in lines.splitlines() if line.strip()]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=15)
        self.log.unlink(missing_ok=True)


def kind_of(request: dict) -> str:
    """``POST artifacts``, ``GET events (long-poll)``...: what a request was, without ids."""
    parts = [p for p in request["path"].split("/") if p and not p.isdigit()]
    name = f"{request['method']} {parts[-1] if parts else '/'}"
    if parts and parts[-1] == "deployments" and request["method"] == "GET":
        name = "GET deployment"
    if "wait=" in (request.get("query") or ""):
        name += " (long-poll)"
    return name


def cli_env(url: str, token: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONTROLPLANE_", "GITHUB_", "GITLAB_"))}
    env.update(CONTROLPLANE_URL=url, CONTROLPLANE_TOKEN=token, PYTHONPATH=str(CLI_SRC))
    return env


def source_dir(n: int) -> Path:
    """A handler and 1 MB of incompressible data: a 1 MB zip."""
    root = Path(tempfile.mkdtemp(prefix="cli-bench-"))
    (root / "app.py").write_text(
        f"def handler(event, context):\n    return {{'statusCode': 200, 'n': {n}}}\n"
    )
    (root / "blob.bin").write_bytes(random.randbytes(1024 * 1024))
    return root


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def bench_deploy(stack, web, token, app, repeat: int) -> None:
    from deployments.models import Deployment

    env = cli_env(web.url, token)
    startup = []
    for _ in range(3):
        version = [sys.executable, "-m", "controlplane_cli", "--version"]
        startup.append(timed(lambda: subprocess.run(version, env=env, capture_output=True, check=True))[0])  # noqa: B023
    rows = []
    requests_ms: dict[str, list[float]] = {}
    served: dict[str, list[dict]] = {}
    web_cpu_per_deploy = []
    for n in range(repeat + 1):  # the first is a warm-up
        web.requests()
        src = source_dir(n)
        cpu_before = children_cpu()
        argv = [sys.executable, "-m", "controlplane_cli", "deploy", str(src), "--app", app.slug,
                "--stage", "production", "--json", "--verbose"]  # fmt: skip
        began = datetime.now(UTC)
        wall, done = timed(lambda: subprocess.run(argv, env=env, capture_output=True, text=True))  # noqa: B023
        ended = datetime.now(UTC)
        cli_cpu = children_cpu() - cpu_before
        assert done.returncode == 0, done.stderr
        d = Deployment.objects.get(pk=json.loads(done.stdout)["deployment"])
        own = (d.finished_at - d.created_at).total_seconds()
        before_start = (d.created_at - began).total_seconds()  # start-up, zip, upload, create
        after_end = (ended - d.finished_at).total_seconds()  # seeing the end, the last reads, exit
        handled = web.requests()
        if n:
            rows.append((wall, own, wall - own, cli_cpu, before_start, after_end))
            for line in done.stderr.splitlines():
                if "POST" in line:
                    requests_ms.setdefault(line.split()[2], []).append(float(line.split()[-2]))
            per_kind: dict[str, dict] = {}
            for r in handled:
                k = per_kind.setdefault(kind_of(r), {"n": 0, "cpu_ms": 0.0, "wall_ms": 0.0})
                k["n"] += 1
                k["cpu_ms"] += r["cpu_ms"]
                k["wall_ms"] += r["wall_ms"]
            for kind, k in per_kind.items():
                served.setdefault(kind, []).append(k)
            web_cpu_per_deploy.append(sum(r["cpu_ms"] for r in handled))
    print(f"CLI start-up (controlplane --version): {statistics.median(startup) * 1000:.0f} ms median")
    print("deploy --wait, 1 MB zip, 1 region:")
    for wall, own, extra, cpu, before, after in rows:
        print(f"  CLI wall {wall:.3f} s, deployment's own {own:.3f} s, added {extra * 1000:.0f} ms "
              f"({before * 1000:.0f} before it was created, {after * 1000:.0f} after it finished), "
              f"CLI CPU {cpu:.3f} s")  # fmt: skip
    for path, times in requests_ms.items():
        print(f"  POST {path}: {statistics.median(times):.0f} ms median (seen by the CLI)")
    print("  served per deploy (medians over the runs; CPU of the serving thread):")
    for kind, runs in sorted(served.items()):
        n = statistics.median(k["n"] for k in runs)
        cpu = statistics.median(k["cpu_ms"] / k["n"] for k in runs)
        wall = statistics.median(k["wall_ms"] / k["n"] for k in runs)
        print(f"    {kind:32} x{n:<4g} CPU {cpu:6.1f} ms, wall {wall:7.1f} ms per request")
    extra = statistics.median(r[2] for r in rows)
    cli_cpu = statistics.median(r[3] for r in rows)
    print(f"  added by the CLI (median): {extra * 1000:.0f} ms (target <= 150 ms), "
          f"CLI CPU {cli_cpu:.3f} s per deploy, web CPU for its requests "
          f"{statistics.median(web_cpu_per_deploy):.0f} ms per deploy")  # fmt: skip


def bench_follow(web, token, app, lines: int) -> None:
    from deployments.choices import DeploymentStatus
    from deployments.events import log_event
    from deployments.models import Deployment

    stage = app.stages.get()
    d = Deployment.objects.create(app=app, stage=stage, status=DeploymentStatus.RUNNING, triggered_by="bench")
    web.requests()
    proc = subprocess.Popen(
        [sys.executable, "-m", "controlplane_cli", "logs", str(d.pk), "--follow", "--json"],
        env=cli_env(web.url, token), stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    seen: dict[str, float] = {}

    def read() -> None:
        for line in proc.stdout:
            body = json.loads(line)
            if body.get("type") == "event":
                seen[body["message"]] = time.perf_counter()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(1.0)  # the CLI has started and is polling
    written: dict[str, float] = {}
    for i in range(lines):
        message = f"line {i}"
        log_event(deployment_id=d.pk, message=message, step="bench")
        written[message] = time.perf_counter()
        time.sleep(random.uniform(0.02, 0.3))
    deadline = time.monotonic() + 10
    while len(seen) < lines and time.monotonic() < deadline:
        time.sleep(0.05)
    Deployment.objects.filter(pk=d.pk).update(status=DeploymentStatus.SUCCEEDED, finished_at=d.created_at)
    cpu_before = children_cpu()
    proc.wait(timeout=30)
    reader.join(timeout=5)
    latencies = sorted((seen[m] - t) * 1000 for m, t in written.items() if m in seen)
    assert len(latencies) == lines, f"{lines - len(latencies)} lines never shown"
    p95 = latencies[int(0.95 * (len(latencies) - 1))]
    print(f"logs --follow, {lines} lines written by the worker's log function at random intervals:")
    follower_cpu = children_cpu() - cpu_before
    print(f"  shown after: median {statistics.median(latencies):.0f} ms, p95 {p95:.0f} ms, "
          f"max {latencies[-1]:.0f} ms (target <= 500 ms); follower CPU {follower_cpu:.3f} s")  # fmt: skip
    handled = web.requests()
    cpu = [r["cpu_ms"] for r in handled]
    print(f"  web: {len(handled)} requests for {lines} lines, CPU {sum(cpu):.0f} ms in all "
          f"({statistics.median(cpu):.1f} ms median per request)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=20)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--lines", type=int, default=40)
    parser.add_argument("--port", type=int, default=24080)
    parser.add_argument("--quick", action="store_true", help="2 deploys, 20 lines")
    args = parser.parse_args()
    if args.quick:
        args.repeat, args.lines = min(args.repeat, 2), min(args.lines, 20)

    from controlplane.models import ApiToken

    with Stack(delay_ms=args.delay_ms, concurrency=8) as stack:
        web = Web(free_port(args.port))
        try:
            app, _artifact = stack.app("clibench", ["us-east-1"])
            raw = ApiToken.generate()
            ApiToken.objects.create(
                team=app.team, name="bench", token_hash=ApiToken.hash(raw), prefix=raw[:8]
            )
            web_cpu, worker_cpu, own_cpu = (
                tree_cpu(web.proc.pid),
                cpu_seconds(stack.worker.proc.pid),
                os.times(),
            )
            cores = len(os.sched_getaffinity(0))
            print(f"AWS latency added per call: {args.delay_ms:.0f} ms; {cores} cores; "
                  f"load average {os.getloadavg()[0]:.2f}")  # fmt: skip
            bench_deploy(stack, web, raw, app, args.repeat)
            bench_follow(web, raw, app, args.lines)
            after = os.times()
            clis = (
                after.children_user + after.children_system - own_cpu.children_user - own_cpu.children_system
            )
            print(
                f"CPU during the benchmark: web {tree_cpu(web.proc.pid) - web_cpu:.2f} s, worker "
                f"{cpu_seconds(stack.worker.proc.pid) - worker_cpu:.2f} s, this process "
                f"{(after.user + after.system) - (own_cpu.user + own_cpu.system):.2f} s, CLI processes "
                f"{clis:.2f} s; load average {os.getloadavg()[0]:.2f}"
            )
        finally:
            web.stop()


if __name__ == "__main__":
    main()
