"""What the deploy benchmarks share: a private control plane (fresh database and data folder),
a moto server that adds latency to every AWS call (in a process of its own, as AWS is on other
machines), local servers standing in for
the regions' endpoints, and a real Celery worker process.

Run a benchmark from the repository root: ``python bench/fanout.py``. With ``REDIS_URL`` and
``DATABASE_URL`` set it uses them (a throwaway database is created and dropped); otherwise SQLite
and the filesystem broker.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from collections import Counter
from pathlib import Path

import httpx
from aws_model import Model

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN = uuid.uuid4().hex[:8]
os.environ.setdefault("CONTROLPLANE_DATA_DIR", tempfile.mkdtemp(prefix="controlplane-bench-"))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["CONTROLPLANE_TEST_RUN"] = RUN
for key, value in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "LOG_LEVEL": "WARNING",
    "DEBUG": "false",  # as in production: no query log kept in memory per SQL statement
    "DEPLOY_VERIFY_INTERVAL": "0.2",
}.items():
    os.environ.setdefault(key, value)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

from tests.support.processes import WorkerProcess, wait_for  # noqa: E402
from tests.support.regionservers import RegionEndpoints  # noqa: E402


class RemoteAws:
    """bench/aws_emulator.py in a subprocess: fake AWS with latency, off the benchmark's CPU.
    ``model``: bench/aws_model.py's realistic model (else ``delay_ms`` flat on every call)."""

    def __init__(self, delay_ms: float = 50, *, strict: bool = False, model: Model | None = None) -> None:
        mode = ["strict"] if strict else []
        latency = ["--model", model.to_json()] if model is not None else [str(delay_ms)]
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / "aws_emulator.py"), *latency, *mode],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        urls = json.loads(self.proc.stdout.readline())
        self.url, self.moto_url, self._stats = urls["proxy"], urls["moto"], urls["stats"]

    @property
    def requests(self) -> int:
        return httpx.get(self._stats, timeout=10).json()["requests"]

    def first_call_since(self, since: float, wait_s: float = 60) -> dict | None:
        """``{"at": time.time() of its arrival, "call": what it called}`` of the first AWS call
        that reached the emulator at or after ``since`` (a ``time.time()``), or None."""
        answer = httpx.get(self._stats, params={"since": since, "wait": wait_s}, timeout=wait_s + 10)
        return answer.json()["first"]

    def calls(self) -> Counter:
        """Calls served so far, per "region service:Operation"."""
        return Counter(httpx.get(self._stats, timeout=10).json()["calls"])

    def applied(self) -> dict[str, float]:
        """When AWS last handled each "region service:Operation" (``time.time()``)."""
        return httpx.get(self._stats, timeout=10).json()["applied"]

    def use(self, model: Model) -> None:
        """Play ``model`` from now on (what AWS holds is kept)."""
        httpx.post(self._stats, content=model.to_json(), timeout=10).raise_for_status()

    def strict_stats(self) -> dict:
        """Calls per "service:Operation" and refusals per rule (strict mode only)."""
        return httpx.get(f"{self.url}/_strict/stats", timeout=10).json()

    def stop(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def handler_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return {'statusCode': 200}\n")
    return buf.getvalue()


class Stack:
    """Everything a benchmark deploys through; use as a context manager."""

    def __init__(
        self,
        *,
        delay_ms: float = 50,
        concurrency: int | None = None,
        strict: bool = False,
        model: Model | None = None,
        workers: int = 1,
    ) -> None:
        self.delay_ms = delay_ms
        self.concurrency = concurrency  # None: the worker's own setting (CELERY_WORKER_CONCURRENCY)
        self.strict = strict
        self.model = model
        self.worker_count = workers

    def __enter__(self) -> Stack:
        self._db = setup_databases(verbosity=0, interactive=False)
        self.aws = RemoteAws(self.delay_ms, strict=self.strict, model=self.model)
        self.proxy = self.aws
        self.endpoints = RegionEndpoints().start()
        os.environ["AWS_ENDPOINT_URL"] = self.proxy.url
        settings.AWS_ENDPOINT_URL = self.proxy.url
        from regions.aws.session import reset_clients

        reset_clients()
        env = {
            "AWS_ENDPOINT_URL": self.proxy.url,
            "ENDPOINT_OVERRIDES": json.dumps(self.endpoints.overrides()),
        }
        concurrency = self.concurrency or settings.CELERY_WORKER_CONCURRENCY
        self.workers = [
            WorkerProcess(env=env, concurrency=concurrency, name=f"bench{n}-{RUN}").start(wait=False)
            for n in range(self.worker_count)
        ]
        for worker in self.workers:
            worker.wait_ready()
        self.worker = self.workers[0]
        return self

    def __exit__(self, *exc) -> None:
        for worker in self.workers:
            worker.stop()
        self.aws.stop()
        self.endpoints.stop()
        teardown_databases(self._db, verbosity=0)

    # --- objects ------------------------------------------------------------------------------
    def app(self, slug: str, regions: list[str], *, domain: str = "", zone: str = ""):
        from controlplane.models import Team
        from deployments.artifacts import store_artifact
        from deployments.models import App, Stage
        from regions.models import AppRegion, Region

        team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
        app = App.objects.create(team=team, slug=slug, runtime="python3.12", handler="app.handler")
        for code in regions:
            region, _ = Region.objects.get_or_create(code=code, defaults={"name": code})
            AppRegion.objects.create(app=app, region=region)
        Stage.objects.create(app=app, name="production", domain=domain, hosted_zone_id=zone)
        artifact = store_artifact(app=app, fileobj=io.BytesIO(handler_zip()))
        return app, artifact

    def principal(self, app):
        from controlplane.access import SystemPrincipal

        return SystemPrincipal(name="bench", team_id=app.team_id)

    def wait(self, deployment_id: int, timeout: float = 300, interval: float = 0.02):
        """The deployment once it has finished (polled every ``interval`` s with one small query,
        so the polling costs little of the CPU the benchmark measures)."""
        from deployments.choices import ACTIVE_DEPLOYMENT_STATUSES
        from deployments.models import Deployment

        row = Deployment.objects.filter(pk=deployment_id).values_list("status", "finished_at")

        def finished():
            status, finished_at = row.get()
            return status not in ACTIVE_DEPLOYMENT_STATUSES and finished_at is not None

        wait_for(finished, timeout=timeout, interval=interval, message=f"deployment {deployment_id}")
        return Deployment.objects.get(pk=deployment_id)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its waited-for children, from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def own_cpu() -> float:
    """CPU time of this process so far (user + system)."""
    t = os.times()
    return t.user + t.system


class CpuMeter:
    """CPU seconds each process spent between ``start()`` and ``stop()``: the workers, the AWS
    emulator, and this process (the API's services and the polling)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack

    def _now(self) -> dict[str, float]:
        out = {f"worker{n + 1}": cpu_seconds(w.proc.pid) for n, w in enumerate(self.stack.workers)}
        out["aws"] = cpu_seconds(self.stack.aws.proc.pid)
        out["api"] = own_cpu()
        return out

    def __enter__(self) -> CpuMeter:
        self.before = self._now()
        self.wall_start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall_start
        after = self._now()
        self.spent = {k: after[k] - self.before[k] for k in after}

    @property
    def workers(self) -> float:
        return sum(v for k, v in self.spent.items() if k.startswith("worker"))

    def line(self) -> str:
        parts = [f"{k} {v:.2f} s" for k, v in self.spent.items()]
        return f"wall {self.wall:.2f} s; CPU: " + ", ".join(parts)


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value
