"""Shared fixtures for the engine tests: the deploy engine driven in this process against the moto
server, with a recording broker standing in for Celery, so a test decides when each message is
delivered (or lost) and then checks the rows and AWS state it led to.

(No tests here; the fixtures are imported by the ``test_engine_*`` modules.)
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field

import pytest

from controlplane.access import SystemPrincipal
from deployments.artifacts import store_artifact
from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from deployments.services.deployments import create_deployment
from tests.support.deploys import boto, make_zip

# Other code than a first deploy's, so Lambda publishes a new version.
V2 = "def handler(event, context):\n    return {'statusCode': 202}\n"


@dataclass
class Message:
    task: str
    args: tuple
    countdown: float | None = None


@dataclass
class RecordingBroker:
    """Every task sent is kept here instead of reaching a real broker; ``deliver`` runs them."""

    sent: list[Message] = field(default_factory=list)

    def take(self) -> list[Message]:
        messages, self.sent = self.sent, []
        return messages

    def pending(self, task: str) -> list:
        return [m.args[0] for m in self.sent if m.task == task]

    def drop(self) -> None:
        """The broker lost everything sent so far."""
        self.sent = []

    def deliver(self, *, rounds: int = 50, only: str | None = None, early: bool = True) -> None:
        """Run what was sent, and what that sends, until nothing is left (a worker with a queue).
        Notifications are not delivered (dropped). ``only`` runs one task's messages and keeps the
        rest; ``early=False`` keeps the messages sent with a countdown (bake time) too."""
        from deployments.engine.context import RetryLater
        from deployments.engine.driver import run_region, start
        from deployments.engine.rollback import run_rollback

        for _ in range(rounds):
            messages, kept = [], []
            for m in self.take():
                if m.task == "workers.deliver_notification":
                    continue
                due = only in (None, m.task) and (early or not m.countdown)
                (messages if due else kept).append(m)
            self.sent.extend(kept)
            if not messages:
                return
            for message in messages:
                if message.task == "workers.start_deployment":
                    start(message.args[0])
                elif message.task == "workers.rollback_regions":
                    run_rollback(message.args[0])
                elif message.task == "workers.deploy_region":
                    if early and message.countdown and message.countdown <= 1:
                        time.sleep(message.countdown)  # a short park (a certificate's validation)
                    try:
                        run_region(message.args[0])
                    except RetryLater:
                        self.sent.append(message)
        raise AssertionError("messages kept coming")


@pytest.fixture
def broker(monkeypatch) -> RecordingBroker:
    from celery.app.task import Task

    recording = RecordingBroker()

    def apply_async(self, args=None, kwargs=None, countdown=None, **options):
        recording.sent.append(Message(self.name, tuple(args or ()), countdown))

    monkeypatch.setattr(Task, "apply_async", apply_async)
    return recording


@pytest.fixture
def engine(settings, aws, region_endpoints, broker):
    """The engine in this process: AWS is the moto server, health checks hit the local region
    servers, and tasks go to the recording broker."""
    settings.ENDPOINT_OVERRIDES = region_endpoints.overrides()
    settings.DEPLOY_VERIFY_INTERVAL = 0.05
    settings.DEPLOY_VERIFY_ATTEMPTS = 2
    return broker


def principal_for(app) -> SystemPrincipal:
    return SystemPrincipal(name="user:test", team_id=app.team_id)


def new_deployment(app, stage: str = "production", body: str | None = None, **kwargs) -> Deployment:
    """A deployment of a fresh artifact (``body`` makes its code differ from other releases)."""
    content = make_zip(body) if body else make_zip()
    artifact = store_artifact(app=app, fileobj=io.BytesIO(content))
    return create_deployment(
        app=app, stage=app.stages.get(name=stage), principal=principal_for(app), artifact=artifact, **kwargs
    )


def status_of(deployment: Deployment) -> tuple[str, dict[str, str]]:
    deployment.refresh_from_db()
    return deployment.status, {
        rd.region.code: rd.status for rd in deployment.regions.select_related("region")
    }


def versions(deployment: Deployment) -> dict[str, str]:
    """``{region code: Lambda version}`` the deployment published."""
    return {rd.region.code: rd.version for rd in deployment.regions.select_related("region")}


def alias_of(app, aws, code: str, stage: str = "production") -> tuple[str, dict]:
    """What the stage alias points at in AWS: its version and its canary weights."""
    alias = boto("lambda", code, aws).get_alias(FunctionName=app.function_name, Name=stage)
    return alias["FunctionVersion"], (alias.get("RoutingConfig") or {}).get("AdditionalVersionWeights") or {}


@pytest.fixture
def v1(app_3_regions, engine):
    """A first deploy of the three-region app, succeeded."""
    first = new_deployment(app_3_regions)
    engine.deliver()
    assert status_of(first)[0] == DeploymentStatus.SUCCEEDED
    return first
