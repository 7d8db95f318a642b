"""A region whose step outlasts the heartbeat timeout keeps its worker: the heartbeat is
refreshed while the step runs, so no other worker takes it over."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from deployments.choices import RegionStatus
from deployments.models import RegionDeployment

from . import test_engine_support as support
from .test_engine_support import new_deployment

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_long_step_is_never_taken_over_while_its_worker_lives(
    app_3_regions, engine, settings, region_endpoints, aws
):
    from deployments.engine.claim import claim
    from deployments.engine.driver import run_region

    aws.strict.rules.acm_validation = False  # (not about the domain: its certificate issued at once)

    settings.REGION_HEARTBEAT_TIMEOUT = 2
    settings.DEPLOY_VERIFY_ATTEMPTS = 6  # verify: ~5 s of failing probes, past the timeout
    settings.DEPLOY_VERIFY_INTERVAL = 1.0
    region_endpoints.failing.add("eu-west-1")
    deployment = new_deployment(app_3_regions)
    engine.deliver(only="workers.start_deployment")
    rd = deployment.regions.get(region__code="eu-west-1")

    result = {}

    def worker():
        try:
            result["status"] = run_region(rd.pk)
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    deadline = time.monotonic() + 60
    while RegionDeployment.objects.get(pk=rd.pk).step != "verify" and time.monotonic() < deadline:
        time.sleep(0.05)
    entered = time.monotonic()
    takeovers = []
    while thread.is_alive():
        row = RegionDeployment.objects.get(pk=rd.pk)
        if row.status == RegionStatus.RUNNING:
            assert row.heartbeat_at > timezone.now() - timedelta(seconds=2)
        taken = claim(rd.pk)  # another worker, redelivered the same message
        if taken is not None:
            takeovers.append(taken)
        time.sleep(0.2)
    thread.join()
    assert time.monotonic() - entered > 2 * settings.REGION_HEARTBEAT_TIMEOUT  # the step was long
    assert takeovers == []
    assert result["status"] == RegionStatus.FAILED  # its own verify failed, in its own worker
    assert not deployment.events.filter(message__contains="went silent").exists()
