"""Webhook to work: from a signed GitHub push delivery to the first AWS call of its deploy, as the
AWS emulator saw it arrive (a ``time.time()`` taken in the emulator's process when the call came
in; the benchmark's clock is the same machine's). A real web server (gunicorn), a real worker
(Celery) and the emulator, each a process of its own; PostgreSQL and Redis with DATABASE_URL and
REDIS_URL (the target's setting), else SQLite and the filesystem broker.

Two variants, deliveries one after the other (each deploy runs to its end before the next):

- **push, build ``true``**: an app whose build command does nothing, built from its git repository
  (on this machine's disk, ``file://``) in the real build sandbox: fetch, sandbox, zip, release;
- **uploaded artifact**: the same pipeline with nothing to build: CI's ``POST .../deployments/``
  of an artifact it uploaded before (the delivery is the deploy request).

Per variant: p50 and p95 of delivery -> first AWS call, the median of each stage of the way
(answered; worker started the deployment; fetch began; zip stored; first AWS call), and the
CPU each process spent per delivery over that window (web, worker with its git and sandbox
children, emulator, this process). Target: p95 <= 300 ms on PostgreSQL + Redis.

    python bench/webhook.py [--deliveries 50] [--delay-ms 50] [--quick] [--strict]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import httpx
from harness import Stack

from cli import Web, cpu_seconds, free_port, tree_cpu

TARGET_P95_MS = 300.0
HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'n': %d}\n"


def zip_of(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", HANDLER % n)
    return buf.getvalue()


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Meter:
    """CPU seconds of each process of the stack, read from /proc (children reaped by a process,
    such as the worker's git and sandbox, count towards it)."""

    def __init__(self, stack: Stack, web: Web) -> None:
        self.pids = {"web": web.proc.pid, "worker": stack.worker.proc.pid, "emulator": stack.aws.proc.pid}

    def read(self) -> dict[str, float]:
        return {
            "web": tree_cpu(self.pids["web"]),
            "worker": cpu_seconds(self.pids["worker"]),
            "emulator": cpu_seconds(self.pids["emulator"]),
            "bench": self_cpu(),
        }


def stages_of(deployment_id: int, t0: float) -> dict[str, float]:
    """Milliseconds from the delivery to each recorded stage of its deployment."""
    from deployments.models import Deployment, DeploymentEvent, RegionDeployment

    d = Deployment.objects.get(pk=deployment_id)
    out = {"recorded": d.created_at.timestamp(), "worker started": d.started_at.timestamp()}
    for event in DeploymentEvent.objects.filter(deployment_id=deployment_id, step="build").order_by("seq"):
        if event.message.startswith("Fetching "):
            out["fetch began"] = event.created_at.timestamp()
        elif event.message.startswith("$ "):
            out["checked out"] = event.created_at.timestamp()
        elif event.message.startswith("Build command finished"):
            out["sandbox done"] = event.created_at.timestamp()
        elif event.message.startswith("Zipped "):
            out["zip stored"] = event.created_at.timestamp()
    region = RegionDeployment.objects.filter(deployment_id=deployment_id).order_by("started_at").first()
    if region is not None and region.started_at is not None:
        out["region claimed"] = region.started_at.timestamp()
    first_step = (
        DeploymentEvent.objects.filter(deployment_id=deployment_id, region__isnull=False)
        .order_by("seq")
        .first()
    )
    if first_step is not None:
        out["region logged"] = first_step.created_at.timestamp()
    return {name: (at - t0) * 1000 for name, at in out.items()}


def run_variant(
    name: str, stack: Stack, web: Web, meter: Meter, deliver, count: int, *, show_log: bool = False
) -> dict:
    """``deliver(n)`` prepares delivery n and returns ``send()``, which makes the request and
    returns the deployment id. Runs ``count`` of them (after one warm-up) and prints the figures."""
    from deployments.choices import DeploymentStatus

    rows = []
    for n in range(count + 1):
        send = deliver(n)
        before = meter.read()
        t0 = time.time()
        deployment_id, answered = send()
        first = stack.aws.first_call_since(t0, wait_s=120)
        after = meter.read()
        assert first is not None, f"{name}: no AWS call within 120 s of delivery {n}"
        done = stack.wait(deployment_id, timeout=300)
        assert done.status == DeploymentStatus.SUCCEEDED, (name, n, done.status, done.error)
        if n == 0:
            continue  # warm-up: first imports, first connections
        stages = stages_of(deployment_id, t0)
        stages["answered"] = (answered - t0) * 1000
        stages["first AWS call"] = (first["at"] - t0) * 1000
        rows.append({"ms": stages["first AWS call"], "stages": stages, "call": first["call"], "t0": t0,
                     "deployment": deployment_id,
                     "cpu": {k: after[k] - before[k] for k in after}})  # fmt: skip
    walls = sorted(r["ms"] for r in rows)
    p95 = walls[min(len(walls) - 1, max(0, round(len(walls) * 0.95) - 1))]
    result = {"name": name, "p50": statistics.median(walls), "p95": p95, "rows": rows}
    order = ["answered", "recorded", "worker started", "fetch began", "checked out", "sandbox done",
             "zip stored", "region claimed", "region logged", "first AWS call"]  # fmt: skip
    print(f"\n{name}: {len(rows)} deliveries, delivery -> first AWS call "
          f"p50 {result['p50']:.0f} ms, p95 {p95:.0f} ms (max {walls[-1]:.0f} ms)")  # fmt: skip
    print("  median ms from the delivery to:")
    for stage in order:
        values = [r["stages"][stage] for r in rows if stage in r["stages"]]
        if values:
            print(f"    {stage:16} {statistics.median(values):7.0f}  (p95 "
                  f"{sorted(values)[min(len(values) - 1, round(len(values) * 0.95) - 1)]:.0f})")  # fmt: skip
    cpu = {k: statistics.median(r["cpu"][k] for r in rows) * 1000 for k in rows[0]["cpu"]}
    print("  CPU ms per delivery (median, delivery -> first call): "
          + ", ".join(f"{k} {v:.0f}" for k, v in cpu.items()))  # fmt: skip
    print(f"  first call: {rows[0]['call']}")
    if show_log:
        median = sorted(rows, key=lambda r: r["ms"])[len(rows) // 2]
        print_log(median["deployment"], median["t0"], median["ms"])
    result["cpu"] = cpu
    return result


def print_log(deployment_id: int, t0: float, first_ms: float) -> None:
    """The deployment log of one delivery, each line at its ms from the delivery."""
    from deployments.models import DeploymentEvent

    print(f"  the median delivery's log (deployment {deployment_id}; first AWS call at {first_ms:.0f} ms):")
    for event in DeploymentEvent.objects.filter(deployment_id=deployment_id).order_by("seq")[:40]:
        print(f"    {(event.created_at.timestamp() - t0) * 1000:7.0f}  [{event.step}] {event.message[:100]}")


def broker_round_trip(stack: Stack, count: int) -> None:
    """The floor of every hop through the queue: a no-op task (``workers.ping``) sent to the
    worker and its answer read back (the broker both ways, and the result store)."""
    from workers.tasks import ping

    walls = []
    for _ in range(count + 1):
        started = time.perf_counter()
        ping.apply_async(queue=stack.worker.queue).get(timeout=30)
        walls.append((time.perf_counter() - started) * 1000)
    walls = sorted(walls[1:])
    print(f"\nbroker round trip (a no-op task there and its result back), {count} times: "
          f"p50 {statistics.median(walls):.1f} ms, max {walls[-1]:.1f} ms")  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deliveries", type=int, default=50)
    parser.add_argument("--delay-ms", type=float, default=50, help="added to every AWS call")
    parser.add_argument("--quick", action="store_true", help="10 deliveries per variant")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--port", type=int, default=24180)
    parser.add_argument("--show-log", action="store_true", help="print the median delivery's log, timed")
    args = parser.parse_args()
    if args.quick:
        args.deliveries = min(args.deliveries, 10)

    from django.db import connection

    from controlplane.choices import Role
    from tests.factories import ApiTokenFactory
    from tests.support.gitrepo import GitRepo, body_of, github_headers, github_push

    with Stack(delay_ms=args.delay_ms, concurrency=16) as stack:
        web = Web(free_port(args.port))
        try:
            meter = Meter(stack, web)
            broker = "redis" if os.environ.get("REDIS_URL") else "filesystem"
            print(f"database {connection.vendor}, broker {broker}, {args.delay_ms:.0f} ms per AWS call, "
                  f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")  # fmt: skip
            repo = GitRepo(Path(tempfile.mkdtemp(prefix="webhook-bench-")) / "git")
            built, _ = stack.app("built", ["us-east-1"])
            built.repo_url, built.build_command = repo.url, "true"
            built.save(update_fields=["repo_url", "build_command"])
            built.stages.update(branch="main")
            secret = built.webhook_secret
            uploaded, _ = stack.app("uploaded", ["us-east-1"])
            token = ApiTokenFactory(team=built.team, role=Role.ADMIN).raw
            auth = {"Authorization": f"Bearer {token}"}
            client = httpx.Client(base_url=web.url, timeout=60)
            state = {"before": "0" * 40}

            def push(n: int):
                sha = repo.commit({"app.py": HANDLER % n}, f"Change {n}")
                body = body_of(github_push(repo, after=sha, before=state["before"]))
                state["before"] = sha
                headers = {**github_headers(secret, body), "Content-Type": "application/json"}

                def send():
                    answer = client.post("/api/v1/hooks/github/", content=body, headers=headers)
                    answered = time.time()
                    assert answer.status_code == 202, answer.text
                    return answer.json()["deployments"][0]["deployment"], answered

                return send

            def artifact(n: int):
                files = {"file": ("app.zip", zip_of(n), "application/zip")}
                stored = client.post("/api/v1/apps/uploaded/artifacts/", files=files, headers=auth)
                assert stored.status_code == 201, stored.text
                body = json.dumps({"stage": "production", "artifact": stored.json()["id"]})

                def send():
                    answer = client.post("/api/v1/apps/uploaded/deployments/", content=body,
                                         headers={**auth, "Content-Type": "application/json"})  # fmt: skip
                    answered = time.time()
                    assert answer.status_code == 202, answer.text
                    return answer.json()["id"], answered

                return send

            count = args.deliveries
            broker_round_trip(stack, 20)
            results = [
                run_variant(
                    "push, build command `true` in the sandbox",
                    stack,
                    web,
                    meter,
                    push,
                    count,
                    show_log=args.show_log,
                ),
                run_variant(
                    "uploaded artifact (deploy request)",
                    stack,
                    web,
                    meter,
                    artifact,
                    count,
                    show_log=args.show_log,
                ),
            ]
        finally:
            web.stop()
    failed = False
    print()
    for r in results:
        ok = r["p95"] <= TARGET_P95_MS
        failed |= not ok
        print(f"{r['name']:44} p50 {r['p50']:5.0f} ms  p95 {r['p95']:5.0f} ms  "
              f"target p95 <= {TARGET_P95_MS:.0f} ms  {'PASS' if ok else 'FAIL'}")  # fmt: skip
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
