"""The chaos suite's stack: real Celery worker processes and a real beat (so the reaper runs on
its production schedule), the moto server behind a chaos proxy, the local region endpoints, and a
broker that the tests break: Redis of its own, or the filesystem broker's folder. Everything runs
with the product's recovery settings (heartbeat, reaper, requeue), never shortened for the test.

``CHAOS_LONG=1`` runs the longer form: longer outages, more kill points, more rounds."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from controlplane.choices import Role
from deployments.choices import ACTIVE_DEPLOYMENT_STATUSES
from deployments.models import Deployment, Release
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.chaos import BeatProcess, ChaosAwsProxy, RedisServer, celery_pointed_at
from tests.support.deploys import boto, deploy, make_zip, upload
from tests.support.processes import WorkerProcess, wait_for

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]


def filesystem_broker() -> tuple[str, dict]:
    folder = Path(settings.DATA_DIR) / "broker"
    for sub in ("queue", "processed", "control"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return "filesystem://localhost/", {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),
        "store_processed": False,
        "polling_interval": 0.05,
    }


class ChaosStack:
    """Workers, beat and the test process on one broker and a queue of their own."""

    def __init__(self, *, broker: str, aws_url: str, endpoints: dict, folder: Path) -> None:
        self.broker = broker
        self.folder = folder
        self.queue = f"chaos-{uuid.uuid4().hex[:8]}"
        self.redis: RedisServer | None = None
        if broker == "redis":
            self.redis = RedisServer(folder).start()
            url, options = self.redis.url, {"socket_connect_timeout": 3, "socket_timeout": 10}
            redis_url = self.redis.url
        elif broker == "filesystem":
            url, options = filesystem_broker()
            redis_url = ""
        else:  # the run's own broker (filesystem on a fresh machine, Redis in CI)
            url, options, redis_url = None, None, os.environ.get("REDIS_URL", "")
        self.env = {
            "AWS_ENDPOINT_URL": aws_url,
            "ENDPOINT_OVERRIDES": json.dumps(endpoints),
            "DEPLOY_VERIFY_INTERVAL": "0.2",
            "CONTROLPLANE_TEST_QUEUE": self.queue,
            "REDIS_URL": redis_url,
            "LOG_LEVEL": "INFO",
        }
        self._pointed = celery_pointed_at(broker_url=url, transport_options=options, queue=self.queue)
        self._pointed.__enter__()
        self.workers: list[WorkerProcess] = []
        self.beat = BeatProcess(env=self.env, folder=folder).start()

    def worker(self, name: str) -> WorkerProcess:
        """A worker process on the chaos queue, once it says it is ready (read from its log: its
        result backend may not be the test process's)."""
        worker = WorkerProcess(env=self.env, concurrency=16, name=f"{name}-{self.queue}", queue=self.queue)
        self.workers.append(worker.start(wait=False))
        wait_for(
            lambda: " ready." in worker.log(), timeout=60, interval=0.1, message=f"worker {name} to be ready"
        )
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.kill()  # (nothing to finish: the scenario is over)
        self.beat.stop()
        self._pointed.__exit__(None, None, None)
        if self.redis:
            self.redis.stop()

    def logs(self) -> str:
        parts = [f"--- {w.name}\n{w.log()}" for w in self.workers]
        beat = self.beat.log_path
        parts.append(f"--- beat\n{beat.read_text(errors='replace')[-3000:] if beat.exists() else ''}")
        return "\n".join(parts)


@pytest.fixture
def chaos_aws(aws, moto_server):
    """The chaos proxy in front of a clean emulator."""
    proxy = ChaosAwsProxy(moto_server.url)
    yield proxy
    proxy.stop()


@pytest.fixture
def chaos_stack(chaos_aws, region_endpoints, tmp_path, request):
    """``chaos_stack(broker)``: broker ``redis``, ``filesystem`` or ``None`` (the run's own)."""
    stacks: list[ChaosStack] = []

    def make(broker: str | None = None) -> ChaosStack:
        stack = ChaosStack(broker=broker or "", aws_url=chaos_aws.url,
                           endpoints=region_endpoints.overrides(), folder=tmp_path)  # fmt: skip
        stacks.append(stack)
        return stack

    yield make
    failed = getattr(request.node, "rep_call", None)
    for stack in stacks:
        if failed is not None and failed.failed:
            print(stack.logs())
        stack.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture
def chaos_app(team, aws):
    """``chaos_app(slug)``: an app in three regions with a production stage (no custom domain:
    the scenarios are about the engine's recovery, not Route 53)."""

    def make(slug: str):
        app = AppFactory(team=team, slug=slug)
        for code in REGIONS:
            region = RegionFactory._meta.model.objects.filter(code=code).first() or RegionFactory(code=code)
            AppRegionFactory(app=app, region=region)
        StageFactory(app=app, name="production")
        return app

    return make


@pytest.fixture
def deployer(api_for, team):
    return api_for(team, role=Role.DEPLOYER)


def post_deploy(client, app, body: str = "def handler(event, context):\n    return {'statusCode': 200}\n"):
    return deploy(client, app, "production", upload(client, app, make_zip(body)))


def wait_done(pk: int, timeout: float) -> Deployment:
    def done():
        d = Deployment.objects.get(pk=pk)
        return d if d.status not in ACTIVE_DEPLOYMENT_STATUSES and d.finished_at else None

    return wait_for(done, timeout=timeout, interval=0.1, message=f"deployment {pk} to finish")


def assert_nothing_lost_or_duplicated(aws, apps_deploys: dict) -> None:
    """Per app: exactly the deployments asked for (each succeeded), one release per deployment,
    and in every region exactly one Lambda version per deployment, the alias on the last one."""
    for app, expected in apps_deploys.items():
        deployments = list(Deployment.objects.filter(app=app).order_by("pk"))
        assert [d.status for d in deployments] == ["succeeded"] * expected, [
            (d.pk, d.status, d.error) for d in deployments
        ]
        assert Release.objects.filter(app=app).count() == expected
        for code in REGIONS:
            lam = boto("lambda", code, aws)
            versions = [
                v["Version"]
                for v in lam.list_versions_by_function(FunctionName=app.function_name)["Versions"]
            ]
            assert versions == ["$LATEST", *[str(n) for n in range(1, expected + 1)]], (
                app.slug,
                code,
                versions,
            )
            alias = lam.get_alias(FunctionName=app.function_name, Name="production")
            assert alias["FunctionVersion"] == str(expected), (app.slug, code)
