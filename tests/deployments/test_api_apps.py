import json

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from controlplane.choices import Role
from controlplane.models import AuditEntry
from deployments.choices import DeploymentStatus
from deployments.models import App, Deployment, Stage
from regions.choices import HealthStatus
from regions.models import AppRegion, StagePlacement
from tests.factories import (
    AppFactory,
    AppRegionFactory,
    MembershipFactory,
    RegionFactory,
    StageFactory,
    TeamFactory,
    UserFactory,
)

APPS = "/api/v1/apps/"


@pytest.fixture
def regions(db):
    return {
        code: RegionFactory(code=code, name=code) for code in ("us-east-1", "eu-west-1", "ap-southeast-2")
    }


@pytest.fixture
def app(team, regions):
    app = AppFactory(team=team, slug="shop")
    for code in ("us-east-1", "eu-west-1"):
        AppRegionFactory(app=app, region=regions[code])
    return app


@pytest.fixture
def foreign_app(other_team, regions):
    app = AppFactory(team=other_team, slug="secret-shop")
    AppRegionFactory(app=app, region=regions["us-east-1"])
    StageFactory(app=app, name="production")
    return app


def new_app(**overrides):
    body = {
        "slug": "api",
        "name": "API",
        "repo_url": "https://github.com/acme/api",
        "runtime": "python3.12",
        "handler": "app.handler",
        "memory_mb": 512,
        "timeout_s": 20,
        "health_path": "/healthz",
        "health_expected_status": 200,
        "health_expected_text": "ok",
        "build_command": "make build",
        "build_output_dir": "dist",
        "regions": ["us-east-1", "eu-west-1"],
    }
    body.update(overrides)
    return body


# --- Create -----------------------------------------------------------------------------------


def test_admin_creates_app_placed_in_its_regions_and_sees_the_webhook_secret(api_for, team, regions):
    api = api_for(team, role=Role.ADMIN)

    answer = api.post(APPS, new_app(), format="json")

    assert answer.status_code == 201, answer.json()
    body = answer.json()
    app = App.objects.get(team=team, slug="api")
    assert body["slug"] == "api" and body["team"] == "acme"
    assert body["memory_mb"] == 512 and body["health_expected_text"] == "ok"
    assert body["webhook_secret"] == app.webhook_secret and len(app.webhook_secret) >= 32
    assert body["webhook_secret_masked"] is False
    assert sorted(r["region"] for r in body["regions"]) == ["eu-west-1", "us-east-1"]
    assert sorted(AppRegion.objects.filter(app=app).values_list("region__code", flat=True)) == [
        "eu-west-1",
        "us-east-1",
    ]
    assert body["url"].endswith("/api/v1/apps/api/")
    entry = AuditEntry.objects.get(action="app.create")
    assert entry.team == team and entry.app == app and entry.actor.startswith("token:")
    assert app.webhook_secret not in str(entry.changes)


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEPLOYER])
def test_only_admins_create_apps(api_for, team, regions, role):
    answer = api_for(team, role=role).post(APPS, new_app(), format="json")

    assert answer.status_code == 403
    assert answer.json()["code"] == "permission_denied"
    assert not App.objects.exists()


@pytest.mark.parametrize(
    ("overrides", "field", "needle"),
    [
        ({"runtime": "python2.7"}, "runtime", "python3.12"),
        ({"runtime": "nodejs12.x"}, "runtime", "not a supported Lambda runtime"),
        ({"memory_mb": 64}, "memory_mb", "128"),
        ({"memory_mb": 20000}, "memory_mb", "10240"),
        ({"timeout_s": 0}, "timeout_s", "1"),
        ({"timeout_s": 901}, "timeout_s", "900"),
        ({"regions": ["moon-base-1"]}, "regions", "not an AWS region code"),
        ({"regions": ["xx-north-9"]}, "regions", "not a known AWS region"),
        ({"regions": []}, "regions", ""),
        ({"slug": "Not A Slug"}, "slug", "lowercase"),
        ({"health_expected_status": 99}, "health_expected_status", "100"),
    ],
)
def test_app_create_refuses_bad_values_naming_the_field(api_for, team, regions, overrides, field, needle):
    answer = api_for(team, role=Role.ADMIN).post(APPS, new_app(**overrides), format="json")

    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] and field in body["fields"]
    assert needle in str(body["fields"][field])
    assert not App.objects.exists()


def test_app_create_refuses_a_region_not_set_up_here(api_for, team, regions):
    answer = api_for(team, role=Role.ADMIN).post(APPS, new_app(regions=["us-west-2"]), format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_region"
    assert "us-west-2" in answer.json()["detail"]


def test_app_create_refuses_a_disabled_region(api_for, team, regions):
    regions["eu-west-1"].enabled = False
    regions["eu-west-1"].save()

    answer = api_for(team, role=Role.ADMIN).post(APPS, new_app(), format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_region"
    assert "eu-west-1" in answer.json()["detail"]


def test_app_create_refuses_a_slug_the_team_already_uses(api_for, team, app):
    answer = api_for(team, role=Role.ADMIN).post(APPS, new_app(slug="shop"), format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "app_exists"


def test_app_create_refuses_unknown_fields(api_for, team, regions):
    answer = api_for(team, role=Role.ADMIN).post(APPS, new_app(memory=512), format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "unknown_field"
    assert "memory" in answer.json()["fields"]


def test_malformed_json_is_a_400_with_a_code(api_for, team, regions):
    answer = api_for(team, role=Role.ADMIN).post(APPS, '{"slug": "x",', content_type="application/json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "malformed_request"


def test_a_json_list_body_is_a_400_not_a_500(api_for, team, regions):
    answer = api_for(team, role=Role.ADMIN).post(APPS, [1, 2], format="json")

    assert answer.status_code == 400
    assert answer.json()["code"]


def _session_client(user) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


def test_a_user_administering_several_teams_must_name_the_team(db, regions):
    user = UserFactory(username="alice")
    acme, globex = TeamFactory(slug="acme"), TeamFactory(slug="globex")
    MembershipFactory(team=acme, user=user, role=Role.ADMIN)
    MembershipFactory(team=globex, user=user, role=Role.ADMIN)
    client = _session_client(user)

    without = client.post(APPS, new_app(), format="json")
    with_team = client.post(APPS, new_app(team="globex"), format="json")

    assert without.status_code == 400 and without.json()["code"] == "team_required"
    assert with_team.status_code == 201
    assert App.objects.get(slug="api").team == globex
    assert AuditEntry.objects.get(action="app.create").actor == "user:alice"


def test_a_user_can_not_create_an_app_in_a_team_they_are_not_in(db, regions):
    user = UserFactory(username="bob")
    MembershipFactory(team=TeamFactory(slug="acme"), user=user, role=Role.ADMIN)
    TeamFactory(slug="globex")

    answer = _session_client(user).post(APPS, new_app(team="globex"), format="json")

    assert answer.status_code == 400 and answer.json()["code"] == "team_required"
    assert not App.objects.exists()


# --- Read -------------------------------------------------------------------------------------


def test_app_list_shows_only_the_callers_team(api_for, team, app, foreign_app):
    answer = api_for(team, role=Role.VIEWER).get(APPS)

    assert answer.status_code == 200
    assert [a["slug"] for a in answer.json()["results"]] == ["shop"]
    assert answer.json()["next"] is None


def test_app_list_never_shows_webhook_secrets(api_for, team, app):
    body = api_for(team, role=Role.ADMIN).get(APPS).json()

    assert body["results"][0]["webhook_secret"] is None
    assert body["results"][0]["webhook_secret_masked"] is True


def test_app_list_is_paginated_with_a_cursor(api_for, team, regions):
    for n in range(5):
        AppFactory(team=team, slug=f"app{n}")
    api = api_for(team, role=Role.VIEWER)

    first = api.get(APPS, {"limit": 2}).json()
    second = api.get(first["next"]).json()

    assert [a["slug"] for a in first["results"]] == ["app0", "app1"]
    assert [a["slug"] for a in second["results"]] == ["app2", "app3"]


def test_app_scoped_token_sees_only_its_app(api_for, team, app):
    AppFactory(team=team, slug="billing")
    api = api_for(team, role=Role.ADMIN, app=app)

    listed = api.get(APPS).json()["results"]
    other = api.get(f"{APPS}billing/")

    assert [a["slug"] for a in listed] == ["shop"]
    assert other.status_code == 404


def test_app_detail_shows_stages_and_per_region_versions_and_health(api_for, team, app):
    prod = StageFactory(app=app, name="production")
    StageFactory(app=app, name="staging", branch="develop")
    use1 = AppRegion.objects.get(app=app, region__code="us-east-1")
    use1.rest_api_id = "abc123"
    use1.save()
    StagePlacement.objects.create(
        placement=use1,
        stage=prod,
        version="7",
        endpoint_url="https://abc123.execute-api.us-east-1.amazonaws.com/production",
        health_status=HealthStatus.UP,
    )

    body = api_for(team, role=Role.VIEWER).get(f"{APPS}shop/").json()

    assert [s["name"] for s in body["stages"]] == ["production", "staging"]
    by_region = {r["region"]: r for r in body["regions"]}
    assert by_region["us-east-1"]["versions"] == {"production": "7"}
    assert by_region["us-east-1"]["health"] == "up"
    assert by_region["us-east-1"]["endpoint"] == "https://abc123.execute-api.us-east-1.amazonaws.com"
    assert by_region["eu-west-1"] == {
        "region": "eu-west-1",
        "endpoint": None,
        "health": "unknown",
        "versions": {},
        "stages": {},
    }


def test_webhook_secret_is_shown_in_the_detail_to_admins_only(api_for, team, app):
    admin = api_for(team, role=Role.ADMIN).get(f"{APPS}shop/").json()
    deployer = api_for(team, role=Role.DEPLOYER).get(f"{APPS}shop/").json()

    assert admin["webhook_secret"] == app.webhook_secret and admin["webhook_secret_masked"] is False
    assert deployer["webhook_secret"] is None and deployer["webhook_secret_masked"] is True


def test_an_app_slug_used_by_two_of_my_teams_needs_the_team(db, regions):
    user = UserFactory(username="carol")
    acme, globex = TeamFactory(slug="acme"), TeamFactory(slug="globex")
    MembershipFactory(team=acme, user=user, role=Role.VIEWER)
    MembershipFactory(team=globex, user=user, role=Role.VIEWER)
    AppFactory(team=acme, slug="web", name="Acme web")
    AppFactory(team=globex, slug="web", name="Globex web")
    client = _session_client(user)

    ambiguous = client.get(f"{APPS}web/")
    chosen = client.get(f"{APPS}web/", {"team": "globex"})

    assert ambiguous.status_code == 400 and ambiguous.json()["code"] == "ambiguous_app"
    assert chosen.status_code == 200 and chosen.json()["name"] == "Globex web"


# --- Update -----------------------------------------------------------------------------------


def test_deployer_changes_app_config_and_it_is_audited(api_for, team, app):
    answer = api_for(team, role=Role.DEPLOYER).patch(
        f"{APPS}shop/", {"memory_mb": 1024, "health_path": "/up"}, format="json"
    )

    assert answer.status_code == 200, answer.json()
    app.refresh_from_db()
    assert (app.memory_mb, app.health_path) == (1024, "/up")
    entry = AuditEntry.objects.get(action="app.update")
    assert entry.changes["memory_mb"] == [256, 1024]


def test_viewer_cannot_change_an_app(api_for, team, app):
    answer = api_for(team, role=Role.VIEWER).patch(f"{APPS}shop/", {"memory_mb": 1024}, format="json")

    assert answer.status_code == 403
    app.refresh_from_db()
    assert app.memory_mb == 256


def test_deployer_cannot_change_an_apps_regions(api_for, team, app):
    answer = api_for(team, role=Role.DEPLOYER).patch(
        f"{APPS}shop/", {"regions": ["us-east-1"]}, format="json"
    )

    assert answer.status_code == 403
    assert AppRegion.objects.filter(app=app).count() == 2


def test_admin_replaces_an_apps_regions(api_for, team, app):
    answer = api_for(team, role=Role.ADMIN).patch(
        f"{APPS}shop/", {"regions": ["us-east-1", "ap-southeast-2"]}, format="json"
    )

    assert answer.status_code == 200, answer.json()
    assert sorted(r["region"] for r in answer.json()["regions"]) == ["ap-southeast-2", "us-east-1"]
    entry = AuditEntry.objects.get(action="app.update")
    assert entry.changes["regions"] == {"added": ["ap-southeast-2"], "removed": ["eu-west-1"]}


def test_a_region_the_app_is_live_in_cannot_be_removed(api_for, team, app):
    prod = StageFactory(app=app, name="production")
    StagePlacement.objects.create(
        placement=AppRegion.objects.get(app=app, region__code="eu-west-1"), stage=prod, version="3"
    )

    answer = api_for(team, role=Role.ADMIN).patch(f"{APPS}shop/", {"regions": ["us-east-1"]}, format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_region" and "eu-west-1" in answer.json()["detail"]
    assert AppRegion.objects.filter(app=app).count() == 2


@pytest.mark.parametrize("body", [{"slug": "renamed"}, {"webhook_secret": "mine"}, {"colour": "blue"}])
def test_app_patch_refuses_unknown_or_read_only_fields(api_for, team, app, body):
    answer = api_for(team, role=Role.ADMIN).patch(f"{APPS}shop/", body, format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "unknown_field"
    app.refresh_from_db()
    assert app.slug == "shop"


def test_stage_limited_token_cannot_change_what_all_stages_share(api_for, team, app):
    answer = api_for(team, role=Role.DEPLOYER, stages=["staging"]).patch(
        f"{APPS}shop/", {"memory_mb": 2048}, format="json"
    )

    assert answer.status_code == 403


# --- Delete and secret rotation ---------------------------------------------------------------


def test_admin_deletes_an_app_with_its_history(api_for, team, app):
    from deployments.models import Artifact, Release

    stage = StageFactory(app=app, name="production")
    artifact = Artifact.objects.create(app=app, sha256="a" * 64, size=10)
    release = Release.objects.create(app=app, stage=stage, number=1, artifact=artifact, env_snapshot="{}")
    Deployment.objects.create(
        app=app, stage=stage, release=release, status=DeploymentStatus.SUCCEEDED, triggered_by="t"
    )

    answer = api_for(team, role=Role.ADMIN).delete(f"{APPS}shop/")

    assert answer.status_code == 204
    assert not App.objects.filter(pk=app.pk).exists()
    assert not Release.objects.exists() and not Artifact.objects.exists()
    assert AuditEntry.objects.filter(action="app.delete", object_repr="shop").exists()


def test_deployer_cannot_delete_an_app(api_for, team, app):
    assert api_for(team, role=Role.DEPLOYER).delete(f"{APPS}shop/").status_code == 403
    assert App.objects.filter(pk=app.pk).exists()


def test_deleting_a_live_app_needs_force_and_force_takes_it_down_first(api_for, team, app):
    prod = StageFactory(app=app, name="production")
    StagePlacement.objects.create(
        placement=AppRegion.objects.get(app=app, region__code="us-east-1"), stage=prod, version="1"
    )
    api = api_for(team, role=Role.ADMIN)

    refused = api.delete(f"{APPS}shop/")
    forced = api.delete(f"{APPS}shop/?force=true")

    assert refused.status_code == 409 and refused.json()["code"] == "app_is_live"
    assert refused.json()["regions"] == ["us-east-1"]
    # Forced, it is taken down first: a teardown deployment to follow; the app stays until then.
    assert forced.status_code == 202 and forced.json()["kind"] == "teardown"
    assert App.objects.filter(pk=app.pk).exists()


def test_an_app_with_a_running_deployment_cannot_be_deleted(api_for, team, app):
    stage = StageFactory(app=app, name="production")
    Deployment.objects.create(app=app, stage=stage, status=DeploymentStatus.RUNNING, triggered_by="t")

    answer = api_for(team, role=Role.ADMIN).delete(f"{APPS}shop/?force=true")

    assert answer.status_code == 409 and answer.json()["code"] == "deployment_in_progress"


def test_admin_rotates_the_webhook_secret_and_sees_it_once(api_for, team, app):
    old = app.webhook_secret

    answer = api_for(team, role=Role.ADMIN).post(f"{APPS}shop/rotate-webhook-secret/")

    assert answer.status_code == 200
    app.refresh_from_db()
    assert answer.json() == {"webhook_secret": app.webhook_secret}
    assert app.webhook_secret != old
    entry = AuditEntry.objects.get(action="app.rotate_webhook_secret")
    assert app.webhook_secret not in str(entry.changes) and old not in str(entry.changes)


def test_deployer_cannot_rotate_the_webhook_secret(api_for, team, app):
    old = app.webhook_secret

    assert api_for(team, role=Role.DEPLOYER).post(f"{APPS}shop/rotate-webhook-secret/").status_code == 403
    app.refresh_from_db()
    assert app.webhook_secret == old


# --- Another team's app is a 404 for every verb -----------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "", None),
        ("patch", "", {"memory_mb": 1024}),
        ("delete", "", None),
        ("post", "rotate-webhook-secret/", None),
        ("get", "stages/", None),
        ("post", "stages/", {"name": "evil"}),
        ("get", "stages/production/", None),
        ("patch", "stages/production/", {"branch": "evil"}),
        ("delete", "stages/production/", None),
        ("get", "env/", None),
        ("post", "env/", {"key": "EVIL", "value": "1"}),
    ],
)
def test_another_teams_app_is_not_found_for_every_verb(api_for, team, foreign_app, method, path, body):
    api = api_for(team, role=Role.ADMIN)

    answer = getattr(api, method)(f"{APPS}secret-shop/{path}", body, format="json")

    assert answer.status_code == 404
    assert answer.json()["code"] == "not_found"
    foreign_app.refresh_from_db()
    assert foreign_app.memory_mb == 256
    assert list(foreign_app.stages.values_list("name", "branch")) == [("production", "main")]
    assert not foreign_app.env_vars.exists()


# --- Stages -----------------------------------------------------------------------------------


def stages_url(slug="shop", name=""):
    return f"{APPS}{slug}/stages/{name + '/' if name else ''}"


def test_deployer_adds_a_stage_with_a_rollout_policy(api_for, team, app):
    body = {
        "name": "production",
        "branch": "main",
        "domain": "api.example.com",
        "hosted_zone_id": "Z123",
        "rollout": {"waves": [["us-east-1"], ["*"]], "bake_s": 120, "on_failure": "rollback"},
    }

    answer = api_for(team, role=Role.DEPLOYER).post(stages_url(), body, format="json")

    assert answer.status_code == 201, answer.json()
    stage = Stage.objects.get(app=app, name="production")
    assert stage.rollout == body["rollout"] and stage.domain == "api.example.com"
    assert answer.json()["app"] == "shop"
    assert AuditEntry.objects.filter(action="stage.create", app=app).exists()


def test_stage_list_and_detail(api_for, team, app):
    StageFactory(app=app, name="staging", branch="develop")
    StageFactory(app=app, name="production")
    api = api_for(team, role=Role.VIEWER)

    listed = api.get(stages_url()).json()["results"]
    one = api.get(stages_url(name="staging")).json()

    assert [s["name"] for s in listed] == ["production", "staging"]
    assert one["branch"] == "develop" and one["regions"] == []


def test_unknown_stage_is_a_404(api_for, team, app):
    assert api_for(team, role=Role.VIEWER).get(stages_url(name="nope")).status_code == 404


def test_viewer_cannot_add_or_change_stages(api_for, team, app):
    StageFactory(app=app, name="production")
    api = api_for(team, role=Role.VIEWER)

    assert api.post(stages_url(), {"name": "staging"}, format="json").status_code == 403
    assert api.patch(stages_url(name="production"), {"branch": "x"}, format="json").status_code == 403
    assert list(app.stages.values_list("name", "branch")) == [("production", "main")]


@pytest.mark.parametrize(
    "rollout",
    [
        {"waves": [["us-west-2"]]},
        {"waves": [["us-east-1"], ["us-east-1"]]},
        {"waves": [[]]},
        {"waves": "us-east-1"},
        {"waves": [["*"], ["*"]]},
        {"bake_s": -1},
        {"bake_s": 3601},
        {"bake_s": "60"},
        {"on_failure": "panic"},
        {"canary": True},
        {"canary": {}},
        {"canary": {"percent": 0}},
        {"canary": {"percent": 100}},
        {"canary": {"percent": "10"}},
        {"canary": {"percent": 10, "bake_s": 3601}},
        {"canary": {"percent": 10, "weight": 0.1}},
        {"keep_failed": "yes"},
        {"keep_failed": 1},
        ["us-east-1"],
    ],
)
def test_bad_rollout_policies_are_refused(api_for, team, app, rollout):
    answer = api_for(team, role=Role.DEPLOYER).post(
        stages_url(), {"name": "production", "rollout": rollout}, format="json"
    )

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_rollout"
    assert "rollout" in answer.json()["fields"]
    assert not Stage.objects.exists()


def test_a_canary_policy_is_kept(api_for, team, app):
    rollout = {"canary": {"percent": 10, "bake_s": 300}, "on_failure": "rollback"}
    answer = api_for(team, role=Role.DEPLOYER).post(
        stages_url(), {"name": "production", "rollout": rollout}, format="json"
    )

    assert answer.status_code == 201, answer.json()
    assert answer.json()["rollout"] == rollout
    assert Stage.objects.get(app=app, name="production").rollout == rollout


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"domain": "not a host", "hosted_zone_id": "Z1"}, "domain"),
        ({"domain": "-bad.example.com", "hosted_zone_id": "Z1"}, "domain"),
        ({"domain": "api.example.com"}, "hosted_zone_id"),
        ({"name": "bad-name"}, "name"),
    ],
)
def test_bad_stage_domains_and_names_are_refused(api_for, team, app, body, field):
    answer = api_for(team, role=Role.DEPLOYER).post(
        stages_url(), {"name": "production", **body}, format="json"
    )

    assert answer.status_code == 400
    assert field in answer.json()["fields"]


def test_a_stage_name_is_unique_per_app(api_for, team, app):
    StageFactory(app=app, name="production")

    answer = api_for(team, role=Role.DEPLOYER).post(stages_url(), {"name": "production"}, format="json")

    assert answer.status_code == 400 and answer.json()["code"] == "stage_exists"


def test_pinning_a_stage_records_when_and_unpinning_clears_the_reason(api_for, team, app):
    StageFactory(app=app, name="production")
    api = api_for(team, role=Role.DEPLOYER)

    pinned = api.patch(
        stages_url(name="production"), {"pinned": True, "pinned_reason": "incident"}, format="json"
    )
    unpinned = api.patch(stages_url(name="production"), {"pinned": False}, format="json")

    assert pinned.status_code == 200 and pinned.json()["pinned_at"] is not None
    assert unpinned.json()["pinned"] is False and unpinned.json()["pinned_reason"] == ""
    assert unpinned.json()["pinned_at"] is None


def test_a_stage_cannot_be_renamed(api_for, team, app):
    StageFactory(app=app, name="production")

    answer = api_for(team, role=Role.DEPLOYER).patch(
        stages_url(name="production"), {"name": "prod"}, format="json"
    )

    assert answer.status_code == 400
    assert Stage.objects.get(app=app).name == "production"


def test_rollout_change_is_checked_against_the_apps_regions(api_for, team, app):
    StageFactory(app=app, name="production")
    api = api_for(team, role=Role.DEPLOYER)

    good = api.patch(
        stages_url(name="production"), {"rollout": {"waves": [["eu-west-1"], ["*"]]}}, format="json"
    )
    bad = api.patch(
        stages_url(name="production"), {"rollout": {"waves": [["ap-southeast-2"]]}}, format="json"
    )

    assert good.status_code == 200
    assert bad.status_code == 400 and "ap-southeast-2" in bad.json()["detail"]
    assert Stage.objects.get(app=app).rollout == {"waves": [["eu-west-1"], ["*"]]}


def test_only_admins_delete_stages(api_for, team, app):
    StageFactory(app=app, name="production")

    refused = api_for(team, role=Role.DEPLOYER).delete(stages_url(name="production"))
    deleted = api_for(team, role=Role.ADMIN).delete(stages_url(name="production"))

    assert refused.status_code == 403
    assert deleted.status_code == 204
    assert not Stage.objects.filter(app=app).exists()


def test_stage_limited_token_changes_only_its_stages_but_reads_all(api_for, team, app):
    StageFactory(app=app, name="production")
    StageFactory(app=app, name="staging")
    api = api_for(team, role=Role.DEPLOYER, stages=["staging"])

    own = api.patch(stages_url(name="staging"), {"branch": "develop"}, format="json")
    other = api.patch(stages_url(name="production"), {"branch": "evil"}, format="json")
    new = api.post(stages_url(), {"name": "qa"}, format="json")
    read = api.get(stages_url(name="production"))

    assert own.status_code == 200
    assert other.status_code == 403 and new.status_code == 403
    assert read.status_code == 200
    assert Stage.objects.get(app=app, name="production").branch == "main"


def test_app_scoped_token_cannot_reach_another_apps_stages(api_for, team, app):
    billing = AppFactory(team=team, slug="billing")
    StageFactory(app=billing, name="production")
    api = api_for(team, role=Role.ADMIN, app=app)

    assert api.get(stages_url("billing")).status_code == 404
    assert api.patch(stages_url("billing", "production"), {"branch": "x"}, format="json").status_code == 404


def test_session_users_in_no_team_see_no_apps(db, app):
    lonely = get_user_model().objects.create_user("lonely", password="x" * 12)

    answer = _session_client(lonely).get(APPS)

    assert answer.status_code == 200 and answer.json()["results"] == []


# --- Git credential: write-only ---------------------------------------------------------------

SSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACDeployKeyLineTwoThatMustSurviveIntactXYZ0123456789abcdef\n"
    "-----END OPENSSH PRIVATE KEY-----"
)


def _raw_git_credential(app_pk: int) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT git_credential FROM deployments_app WHERE id = %s", [app_pk])
        return cursor.fetchone()[0]


def _assert_secret_absent(secret: str, *texts: str) -> None:
    for text in texts:
        for part in [secret, *secret.splitlines()[1:-1]]:
            assert part not in text


def test_an_ssh_key_given_at_create_is_stored_encrypted_and_never_returned(api_for, team, regions):
    api = api_for(team, role=Role.ADMIN)

    created = api.post(APPS, new_app(git_credential=SSH_KEY + "\r\n"), format="json")

    assert created.status_code == 201, created.json()
    assert "git_credential" not in created.json() and created.json()["git_credential_set"] is True
    app = App.objects.get(slug="api")
    assert app.git_credential == SSH_KEY  # the whole key, newlines kept, ready for ssh
    raw = _raw_git_credential(app.pk)
    assert raw and "PRIVATE KEY" not in raw
    detail = api.get(f"{APPS}api/")
    listing = api.get(APPS)
    assert detail.json()["git_credential_set"] is True and "git_credential" not in detail.json()
    audit_text = json.dumps(list(AuditEntry.objects.values("action", "changes")))
    _assert_secret_absent(SSH_KEY, created.content.decode(), detail.content.decode(),
                          listing.content.decode(), raw, audit_text)  # fmt: skip
    entry = AuditEntry.objects.get(action="app.git_credential")
    assert entry.changes == {"git_credential": "set"} and entry.app == app


def test_an_admin_replaces_and_clears_the_git_credential_and_the_audit_says_only_that(api_for, team, app):
    api = api_for(team, role=Role.ADMIN)

    replaced = api.patch(f"{APPS}shop/", {"git_credential": "deploy:glpat-first-token"}, format="json")
    again = api.patch(f"{APPS}shop/", {"git_credential": "deploy:glpat-second-token"}, format="json")
    cleared = api.patch(f"{APPS}shop/", {"git_credential": ""}, format="json")

    assert [r.status_code for r in (replaced, again, cleared)] == [200, 200, 200]
    assert replaced.json()["git_credential_set"] is True and "git_credential" not in replaced.json()
    assert cleared.json()["git_credential_set"] is False
    assert App.objects.get(pk=app.pk).git_credential == ""
    entries = AuditEntry.objects.filter(action="app.git_credential").order_by("id")
    assert [e.changes for e in entries] == [
        {"git_credential": "set"},
        {"git_credential": "replaced"},
        {"git_credential": "cleared"},
    ]
    assert "glpat" not in json.dumps(list(AuditEntry.objects.values("changes", "object_repr")))


def test_a_token_set_with_other_changes_is_encrypted_at_rest(api_for, team, app):
    api = api_for(team, role=Role.ADMIN)
    answer = api.patch(
        f"{APPS}shop/", {"git_credential": "glpat-secret-token-123", "memory_mb": 1024}, format="json"
    )
    assert answer.status_code == 200 and answer.json()["memory_mb"] == 1024
    assert App.objects.get(pk=app.pk).git_credential == "glpat-secret-token-123"
    assert "glpat-secret-token-123" not in _raw_git_credential(app.pk)


def test_a_deployer_may_not_set_the_git_credential(api_for, team, app):
    answer = api_for(team, role=Role.DEPLOYER).patch(
        f"{APPS}shop/", {"git_credential": "stolen:token", "memory_mb": 1024}, format="json"
    )
    assert answer.status_code == 403
    fresh = App.objects.get(pk=app.pk)
    assert fresh.git_credential == "" and fresh.memory_mb != 1024
    assert not AuditEntry.objects.filter(action__startswith="app.").exists()


def test_half_an_ssh_key_is_400(api_for, team, app):
    half = SSH_KEY.split("\n")[0] + "\n" + SSH_KEY.split("\n")[1]
    answer = api_for(team, role=Role.ADMIN).patch(f"{APPS}shop/", {"git_credential": half}, format="json")
    assert answer.status_code == 400 and "git_credential" in answer.json()["fields"]
    assert App.objects.get(pk=app.pk).git_credential == ""
