"""``states``: every allowed transition of a region and of a deployment moves it and dates it as
the status needs; a transition the tables do not allow is refused and writes nothing."""

from __future__ import annotations

import pytest
from django.db.models import Q

from deployments.choices import DeploymentStatus, RegionStatus
from deployments.engine import states
from deployments.models import Deployment, RegionDeployment
from tests.factories import AppFactory, RegionFactory, StageFactory

pytestmark = pytest.mark.django_db

REGION_PAIRS = [(a, b) for a, targets in states.REGION_TRANSITIONS.items() for b in sorted(targets)]
DEPLOYMENT_PAIRS = [(a, b) for a, targets in states.DEPLOYMENT_TRANSITIONS.items() for b in sorted(targets)]


@pytest.fixture
def deployment(team):
    app = AppFactory(team=team)
    return Deployment.objects.create(app=app, stage=StageFactory(app=app), status=DeploymentStatus.QUEUED)


def _region(deployment, status: str) -> RegionDeployment:
    return RegionDeployment.objects.create(deployment=deployment, region=RegionFactory(), status=status)


@pytest.mark.parametrize(("source", "target"), REGION_PAIRS, ids=[f"{a}->{b}" for a, b in REGION_PAIRS])
def test_each_allowed_region_transition_moves_and_dates_the_region(deployment, source, target):
    rd = _region(deployment, source)
    assert states.move_regions(Q(pk=rd.pk), frm=[source], to=target) == 1
    rd.refresh_from_db()
    assert rd.status == target
    if target == RegionStatus.RUNNING:
        assert rd.started_at is not None and rd.heartbeat_at is not None and rd.attempts == 1
    if target in states.REGION_FINAL:
        assert rd.finished_at is not None
    if target in (RegionStatus.QUEUED, RegionStatus.RUNNING):
        assert rd.finished_at is None


def test_a_region_keeps_its_first_start_and_end_times(deployment):
    rd = _region(deployment, RegionStatus.QUEUED)
    states.move_regions(Q(pk=rd.pk), frm=[RegionStatus.QUEUED], to=RegionStatus.RUNNING)
    rd.refresh_from_db()
    started = rd.started_at
    states.move_regions(Q(pk=rd.pk), frm=[RegionStatus.RUNNING], to=RegionStatus.SUCCEEDED)
    rd.refresh_from_db()
    ended = rd.finished_at
    states.roll_back_succeeded(rd.pk)
    rd.refresh_from_db()
    assert (rd.status, rd.started_at, rd.finished_at) == (RegionStatus.ROLLED_BACK, started, ended)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (RegionStatus.SUCCEEDED, RegionStatus.RUNNING),
        (RegionStatus.CANCELLED, RegionStatus.QUEUED),
        (RegionStatus.FAILED, RegionStatus.SUCCEEDED),
        (RegionStatus.QUEUED, RegionStatus.SUCCEEDED),
        (RegionStatus.SKIPPED, RegionStatus.RUNNING),
    ],
)
def test_a_region_transition_the_table_does_not_allow_is_refused(deployment, source, target):
    rd = _region(deployment, source)
    with pytest.raises(states.TransitionRefused):
        states.move_regions(Q(pk=rd.pk), frm=[source], to=target)
    rd.refresh_from_db()
    assert rd.status == source


def test_a_region_not_in_the_expected_status_is_left_alone(deployment):
    rd = _region(deployment, RegionStatus.QUEUED)
    assert not states.finish_region(rd.pk, RegionStatus.SUCCEEDED)  # it is not running
    rd.refresh_from_db()
    assert (rd.status, rd.finished_at) == (RegionStatus.QUEUED, None)


@pytest.mark.parametrize(
    ("source", "target"), DEPLOYMENT_PAIRS, ids=[f"{a}->{b}" for a, b in DEPLOYMENT_PAIRS]
)
def test_each_allowed_deployment_transition_moves_and_dates_the_deployment(deployment, source, target):
    Deployment.objects.filter(pk=deployment.pk).update(status=source)
    assert states.move_deployment(deployment.pk, frm=[source], to=target) == 1
    deployment.refresh_from_db()
    assert deployment.status == target
    if target == DeploymentStatus.RUNNING:
        assert deployment.started_at is not None and deployment.finished_at is None
    else:
        assert deployment.finished_at is not None


@pytest.mark.parametrize(
    ("source", "target"),
    [
        (DeploymentStatus.SUCCEEDED, DeploymentStatus.RUNNING),
        (DeploymentStatus.CANCELLED, DeploymentStatus.SUCCEEDED),
        (DeploymentStatus.RUNNING, DeploymentStatus.QUEUED),
    ],
)
def test_a_deployment_transition_the_table_does_not_allow_is_refused(deployment, source, target):
    Deployment.objects.filter(pk=deployment.pk).update(status=source)
    with pytest.raises(states.TransitionRefused):
        states.move_deployment(deployment.pk, frm=[source], to=target)
    deployment.refresh_from_db()
    assert deployment.status == source


def test_no_region_or_deployment_status_is_written_outside_states():
    """``states`` is the only module that writes ``status``, ``finished_at`` or ``heartbeat_at``
    of a region deployment or a deployment (creation aside: a row is born queued)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    writes = re.compile(r"\.update\([^)]*\b(status|finished_at|heartbeat_at)\s*=", re.S)
    offenders = []
    for path in [*(root / "deployments").rglob("*.py"), *(root / "workers").rglob("*.py")]:
        if "migrations" in path.parts or path.name == "states.py":
            continue
        text = path.read_text()
        if "RegionDeployment" not in text and "Deployment" not in text:
            continue
        for match in writes.finditer(text):
            # The statement's model: the last ``<Model>.objects`` before the write. Another
            # model's own status (a git host post, a notification) is not the engine's.
            models = re.findall(r"\b(\w+)\.objects\b", text[max(0, match.start() - 600) : match.start()])
            if not models or models[-1] in ("RegionDeployment", "Deployment"):
                offenders.append(str(path.relative_to(root)))
                break
    assert offenders == []
