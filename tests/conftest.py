from __future__ import annotations

import os
import shutil

import pytest
from django.conf import settings
from rest_framework.test import APIClient

from controlplane.choices import Role

from .factories import ApiTokenFactory, TeamFactory


def pytest_sessionfinish(session, exitstatus):
    # The per-run data folder (tests/settings.py) holds nothing worth keeping.
    if "controlplane-test-" in str(settings.DATA_DIR):
        shutil.rmtree(settings.DATA_DIR, ignore_errors=True)


@pytest.fixture
def team(db):
    return TeamFactory(slug="acme")


@pytest.fixture
def other_team(db):
    return TeamFactory(slug="globex")


@pytest.fixture
def api_for(db):
    """``api_for(team, role=..., app=None, stages=None)``: an API client holding a Bearer token."""

    def make(team, role: str = Role.DEPLOYER, **token_kwargs) -> APIClient:
        token = ApiTokenFactory(team=team, role=role, **token_kwargs)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.raw}")
        client.token = token
        return client

    return make


@pytest.fixture
def anon_api() -> APIClient:
    return APIClient()


@pytest.fixture(scope="session")
def moto_server():
    """A moto server shared by the test process and worker subprocesses (AWS_ENDPOINT_URL)."""
    from regions.aws import session as aws_session

    from .support.processes import MotoServer

    server = MotoServer().start()
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = server.url
    settings.AWS_ENDPOINT_URL = server.url
    if hasattr(aws_session, "reset_clients"):
        aws_session.reset_clients()
    yield server
    settings.AWS_ENDPOINT_URL = previous or ""
    if previous is None:
        os.environ.pop("AWS_ENDPOINT_URL", None)
    server.stop()


@pytest.fixture(scope="session")
def aws_proxy(moto_server):
    """The fault-injecting proxy in front of the moto server; workers talk to AWS through it."""
    from .support.awsproxy import FaultyAwsProxy

    proxy = FaultyAwsProxy(moto_server.url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(scope="session")
def region_endpoints():
    """Local servers standing in for every region's endpoint (health verification, probes)."""
    from .support.regionservers import RegionEndpoints

    servers = RegionEndpoints().start()
    yield servers
    servers.stop()


@pytest.fixture
def aws(moto_server, aws_proxy, region_endpoints):
    """A clean fake AWS for one test (the shared moto server, reset; proxy faults off)."""
    moto_server.reset()
    aws_proxy.reset_faults()
    region_endpoints.failing.clear()
    return moto_server


@pytest.fixture(scope="session")
def worker_process(django_db_setup, django_db_blocker, aws_proxy, region_endpoints):
    """One real Celery worker subprocess for the session, on the configured broker, seeing the
    test database, the moto server (through the proxy) and the local region endpoints."""
    import json

    from .support.processes import WorkerProcess

    worker = WorkerProcess(
        env={
            "AWS_ENDPOINT_URL": aws_proxy.url,
            "ENDPOINT_OVERRIDES": json.dumps(region_endpoints.overrides()),
            "DEPLOY_VERIFY_INTERVAL": "0.2",
            "AWS_MAX_ATTEMPTS": "3",
            "REGION_HEARTBEAT_TIMEOUT": "3",
        },
        concurrency=16,
    ).start()
    yield worker
    worker.stop()
