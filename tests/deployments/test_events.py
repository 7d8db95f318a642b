"""The deployment log: lines written one at a time and in a batch (a rollback's moves) follow
each other with consecutive sequence numbers, so a client following ``events/?after=N`` misses
none and sees them in order."""

from __future__ import annotations

import pytest

from deployments.choices import DeploymentStatus, EventLevel
from deployments.events import EventLine, log_event, log_events
from deployments.models import Deployment, DeploymentEvent
from tests.factories import AppFactory, RegionFactory, StageFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def deployment(team):
    app = AppFactory(team=team)
    return Deployment.objects.create(app=app, stage=StageFactory(app=app), status=DeploymentStatus.RUNNING)


def test_single_and_batched_lines_get_consecutive_numbers_in_order(deployment):
    eu, us = RegionFactory(code="eu-west-1"), RegionFactory(code="us-east-1")
    first = log_event(deployment_id=deployment.pk, message="queued", step="queue")
    batch = log_events(
        deployment_id=deployment.pk,
        lines=[
            EventLine("eu-west-1: moved", region_id=eu.pk, step="alias", duration_ms=210),
            EventLine("us-east-1: moved", region_id=us.pk, step="alias", duration_ms=12),
            EventLine("us-east-1: slow", region_id=us.pk, step="alias", level=EventLevel.WARNING),
        ],
    )
    last = log_event(deployment_id=deployment.pk, message="done", step="finish", duration_ms=5)
    rows = list(DeploymentEvent.objects.filter(deployment=deployment).order_by("seq"))
    assert [(r.seq, r.message) for r in rows] == [
        (1, "queued"), (2, "eu-west-1: moved"), (3, "us-east-1: moved"), (4, "us-east-1: slow"), (5, "done"),
    ]  # fmt: skip
    assert [e.seq for e in (first, *batch, last)] == [1, 2, 3, 4, 5]
    assert (rows[1].region_id, rows[1].duration_ms, rows[3].level) == (eu.pk, 210, EventLevel.WARNING)
    assert rows[4].created_at == last.created_at and rows[4].duration_ms == 5
    deployment.refresh_from_db()
    assert deployment.last_seq == 5


def test_a_line_for_a_deployment_that_does_not_exist_is_refused(deployment):
    with pytest.raises(Deployment.DoesNotExist):
        log_event(deployment_id=deployment.pk + 1000, message="lost")
    with pytest.raises(Deployment.DoesNotExist):
        log_events(deployment_id=deployment.pk + 1000, lines=[EventLine("lost")])
    assert not DeploymentEvent.objects.exists()
