"""Rollback targets, planning against AWS and the audit trail of rollback, promote and unpin
(database fixtures; AWS is stubbed at ``regions.aws.lambda_``)."""

from __future__ import annotations

import pytest

from controlplane.choices import Role
from controlplane.models import AuditEntry
from deployments.choices import DeploymentKind
from deployments.models import Deployment, Release
from regions.aws.lambda_ import VersionInfo
from regions.aws.session import AwsError
from tests.deployments.test_releases_config_promote import CODES, app, artifact, roll_back, ship, stage

__all__ = ["app"]  # the fixture, shared with the config/promote tests

pytestmark = pytest.mark.django_db

ROLLBACK = "/api/v1/apps/shop/rollback/"


@pytest.fixture
def lambda_versions(monkeypatch):
    """Every Lambda version exists in every region, unless a test says otherwise."""
    state = {"error": None}

    def get_version(region, name, version, *, role_arn=""):
        if state["error"] is not None:
            raise state["error"]
        return VersionInfo.__new__(VersionInfo)

    monkeypatch.setattr("deployments.services.rollback.lambda_.get_version", get_version)
    return state


@pytest.fixture
def two_releases(app):
    """Production ran release #1, then #2 (everywhere)."""
    first = ship(app, "production", art=artifact(app, 1))
    second = ship(app, "production", art=artifact(app, 2))
    return first, second


def rollbacks():
    return Deployment.objects.filter(kind=DeploymentKind.ROLLBACK)


def _deployment_of(app, release, pk: int) -> Deployment:
    """A live deployment of ``release`` whose id is ``pk`` (so it can collide with a release id)."""
    return Deployment.objects.create(
        pk=pk, app=app, stage=release.stage, release=release, kind=DeploymentKind.DEPLOY,
        status="succeeded", triggered_by="test",
    )  # fmt: skip


# --- Which release `to` names -----------------------------------------------------------------


def test_a_bare_id_that_is_both_a_deployment_and_a_release_of_the_stage_is_400_ambiguous(
    app, team, api_for, two_releases, lambda_versions
):
    first, second = two_releases
    _deployment_of(app, first, pk=second.pk + 1000)
    clash = Release.objects.create(
        pk=second.pk + 1000, app=app, stage=second.stage, number=3, artifact=second.artifact,
        env_snapshot="{}",
    )  # fmt: skip

    answer = api_for(team).post(ROLLBACK, {"stage": "production", "to": str(clash.pk)}, format="json")

    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "ambiguous_target"
    assert f"deployment:{clash.pk}" in body["detail"] and f"release:{clash.pk}" in body["detail"]
    assert not rollbacks().exists()


def test_prefixed_ids_say_which_one_is_meant(app, team, api_for, two_releases, lambda_versions):
    first, second = two_releases
    _deployment_of(app, first, pk=second.pk + 1000)
    Release.objects.create(
        pk=second.pk + 1000, app=app, stage=second.stage, number=3, artifact=first.artifact, env_snapshot="{}"
    )
    api = api_for(team)

    by_deployment = api.post(
        ROLLBACK, {"stage": "production", "to": f"deployment:{second.pk + 1000}"}, format="json"
    )
    by_release = api.post(ROLLBACK, {"stage": "production", "to": f"release:{first.pk}"}, format="json")

    assert by_deployment.status_code == 202, by_deployment.json()
    assert by_deployment.json()["release"]["number"] == 1
    assert by_release.status_code == 202, by_release.json()
    assert by_release.json()["release"]["id"] == first.pk


def test_a_bare_id_of_another_stages_deployment_names_this_stages_release(
    app, team, api_for, two_releases, lambda_versions
):
    _, second = two_releases
    old = Release.objects.create(
        pk=second.pk + 2000,
        app=app,
        stage=second.stage,
        number=3,
        artifact=second.artifact,
        env_snapshot="{}",
    )
    ship(app, "production", release=old)
    ship(app, "production", art=artifact(app, 4))
    staging = ship(app, "staging", art=artifact(app, 9))
    _deployment_of(app, staging, pk=old.pk)  # deployment <old.pk> belongs to staging

    answer = api_for(team).post(ROLLBACK, {"stage": "production", "to": str(old.pk)}, format="json")

    assert answer.status_code == 202, answer.json()
    assert answer.json()["release"]["id"] == old.pk and answer.json()["stage"] == "production"


@pytest.mark.parametrize("to", ["banana", "release:", "build:3", "release:-1", "1.5", "deployment:x"])
def test_a_malformed_target_is_400_invalid_target(app, team, api_for, two_releases, lambda_versions, to):
    answer = api_for(team).post(ROLLBACK, {"stage": "production", "to": to}, format="json")
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_target" and "release:ID" in answer.json()["detail"]
    assert not rollbacks().exists()


@pytest.mark.parametrize("to", ["release:999999999", "deployment:999999999", "9" * 30])
def test_an_unknown_target_is_404(app, team, api_for, two_releases, lambda_versions, to):
    answer = api_for(team).post(ROLLBACK, {"stage": "production", "to": to}, format="json")
    assert answer.status_code == 404 and answer.json()["code"] == "not_found"


# --- Planning against AWS -----------------------------------------------------------------------


def test_a_temporary_aws_error_while_planning_is_503_aws_unavailable(
    app, team, api_for, two_releases, lambda_versions
):
    lambda_versions["error"] = AwsError(
        "ThrottlingException", "Rate exceeded", status=429, region="eu-west-1"
    )

    answer = api_for(team).post(ROLLBACK, {"stage": "production"}, format="json")

    assert answer.status_code == 503
    body = answer.json()
    assert body["code"] == "aws_unavailable" and body["retryable"] is True
    assert "ThrottlingException" in body["detail"] and "Nothing was changed" in body["detail"]
    assert body["regions"] == sorted(CODES)
    assert not rollbacks().exists() and not stage(app, "production").pinned


def test_a_permanent_aws_error_while_planning_is_still_409(app, team, api_for, two_releases, lambda_versions):
    lambda_versions["error"] = AwsError("AccessDeniedException", "no", status=403)
    answer = api_for(team).post(ROLLBACK, {"stage": "production"}, format="json")
    assert answer.status_code == 409 and answer.json()["code"] == "rollback_target_missing"
    assert not rollbacks().exists()


# --- Audit ----------------------------------------------------------------------------------------


def test_a_rollback_is_in_the_audit_log(app, team, api_for, two_releases, lambda_versions):
    answer = api_for(team).post(ROLLBACK, {"stage": "production", "regions": ["eu-west-1"]}, format="json")

    assert answer.status_code == 202, answer.json()
    entry = AuditEntry.objects.get(action="deployment.rollback")
    assert entry.app == app and entry.team == team and entry.actor.startswith("token:")
    assert entry.object_id == str(answer.json()["id"])
    assert entry.changes == {"stage": "production", "to_release": 1, "regions": ["eu-west-1"], "pinned": True}


def test_a_promotion_is_in_the_audit_log(app, team, api_for):
    ship(app, "staging", art=artifact(app, 1))
    answer = api_for(team).post(
        "/api/v1/apps/shop/promote/", {"from_stage": "staging", "to_stage": "production"}, format="json"
    )

    assert answer.status_code == 202, answer.json()
    entry = AuditEntry.objects.get(action="deployment.promote")
    assert entry.app == app and entry.object_id == str(answer.json()["id"])
    assert entry.changes == {
        "from_stage": "staging", "from_release": 1, "to_stage": "production", "to_release": 1, "force": False,
    }  # fmt: skip


def test_unpinning_a_rolled_back_stage_is_in_the_audit_log(app, team, api_for, two_releases):
    first, _ = two_releases
    roll_back(app, "production", first, list(CODES))

    answer = api_for(team, role=Role.DEPLOYER).patch(
        "/api/v1/apps/shop/stages/production/", {"pinned": False}, format="json"
    )

    assert answer.status_code == 200 and answer.json()["pinned"] is False
    entry = AuditEntry.objects.get(action="stage.update")
    assert entry.changes["pinned"] == [True, False] and entry.app == app
