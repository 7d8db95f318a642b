"""Following a deployment's log through the API with a long-poll (``?wait=``): the answer comes
as soon as a line is written or the deployment finishes, not a poll interval later, and without
``wait`` the answer is immediate as it always was. The lines are written by another thread while
the request waits, so the database is used as a worker uses it (committed rows, no test
transaction around them)."""

from __future__ import annotations

import threading
import time

import pytest
from django.utils import timezone

from controlplane.choices import Role
from deployments.choices import DeploymentStatus
from deployments.events import LONG_POLL_MAX_S, log_event
from deployments.models import Deployment
from tests.factories import AppFactory, StageFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def running(team):
    app = AppFactory(team=team, slug="shop")
    stage = StageFactory(app=app, name="production")
    deployment = Deployment.objects.create(
        app=app, stage=stage, status=DeploymentStatus.RUNNING, triggered_by="test"
    )
    log_event(deployment_id=deployment.pk, step="start", message="Started.")
    return deployment


def later(seconds: float, action) -> dict:
    """Run ``action`` on a thread after ``seconds``; the returned dict gets ``at``, when it ran."""
    done: dict = {}

    def run() -> None:
        action()
        done["at"] = time.monotonic()

    timer = threading.Timer(seconds, run)
    timer.start()
    done["timer"] = timer
    return done


def events_url(deployment, **params) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"/api/v1/deployments/{deployment.pk}/events/?{query}"


def test_a_long_poll_answers_with_a_line_as_soon_as_the_worker_writes_it(api_for, team, running):
    api = api_for(team, role=Role.VIEWER)
    written = later(0.5, lambda: log_event(deployment_id=running.pk, step="alias", message="Alias moved."))
    asked = time.monotonic()
    answer = api.get(events_url(running, after=1, wait=20))
    answered = time.monotonic()
    written["timer"].join()
    assert answer.status_code == 200, answer.content
    body = answer.json()
    assert [e["message"] for e in body["results"]] == ["Alias moved."]
    assert body["last_seq"] == 2 and body["finished"] is False
    # It waited for the line (asked before it existed) and answered long before the 20 s were up.
    assert asked < written["at"] < answered < asked + 10


def test_a_long_poll_answers_when_the_deployment_finishes(api_for, team, running):
    api = api_for(team, role=Role.VIEWER)
    finished = later(
        0.5,
        lambda: Deployment.objects.filter(pk=running.pk).update(
            status=DeploymentStatus.SUCCEEDED, finished_at=timezone.now()
        ),
    )
    asked = time.monotonic()
    body = api.get(events_url(running, after=1, wait=20)).json()
    answered = time.monotonic()
    finished["timer"].join()
    assert body["results"] == []
    assert body["finished"] is True and body["status"] == "succeeded"
    assert asked < finished["at"] < answered < asked + 10


def test_a_long_poll_with_nothing_new_answers_empty_when_the_wait_is_over(api_for, team, running):
    api = api_for(team, role=Role.VIEWER)
    asked = time.monotonic()
    body = api.get(events_url(running, after=1, wait=0.4)).json()
    assert time.monotonic() - asked >= 0.4
    assert body == {"results": [], "last_seq": 1, "status": "running", "finished": False}


def test_lines_already_there_or_a_finished_deployment_answer_at_once(api_for, team, running):
    api = api_for(team, role=Role.VIEWER)
    asked = time.monotonic()
    body = api.get(events_url(running, after=0, wait=20)).json()
    assert [e["message"] for e in body["results"]] == ["Started."]
    ended = timezone.now()
    Deployment.objects.filter(pk=running.pk).update(status=DeploymentStatus.FAILED, finished_at=ended)
    body = api.get(events_url(running, after=1, wait=20)).json()
    assert body["finished"] is True and body["status"] == "failed"
    assert time.monotonic() - asked < 10


def test_without_wait_an_empty_answer_is_immediate(api_for, team, running):
    api = api_for(team, role=Role.VIEWER)
    asked = time.monotonic()
    body = api.get(events_url(running, after=1)).json()
    assert body["results"] == [] and body["finished"] is False
    assert time.monotonic() - asked < 5


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "inf"])
def test_a_wait_that_is_not_a_number_of_seconds_is_a_400_naming_it(api_for, team, running, wait):
    answer = api_for(team, role=Role.VIEWER).get(events_url(running, after=1, wait=wait))
    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] and body["detail"]
    assert "wait" in body["fields"]


def test_another_teams_deployment_is_a_404_without_waiting(api_for, other_team, running):
    asked = time.monotonic()
    answer = api_for(other_team, role=Role.ADMIN).get(events_url(running, after=1, wait=20))
    assert answer.status_code == 404
    assert time.monotonic() - asked < 10


def test_the_wait_is_documented_with_its_cap(api_for, team):
    schema = api_for(team).get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()
    parameters = schema["paths"]["/api/v1/deployments/{id}/events/"]["get"]["parameters"]
    wait = next(p for p in parameters if p["name"] == "wait")
    assert wait["in"] == "query" and wait["schema"]["type"] == "number"
    assert f"at most {LONG_POLL_MAX_S:.0f}" in wait["description"]
