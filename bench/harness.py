"""What the deploy benchmarks share: a private control plane (fresh database and data folder),
a moto server behind a proxy that adds latency to every AWS call, local servers standing in for
the regions' endpoints, and a real Celery worker process.

Run a benchmark from the repository root: ``python bench/fanout.py``. With ``REDIS_URL`` and
``DATABASE_URL`` set it uses them (a throwaway database is created and dropped); otherwise SQLite
and the filesystem broker.
"""

from __future__ import annotations

import io
import json
import os
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

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
    "DEPLOY_VERIFY_INTERVAL": "0.2",
}.items():
    os.environ.setdefault(key, value)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

from tests.support.awsproxy import FaultyAwsProxy  # noqa: E402
from tests.support.processes import MotoServer, WorkerProcess, wait_for  # noqa: E402
from tests.support.regionservers import RegionEndpoints  # noqa: E402


def handler_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", "def handler(event, context):\n    return {'statusCode': 200}\n")
    return buf.getvalue()


class Stack:
    """Everything a benchmark deploys through; use as a context manager."""

    def __init__(self, *, delay_ms: float = 50, concurrency: int = 16) -> None:
        self.delay_ms = delay_ms
        self.concurrency = concurrency

    def __enter__(self) -> Stack:
        self._db = setup_databases(verbosity=0, interactive=False)
        self.moto = MotoServer().start()
        self.proxy = FaultyAwsProxy(self.moto.url).start()
        self.endpoints = RegionEndpoints().start()
        os.environ["AWS_ENDPOINT_URL"] = self.proxy.url
        settings.AWS_ENDPOINT_URL = self.proxy.url
        from regions.aws.session import reset_clients

        reset_clients()
        self.worker = WorkerProcess(
            env={
                "AWS_ENDPOINT_URL": self.proxy.url,
                "ENDPOINT_OVERRIDES": json.dumps(self.endpoints.overrides()),
            },
            concurrency=self.concurrency,
            name=f"bench-{RUN}",
        ).start()
        self.proxy.delay_s = self.delay_ms / 1000
        return self

    def __exit__(self, *exc) -> None:
        self.worker.stop()
        self.proxy.stop()
        self.moto.stop()
        self.endpoints.stop()
        teardown_databases(self._db, verbosity=0)

    # --- objects ------------------------------------------------------------------------------
    def app(self, slug: str, regions: list[str]):
        from controlplane.models import Team
        from deployments.artifacts import store_artifact
        from deployments.models import App, Stage
        from regions.models import AppRegion, Region

        team, _ = Team.objects.get_or_create(slug="bench", defaults={"name": "Bench"})
        app = App.objects.create(team=team, slug=slug, runtime="python3.12", handler="app.handler")
        for code in regions:
            region, _ = Region.objects.get_or_create(code=code, defaults={"name": code})
            AppRegion.objects.create(app=app, region=region)
        Stage.objects.create(app=app, name="production")
        artifact = store_artifact(app=app, fileobj=io.BytesIO(handler_zip()))
        return app, artifact

    def principal(self, app):
        from controlplane.access import SystemPrincipal

        return SystemPrincipal(name="bench", team_id=app.team_id)

    def wait(self, deployment_id: int, timeout: float = 300):
        from deployments.choices import ACTIVE_DEPLOYMENT_STATUSES
        from deployments.models import Deployment

        def finished():
            d = Deployment.objects.get(pk=deployment_id)
            return d if d.status not in ACTIVE_DEPLOYMENT_STATUSES and d.finished_at else None

        return wait_for(finished, timeout=timeout, interval=0.01, message=f"deployment {deployment_id}")


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value
