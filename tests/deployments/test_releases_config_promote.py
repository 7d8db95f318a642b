"""Config deploys and promotions pick their release from what each region of the stage runs
(database fixtures only: no worker, no AWS)."""

from __future__ import annotations

import itertools
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.choices import Role
from deployments.choices import DeploymentKind, DeploymentStatus, RegionStatus
from deployments.engine.releases import create_release
from deployments.models import Artifact, Deployment, Release
from regions.models import AppRegion, StagePlacement
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory

pytestmark = pytest.mark.django_db

CODES = ("eu-west-1", "us-east-1")
_clock = itertools.count(1)


@pytest.fixture
def app(team):
    app = AppFactory(team=team, slug="shop", runtime="python3.12", handler="app.handler")
    for code in CODES:
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production")
    StageFactory(app=app, name="staging")
    return app


def stage(app, name):
    return app.stages.get(name=name)


def artifact(app, n: int) -> Artifact:
    return Artifact.objects.create(app=app, sha256=f"{n:x}".rjust(64, "a"), size=100 + n)


def ship(app, stage_name, *, release=None, art=None, kind=DeploymentKind.DEPLOY, regions=CODES) -> Release:
    """Record a finished deployment of ``release`` (or a new release of ``art``) to ``regions``, as
    the engine would have: region rows with versions and the stage placements pointing at it."""
    st = stage(app, stage_name)
    if release is None:
        release = create_release(app=app, stage=st, artifact=art, commit={"sha": f"{art.pk:040x}"})
    finished = timezone.now() + timedelta(seconds=next(_clock))
    deployment = Deployment.objects.create(
        app=app, stage=st, release=release, kind=kind, status=DeploymentStatus.SUCCEEDED,
        triggered_by="test", finished_at=finished,
    )  # fmt: skip
    for code in regions:
        placement = AppRegion.objects.get(app=app, region__code=code)
        deployment.regions.create(
            region=placement.region, status=RegionStatus.SUCCEEDED, version=str(release.pk)
        )
        StagePlacement.objects.update_or_create(
            placement=placement, stage=st, defaults={"version": str(release.pk), "release": release}
        )
    return release


def roll_back(app, stage_name, release, regions):
    ship(app, stage_name, release=release, kind=DeploymentKind.ROLLBACK, regions=regions)
    app.stages.filter(name=stage_name).update(pinned=True, pinned_reason="rolled back")


def config_deploy(api, **extra):
    return api.post(
        "/api/v1/apps/shop/deployments/",
        {"stage": "production", "kind": "config", "force": True},
        format="json",
        **extra,
    )


# --- Config deploys ---------------------------------------------------------------------------------


def test_a_config_deploy_after_a_one_region_rollback_ships_the_stages_newest_release_everywhere(
    app, team, api_for
):
    one, two = artifact(app, 1), artifact(app, 2)
    ship(app, "production", art=one)
    second = ship(app, "production", art=two)
    roll_back(app, "production", Release.objects.get(stage__name="production", number=1), ["eu-west-1"])

    answer = config_deploy(api_for(team, role=Role.DEPLOYER))

    assert answer.status_code == 202, answer.json()
    body = answer.json()
    assert body["kind"] == "config" and sorted(r["region"] for r in body["regions"]) == list(CODES)
    assert body["release"]["artifact_sha256"] == two.sha256
    assert body["release"]["source_release"] == {"id": second.pk, "number": 2, "stage": "production"}
    events = api_for(team, role=Role.VIEWER).get(f"/api/v1/deployments/{body['id']}/events/").json()
    assert any(f"artifact of release #2 ({two.sha256[:12]}" in e["message"] for e in events["results"]), (
        events
    )


def test_a_config_deploy_after_every_region_was_rolled_back_keeps_the_rolled_back_release(app, team, api_for):
    one, two = artifact(app, 1), artifact(app, 2)
    first = ship(app, "production", art=one)
    ship(app, "production", art=two)
    roll_back(app, "production", first, list(CODES))

    answer = config_deploy(api_for(team, role=Role.DEPLOYER))

    assert answer.status_code == 202, answer.json()
    assert answer.json()["release"]["artifact_sha256"] == one.sha256
    assert answer.json()["release"]["source_release"]["number"] == 1


def test_a_config_deploy_of_a_stage_never_deployed_is_409_nothing_deployed(app, team, api_for):
    answer = config_deploy(api_for(team, role=Role.DEPLOYER))

    assert answer.status_code == 409
    assert answer.json()["code"] == "nothing_deployed"
    assert "never been deployed" in answer.json()["detail"]
    assert not Deployment.objects.exists() and not Release.objects.exists()


def test_a_repeated_config_deploy_with_one_idempotency_key_answers_the_first_deployment(app, team, api_for):
    ship(app, "production", art=artifact(app, 1))
    api = api_for(team, role=Role.DEPLOYER)

    first = config_deploy(api, HTTP_IDEMPOTENCY_KEY="ci-run-7")
    again = config_deploy(api, HTTP_IDEMPOTENCY_KEY="ci-run-7")

    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert Deployment.objects.filter(kind=DeploymentKind.CONFIG).count() == 1
    assert Release.objects.filter(stage__name="production").count() == 2  # the shipped one and one new

    other = api.post(
        "/api/v1/apps/shop/deployments/",
        {"stage": "production", "artifact": Artifact.objects.get().pk, "force": True},
        format="json",
        HTTP_IDEMPOTENCY_KEY="ci-run-7",
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    assert Deployment.objects.filter(kind=DeploymentKind.DEPLOY).count() == 1  # only the fixture's


def test_a_config_deploy_under_a_key_first_used_for_a_normal_deploy_is_refused(app, team, api_for):
    art = artifact(app, 1)
    ship(app, "production", art=art)
    api = api_for(team, role=Role.DEPLOYER)
    deploy = api.post(
        "/api/v1/apps/shop/deployments/",
        {"stage": "production", "artifact": art.pk},
        format="json",
        HTTP_IDEMPOTENCY_KEY="ci-run-8",
    )
    assert deploy.status_code == 202

    answer = config_deploy(api, HTTP_IDEMPOTENCY_KEY="ci-run-8")

    assert answer.status_code == 422 and answer.json()["code"] == "idempotency_key_reused"
    assert not Deployment.objects.filter(kind=DeploymentKind.CONFIG).exists()


# --- Promote ----------------------------------------------------------------------------------------


def promote(api, **body):
    return api.post(
        "/api/v1/apps/shop/promote/",
        {"from_stage": "staging", "to_stage": "production", **body},
        format="json",
    )


def test_promote_ships_the_release_every_region_of_the_source_stage_runs(app, team, api_for):
    one, two = artifact(app, 1), artifact(app, 2)
    first = ship(app, "staging", art=one)
    ship(app, "staging", art=two)
    roll_back(app, "staging", first, list(CODES))

    answer = promote(api_for(team, role=Role.DEPLOYER))

    assert answer.status_code == 202, answer.json()
    assert answer.json()["kind"] == "promote"
    assert answer.json()["release"]["artifact_sha256"] == one.sha256
    assert answer.json()["release"]["source_release"] == {"id": first.pk, "number": 1, "stage": "staging"}


def test_promote_from_a_stage_whose_regions_disagree_is_409_stage_diverged(app, team, api_for):
    one, two = artifact(app, 1), artifact(app, 2)
    first = ship(app, "staging", art=one)
    ship(app, "staging", art=two)
    roll_back(app, "staging", first, ["eu-west-1"])

    answer = promote(api_for(team, role=Role.DEPLOYER))

    assert answer.status_code == 409
    body = answer.json()
    assert body["code"] == "stage_diverged"
    assert "eu-west-1: #1" in body["detail"] and "us-east-1: #2" in body["detail"]
    assert body["regions"] == {"eu-west-1": 1, "us-east-1": 2}
    assert not Deployment.objects.filter(stage__name="production").exists()


def test_a_forced_promote_from_a_diverged_stage_ships_the_release_it_is_meant_to_run(app, team, api_for):
    one, two = artifact(app, 1), artifact(app, 2)
    first = ship(app, "staging", art=one)
    second = ship(app, "staging", art=two)
    roll_back(app, "staging", first, ["eu-west-1"])

    answer = promote(api_for(team, role=Role.DEPLOYER), force=True)

    assert answer.status_code == 202, answer.json()
    assert answer.json()["release"]["artifact_sha256"] == two.sha256
    assert answer.json()["release"]["source_release"]["id"] == second.pk
