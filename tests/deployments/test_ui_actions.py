"""The web UI's actions through the Django test client: each one reaches the API's service, is
refused for a role the API refuses, and says what went wrong on the page."""

from __future__ import annotations

import io
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.choices import Role
from controlplane.models import ApiToken, AuditEntry, Channel
from deployments.choices import DeploymentKind, DeploymentStatus, RegionStatus
from deployments.models import App, Deployment, EnvVar, RegionDeployment, Stage
from regions.aws import lambda_
from regions.models import AppRegion, StagePlacement
from tests.deployments.ui_support import SECRET, html, ship
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory


def a_zip(body: str = "def handler(event, context):\n    return {'statusCode': 200}\n") -> SimpleUploadedFile:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", body)
    return SimpleUploadedFile("build.zip", buffer.getvalue(), content_type="application/zip")


# --- Apps and stages ----------------------------------------------------------------------------


def test_an_admin_creates_an_app_in_the_regions_chosen(browser_for, team):
    for code in ("eu-west-1", "us-east-1", "ap-south-1"):
        RegionFactory(code=code)
    admin = browser_for(team, Role.ADMIN)
    assert 'name="regions"' in html(admin.get("/apps/new/"))
    response = admin.post(
        "/apps/new/",
        {
            "team": team.slug, "slug": "billing", "name": "Billing", "runtime": "python3.12",
            "handler": "app.handler", "memory_mb": 256, "timeout_s": 10, "health_path": "/health",
            "regions": ["eu-west-1", "us-east-1"],
        },
        follow=True,
    )  # fmt: skip
    assert response.redirect_chain[-1][0] == "/apps/billing/#stages"
    app = App.objects.get(team=team, slug="billing")
    assert sorted(app.placements.values_list("region__code", flat=True)) == ["eu-west-1", "us-east-1"]
    assert AuditEntry.objects.filter(action="app.create", object_repr__contains="billing").exists()


def test_an_invalid_app_shows_the_services_reason_on_the_form(browser_for, team, app):
    RegionFactory(code="us-east-1")
    response = browser_for(team, Role.ADMIN).post(
        "/apps/new/",
        {
            "team": team.slug, "slug": "shop", "runtime": "python3.12", "handler": "app.handler",
            "memory_mb": 256, "timeout_s": 10, "health_path": "/health", "regions": ["us-east-1"],
        },
    )  # fmt: skip
    assert response.status_code == 200
    assert "Already exists." in html(response)
    assert App.objects.filter(team=team, slug="shop").count() == 1


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEPLOYER])
def test_only_admins_create_apps_as_in_the_api(browser_for, team, role):
    browser = browser_for(team, role)
    assert "New app" not in html(browser.get("/"))
    assert browser.get("/apps/new/").status_code == 403
    response = browser.post("/apps/new/", {"team": team.slug, "slug": "x", "regions": ["us-east-1"]})
    assert response.status_code == 403
    assert not App.objects.filter(slug="x").exists()


def test_a_deployer_adds_a_stage_with_waves_and_a_canary(browser_for, team, app):
    response = browser_for(team, Role.DEPLOYER).post(
        "/apps/shop/stages/new/",
        {
            "name": "staging", "branch": "develop", "waves": "us-east-1\n*", "bake_s": "30",
            "on_failure": "rollback", "canary_percent": "10", "canary_bake_s": "60",
        },
        follow=True,
    )  # fmt: skip
    assert response.redirect_chain[-1][0] == "/apps/shop/#stages"
    stage = Stage.objects.get(app=app, name="staging")
    assert stage.branch == "develop"
    assert stage.rollout == {
        "waves": [["us-east-1"], ["*"]], "bake_s": 30, "on_failure": "rollback",
        "canary": {"percent": 10, "bake_s": 60},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("waves", "mars-north-1", "in wave 1 is not one of the app"),
        ("canary_percent", "150", "whole number from 1 to 99"),
        ("bake_s", "soon", "must be a whole number"),
    ],
)
def test_stage_validation_errors_are_shown_in_the_form(browser_for, team, app, field, value, message):
    response = browser_for(team, Role.DEPLOYER).post("/apps/shop/stages/production/", {field: value})
    assert response.status_code == 200
    assert message in html(response)
    assert Stage.objects.get(app=app, name="production").rollout in ({}, None)


def test_editing_a_stage_keeps_its_fields_in_the_form(browser_for, team, app):
    Stage.objects.filter(app=app).update(branch="main", rollout={"waves": [["eu-west-1"], ["us-east-1"]]})
    page = html(browser_for(team, Role.DEPLOYER).get("/apps/shop/stages/production/"))
    assert 'value="main"' in page and "eu-west-1\nus-east-1" in page


# --- Deploy, promote, cancel, retry, roll back --------------------------------------------------


def test_a_deployer_uploads_a_zip_and_lands_on_the_queued_deployment(browser_for, team, app):
    response = browser_for(team, Role.DEPLOYER).post(
        "/apps/shop/deploy/",
        {"stage": "production", "file": a_zip(), "commit_message": "Hotfix"},
        follow=True,
    )
    deployment = Deployment.objects.get(app=app)
    assert response.redirect_chain[-1][0] == f"/deployments/{deployment.pk}/"
    assert deployment.status == DeploymentStatus.QUEUED and deployment.release.artifact.size > 0
    assert deployment.commit_message == "Hotfix"
    page = html(response)
    assert "Deploying the uploaded zip to production" in page and 'data-active="true"' in page


def test_a_zip_without_the_handler_is_refused_with_the_reason(browser_for, team, app):
    response = browser_for(team, Role.DEPLOYER).post(
        "/apps/shop/deploy/", {"stage": "production", "file": a_zip()}, follow=False
    )
    assert response.status_code == 302
    bad = io.BytesIO()
    with zipfile.ZipFile(bad, "w") as archive:
        archive.writestr("other.py", "x = 1\n")
    response = browser_for(team, Role.DEPLOYER).post(
        "/apps/shop/deploy/",
        {"stage": "production", "file": SimpleUploadedFile("b.zip", bad.getvalue())},
        follow=True,
    )
    assert "Deploy refused" in html(response) and "app.py" in html(response)
    assert Deployment.objects.filter(app=app).count() == 1


def test_redeploying_a_release_ships_that_release(browser_for, team, app):
    first = ship(app, sha="1111111aaaaaaa", ago=10)
    ship(app, sha="2222222bbbbbbb")
    browser_for(team, Role.DEPLOYER).post(
        "/apps/shop/deploy/", {"stage": "production", "release": first.release_id}
    )
    newest = Deployment.objects.filter(app=app).latest("id")
    assert newest.release_id == first.release_id and newest.kind == DeploymentKind.DEPLOY


def test_promote_ships_the_source_stages_release(browser_for, team, app):
    StageFactory(app=app, name="staging")
    shipped = ship(app, stage="staging", sha="3333333ccccccc")
    response = browser_for(team, Role.DEPLOYER).post(
        "/apps/shop/promote/", {"from_stage": "staging", "to_stage": "production"}, follow=True
    )
    promotion = Deployment.objects.get(app=app, kind=DeploymentKind.PROMOTE)
    assert response.redirect_chain[-1][0] == f"/deployments/{promotion.pk}/"
    assert promotion.stage.name == "production"
    assert promotion.release.artifact_id == shipped.release.artifact_id


def test_promote_with_nothing_deployed_says_why(browser_for, team, app):
    StageFactory(app=app, name="staging")
    response = browser_for(team, Role.DEPLOYER).post(
        "/apps/shop/promote/", {"from_stage": "staging", "to_stage": "production"}, follow=True
    )
    assert "Promote of staging to production refused" in html(response)
    assert not Deployment.objects.filter(app=app).exists()


def test_cancel_stops_a_queued_deployment(browser_for, team, app):
    browser = browser_for(team, Role.DEPLOYER)
    browser.post("/apps/shop/deploy/", {"stage": "production", "file": a_zip()})
    deployment = Deployment.objects.get(app=app)
    assert "/cancel/" in html(browser.get(f"/deployments/{deployment.pk}/"))
    response = browser.post(f"/deployments/{deployment.pk}/cancel/", follow=True)
    deployment.refresh_from_db()
    assert deployment.status == DeploymentStatus.CANCELLED
    page = html(response)
    assert "Cancel requested" in page and ">Cancelled<" in page and "/cancel/" not in page


def test_retry_and_roll_back_buttons_on_a_failed_deployment(browser_for, team, app, monkeypatch):
    first = ship(app, sha="1111111aaaaaaa", ago=10)
    failed = ship(app, sha="2222222bbbbbbb")
    Deployment.objects.filter(pk=failed.pk).update(
        status=DeploymentStatus.PARTIALLY_FAILED, previous_release=first.release
    )
    RegionDeployment.objects.filter(deployment=failed, region__code="us-east-1").update(
        status=RegionStatus.FAILED,
        error="Health check failed after 3 tries: status 502",
        error_code="health_check_failed",
    )
    browser = browser_for(team, Role.DEPLOYER)
    page = html(browser.get(f"/deployments/{failed.pk}/"))
    assert "1 region failed:" in page and "Health check failed after 3 tries" in page
    assert "Partly failed" in page and "partially_failed<" not in page
    assert f"/deployments/{failed.pk}/retry/" in page and "Roll back to #1" in page
    browser.post(f"/deployments/{failed.pk}/retry/")
    retry = Deployment.objects.filter(app=app).latest("id")
    assert retry.release_id == failed.release_id and retry.status == DeploymentStatus.QUEUED

    monkeypatch.setattr(
        lambda_, "get_version", lambda region, name, version, role_arn="": {"version": version}
    )
    browser.post("/apps/shop/stages/production/rollback/", {"to": f"release:{first.release_id}"})
    assert Deployment.objects.get(kind=DeploymentKind.ROLLBACK).release_id == first.release_id


def test_roll_back_to_a_chosen_older_release_from_its_row(browser_for, team, app, monkeypatch):
    oldest = ship(app, sha="1111111aaaaaaa", ago=30)
    ship(app, sha="2222222bbbbbbb", ago=20)
    ship(app, sha="3333333ccccccc")
    monkeypatch.setattr(
        lambda_, "get_version", lambda region, name, version, role_arn="": {"version": version}
    )
    browser = browser_for(team, Role.DEPLOYER)
    page = html(browser.get("/apps/shop/"))
    assert page.count("Roll back to this") == 2  # every kept release but the current one
    response = browser.post(
        "/apps/shop/stages/production/rollback/", {"to": f"release:{oldest.release_id}"}, follow=True
    )
    rollback = Deployment.objects.get(kind=DeploymentKind.ROLLBACK)
    assert rollback.release_id == oldest.release_id
    assert "Rolling production back to release #1" in html(response)


# --- Env vars -----------------------------------------------------------------------------------


def test_env_vars_are_added_scoped_edited_and_deleted(browser_for, team, app):
    browser = browser_for(team, Role.DEPLOYER)
    browser.post(
        "/apps/shop/env/new/",
        {
            "key": "API_KEY",
            "value": "s3cr3t-value-xyz",
            "secret": "on",
            "stage": "production",
            "region": "us-east-1",
        },
    )
    env = EnvVar.objects.get(app=app, key="API_KEY")
    assert env.secret and env.stage.name == "production" and env.region.code == "us-east-1"
    assert env.value == "s3cr3t-value-xyz"
    edit_page = html(browser.get(f"/apps/shop/env/{env.pk}/"))
    assert "s3cr3t-value-xyz" not in edit_page and "leave it empty to keep it" in edit_page
    browser.post(
        f"/apps/shop/env/{env.pk}/", {"key": "API_KEY", "value": "", "secret": "on", "stage": "production"}
    )
    env.refresh_from_db()
    assert env.value == "s3cr3t-value-xyz" and env.region is None  # empty keeps the secret; scope changed
    browser.post(f"/apps/shop/env/{env.pk}/", {"key": "API_KEY", "value": "rotated-999", "secret": "on"})
    env.refresh_from_db()
    assert env.value == "rotated-999" and env.stage is None
    for page in (html(browser.get("/apps/shop/env/")), html(browser.get(f"/apps/shop/env/{env.pk}/"))):
        assert "rotated-999" not in page and SECRET not in page
    browser.post(f"/apps/shop/env/{env.pk}/delete/")
    assert not EnvVar.objects.filter(pk=env.pk).exists()


def test_a_bad_env_key_is_refused_with_the_reason(browser_for, team, app):
    response = browser_for(team, Role.DEPLOYER).post(
        "/apps/shop/env/new/", {"key": "1BAD KEY", "value": "x"}, follow=True
    )
    assert "Adding the env var refused" in html(response)
    assert not EnvVar.objects.filter(app=app, key="1BAD KEY").exists()


# --- Viewers ------------------------------------------------------------------------------------


def test_viewers_see_no_action_buttons_and_forged_posts_are_403(browser_for, team, app):
    deployment = ship(app)
    env = EnvVar.objects.filter(app=app).first()
    viewer = browser_for(team, Role.VIEWER)
    page = html(viewer.get("/apps/shop/"))
    for marker in ("Upload and deploy", "Roll back", "Redeploy", "Add a stage", "Settings"):
        assert marker not in page
    env_page = html(viewer.get("/apps/shop/env/"))
    assert "GREETING" in env_page and "Add a variable" not in env_page and ">Edit<" not in env_page
    forged = [
        ("/apps/shop/deploy/", {"stage": "production", "release": deployment.release_id}),
        ("/apps/shop/promote/", {"from_stage": "production", "to_stage": "production"}),
        ("/apps/shop/stages/new/", {"name": "qa"}),
        ("/apps/shop/stages/production/", {"branch": "evil"}),
        ("/apps/shop/env/new/", {"key": "X", "value": "y"}),
        (f"/apps/shop/env/{env.pk}/", {"key": "X", "value": "y"}),
        (f"/apps/shop/env/{env.pk}/delete/", {}),
        (f"/deployments/{deployment.pk}/retry/", {}),
        (f"/deployments/{deployment.pk}/cancel/", {}),
        ("/team/channels/", {"team": team.slug, "kind": "email", "target": "a@example.com"}),
        ("/team/tokens/", {"team": team.slug, "name": "ci", "role": "deployer"}),
    ]
    before = (
        Deployment.objects.count(),
        EnvVar.objects.count(),
        Stage.objects.count(),
        Channel.objects.count(),
    )
    for path, data in forged:
        assert viewer.post(path, data).status_code == 403, path
    after = (
        Deployment.objects.count(),
        EnvVar.objects.count(),
        Stage.objects.count(),
        Channel.objects.count(),
    )
    assert before == after and Stage.objects.get(app=app, name="production").branch != "evil"


def test_another_teams_app_actions_are_404(browser_for, team, app, foreign_app):
    browser = browser_for(team, Role.ADMIN)
    assert browser.post("/apps/intranet/deploy/", {"stage": "production"}).status_code == 404
    assert browser.post("/apps/intranet/env/new/", {"key": "A", "value": "b"}).status_code == 404


# --- Channels, tokens, audit --------------------------------------------------------------------


def test_an_admin_adds_tests_and_disables_a_channel_and_sees_its_deliveries(browser_for, team, app):
    admin = browser_for(team, Role.ADMIN)
    admin.post(
        "/team/channels/",
        {
            "team": team.slug,
            "kind": "email",
            "target": "ops@example.com",
            "name": "Ops",
            "events": ["health_down"],
        },
    )
    channel = Channel.objects.get(team=team)
    assert channel.events == ["health_down"]
    response = admin.post(f"/team/channels/{channel.pk}/test/", follow=True)
    assert "Test message sent to Ops" in html(response)
    page = html(admin.get("/team/channels/"))
    assert "test" in page and ">Sent<" in page
    admin.post(f"/team/channels/{channel.pk}/enabled/", {"enabled": "false"})
    channel.refresh_from_db()
    assert not channel.enabled
    viewer_page = html(browser_for(team, Role.VIEWER).get("/team/channels/"))
    assert "Ops" in viewer_page and "Send a test" not in viewer_page and "Add a channel" not in viewer_page


def test_a_bad_channel_target_is_shown_on_the_form(browser_for, team):
    response = browser_for(team, Role.ADMIN).post(
        "/team/channels/", {"team": team.slug, "kind": "email", "target": "not-an-address"}
    )
    assert response.status_code == 200 and "errorlist" in html(response)
    assert not Channel.objects.exists()


def test_tokens_are_created_shown_once_listed_and_revoked(browser_for, team, app):
    admin = browser_for(team, Role.ADMIN)
    response = admin.post(
        "/team/tokens/",
        {"team": team.slug, "name": "ci", "role": "deployer", "app": "shop", "stages": "production"},
    )
    token = ApiToken.objects.get(name="ci")
    page = html(response)
    raw = page.split('id="new-token">')[1].split("<")[0]
    assert ApiToken.hash(raw) == token.token_hash and token.app == app and token.stages == ["production"]
    assert raw not in html(admin.get("/team/tokens/"))  # shown once
    admin.post(f"/team/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert browser_for(team, Role.DEPLOYER).get("/team/tokens/").status_code == 403


def test_the_audit_log_filters_by_app_and_action(browser_for, team, app):
    admin = browser_for(team, Role.ADMIN)
    admin.post("/apps/shop/env/new/", {"key": "COLOR", "value": "blue"})
    admin.post("/apps/shop/stages/new/", {"name": "qa"})
    page = html(admin.get("/team/audit/?app=shop&action=env"))
    assert "env.create" in page and "stage.create" not in page and "blue" not in page  # keys, never values
    assert "stage.create" in html(admin.get("/team/audit/?action=stage"))


# --- Wrong state --------------------------------------------------------------------------------


def test_a_region_serving_a_release_whose_deploy_failed_is_flagged_in_ui_and_api(
    browser_for, api_for, team, app
):
    ship(app, sha="1111111aaaaaaa", ago=10)
    second = ship(app, sha="2222222bbbbbbb")
    Deployment.objects.filter(pk=second.pk).update(status=DeploymentStatus.FAILED)
    RegionDeployment.objects.filter(deployment=second).update(
        status=RegionStatus.FAILED, error="Health check failed after 3 tries: status 500"
    )
    page = html(browser_for(team, Role.VIEWER).get("/apps/shop/"))
    assert 'data-testid="current-release">#2<' in page  # not "not deployed": v2 serves the traffic
    assert "traffic runs on a release that did not pass its checks" in page
    assert "serves release #2, but its deploy failed here: Health check failed" in page
    assert "2 regions unverified" in html(browser_for(team, Role.VIEWER).get("/"))
    body = api_for(team, Role.VIEWER).get("/api/v1/apps/shop/").json()
    state = {r["region"]: r["stages"]["production"] for r in body["regions"]}
    assert state["us-east-1"]["release"] == 2 and state["us-east-1"]["deploy_status"] == "failed"
    assert "its deploy failed here" in state["us-east-1"]["warning"]


def test_regions_serving_different_releases_are_shown_per_region(browser_for, team, app):
    ship(app, sha="1111111aaaaaaa", ago=10)
    ship(app, sha="2222222bbbbbbb")
    first_release = Deployment.objects.filter(app=app).earliest("id").release
    StagePlacement.objects.filter(placement__region__code="eu-west-1").update(
        release=first_release, version="1"
    )
    page = html(browser_for(team, Role.VIEWER).get("/apps/shop/"))
    assert "regions differ" in page
    assert AppRegion.objects.filter(app=app).count() == 2


def test_the_api_app_list_reads_every_apps_stage_state_at_once(api_for, team, app):
    ship(app)
    client = api_for(team, Role.VIEWER)
    client.get("/api/v1/apps/")  # the token's first use is recorded once
    with CaptureQueriesContext(connection) as one:
        client.get("/api/v1/apps/")
    for n in range(3):
        more = AppFactory(team=team, slug=f"more{n}")
        AppRegionFactory(app=more, region=RegionFactory(code="us-east-1"))
        StageFactory(app=more, name="production")
        ship(more, sha=f"{n}abcdef12345")
    with CaptureQueriesContext(connection) as four:
        body = client.get("/api/v1/apps/").json()
    assert len(four.captured_queries) == len(one.captured_queries)
    assert {r["stages"]["production"]["release"] for a in body["results"] for r in a["regions"]} == {1}
