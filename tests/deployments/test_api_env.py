import json

import pytest
from django.db import connection

from controlplane.choices import Role
from controlplane.models import AuditEntry
from deployments.models import EnvVar
from tests.factories import AppFactory, AppRegionFactory, EnvVarFactory, RegionFactory, StageFactory

SECRET = "s3cr3t-do-not-leak-4f9a"


@pytest.fixture
def app(team):
    app = AppFactory(team=team, slug="shop")
    for code in ("us-east-1", "eu-west-1"):
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production")
    StageFactory(app=app, name="staging", branch="develop")
    return app


def env_url(slug="shop", pk=None):
    return f"/api/v1/apps/{slug}/env/{f'{pk}/' if pk else ''}"


def raw_value_column(pk) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT value FROM deployments_envvar WHERE id = %s", [pk])
        return cursor.fetchone()[0]


def test_deployer_sets_an_env_var_for_a_stage_in_a_region(api_for, team, app):
    answer = api_for(team, role=Role.DEPLOYER).post(
        env_url(),
        {"key": "DATABASE_HOST", "value": "db.eu", "stage": "production", "region": "eu-west-1"},
        format="json",
    )

    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body | {"id": 0, "created_at": "", "updated_at": ""} == {
        "id": 0,
        "key": "DATABASE_HOST",
        "value": "db.eu",
        "masked": False,
        "secret": False,
        "stage": "production",
        "region": "eu-west-1",
        "created_at": "",
        "updated_at": "",
    }
    row = EnvVar.objects.get(pk=body["id"])
    assert (row.stage.name, row.region.code, row.value) == ("production", "eu-west-1", "db.eu")


def test_secret_values_never_come_back_and_are_encrypted_in_the_database(api_for, team, app):
    admin = api_for(team, role=Role.ADMIN)

    created = admin.post(env_url(), {"key": "API_KEY", "value": SECRET, "secret": True}, format="json")
    listed = admin.get(env_url())
    one = admin.get(env_url(pk=created.json()["id"]))

    assert created.status_code == 201
    for body in (created.json(), listed.json()["results"][0], one.json()):
        assert body["value"] is None and body["masked"] is True and body["secret"] is True
    for answer in (created, listed, one):
        assert SECRET not in answer.content.decode()
    raw = raw_value_column(created.json()["id"])
    assert raw and SECRET not in raw
    assert EnvVar.objects.get(pk=created.json()["id"]).value == SECRET


def test_non_secret_values_are_also_encrypted_at_rest(api_for, team, app):
    created = api_for(team).post(env_url(), {"key": "MODE", "value": "plain-visible-value"}, format="json")

    assert "plain-visible-value" not in raw_value_column(created.json()["id"])


def test_viewers_read_plain_values_but_never_secret_ones(api_for, team, app):
    EnvVarFactory(app=app, key="MODE", value="live")
    EnvVarFactory(app=app, key="TOKEN", value=SECRET, secret=True)

    answer = api_for(team, role=Role.VIEWER).get(env_url())

    values = {row["key"]: row["value"] for row in answer.json()["results"]}
    assert values == {"MODE": "live", "TOKEN": None}
    assert SECRET not in answer.content.decode()


def test_viewer_cannot_edit_env_vars(api_for, team, app):
    var = EnvVarFactory(app=app, key="MODE", value="live")
    api = api_for(team, role=Role.VIEWER)

    assert api.post(env_url(), {"key": "NEW", "value": "x"}, format="json").status_code == 403
    assert api.patch(env_url(pk=var.pk), {"value": "evil"}, format="json").status_code == 403
    assert api.delete(env_url(pk=var.pk)).status_code == 403
    assert list(EnvVar.objects.values_list("key", flat=True)) == ["MODE"]
    var.refresh_from_db()
    assert var.value == "live"


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("1ABC", "not a valid env var name"),
        ("HAS-DASH", "not a valid env var name"),
        ("", "not a valid env var name"),
        ("AWS_REGION", "reserved"),
        ("AWS_LAMBDA_FUNCTION_NAME", "reserved"),
        ("K" * 129, "128"),
    ],
)
def test_bad_and_reserved_env_keys_are_refused(api_for, team, app, key, needle):
    answer = api_for(team).post(env_url(), {"key": key, "value": "x"}, format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_env_var"
    assert needle in answer.json()["detail"]
    assert not EnvVar.objects.exists()


def test_a_duplicate_env_var_is_a_clear_400(api_for, team, app):
    api = api_for(team)
    api.post(env_url(), {"key": "MODE", "value": "a", "stage": "production"}, format="json")

    again = api.post(env_url(), {"key": "MODE", "value": "b", "stage": "production"}, format="json")
    other_scope = api.post(env_url(), {"key": "MODE", "value": "c"}, format="json")

    assert again.status_code == 400
    assert again.json()["code"] == "env_var_exists"
    assert "MODE" in again.json()["detail"] and "production" in again.json()["detail"]
    assert other_scope.status_code == 201
    assert EnvVar.objects.filter(key="MODE").count() == 2


def test_an_env_over_4kb_is_refused_naming_the_largest_keys(api_for, team, app):
    api = api_for(team)
    assert api.post(env_url(), {"key": "BIG_ONE", "value": "x" * 3000}, format="json").status_code == 201

    answer = api.post(
        env_url(), {"key": "BIG_TWO", "value": "y" * 1500, "region": "eu-west-1"}, format="json"
    )

    assert answer.status_code == 400
    body = answer.json()
    assert body["code"] == "env_too_large"
    assert "BIG_ONE" in body["detail"] and "BIG_TWO" in body["detail"] and "eu-west-1" in body["detail"]
    assert list(EnvVar.objects.values_list("key", flat=True)) == ["BIG_ONE"]


def test_growing_a_value_past_4kb_is_refused(api_for, team, app):
    var = EnvVarFactory(app=app, key="PAYLOAD", value="small")

    answer = api_for(team).patch(env_url(pk=var.pk), {"value": "z" * 5000}, format="json")

    assert answer.status_code == 400 and answer.json()["code"] == "env_too_large"
    var.refresh_from_db()
    assert var.value == "small"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"stage": "nope"}, "stage"),
        ({"region": "ap-southeast-2"}, "region"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_env_var_targets_must_belong_to_the_app(api_for, team, app, body, field):
    RegionFactory(code="ap-southeast-2")

    answer = api_for(team).post(env_url(), {"key": "MODE", "value": "x", **body}, format="json")

    assert answer.status_code == 400
    assert field in answer.json()["fields"]


def test_deployer_changes_and_deletes_an_env_var_and_the_audit_log_holds_no_values(api_for, team, app):
    api = api_for(team)
    created = api.post(env_url(), {"key": "API_KEY", "value": SECRET, "secret": True}, format="json").json()

    changed = api.patch(
        env_url(pk=created["id"]), {"value": SECRET + "-2", "stage": "staging"}, format="json"
    )
    deleted = api.delete(env_url(pk=created["id"]))

    assert changed.status_code == 200, changed.json()
    assert changed.json()["stage"] == "staging" and changed.json()["value"] is None
    assert deleted.status_code == 204
    assert not EnvVar.objects.exists()
    entries = AuditEntry.objects.filter(action__startswith="env.").order_by("id")
    assert [e.action for e in entries] == ["env.create", "env.update", "env.delete"]
    assert all(e.changes["key"] == "API_KEY" and e.app == app for e in entries)
    assert sorted(entries[1].changes["changed"]) == ["stage", "value"]
    for entry in entries:
        assert SECRET not in json.dumps(entry.changes) and SECRET not in entry.object_repr
    with connection.cursor() as cursor:
        cursor.execute("SELECT changes FROM controlplane_auditentry")
        assert all(SECRET not in str(row[0]) for row in cursor.fetchall())


def test_audit_log_of_plain_env_vars_holds_no_values_either(api_for, team, app):
    api = api_for(team)
    created = api.post(env_url(), {"key": "MODE", "value": "visible-but-unlogged"}, format="json").json()
    api.patch(env_url(pk=created["id"]), {"value": "changed-but-unlogged"}, format="json")

    dumped = json.dumps(list(AuditEntry.objects.values_list("changes", flat=True)))
    assert "unlogged" not in dumped and "MODE" in dumped


def test_a_secret_cannot_be_revealed_by_clearing_its_flag(api_for, team, app):
    var = EnvVarFactory(app=app, key="TOKEN", value=SECRET, secret=True)
    api = api_for(team, role=Role.ADMIN)

    flipped = api.patch(env_url(pk=var.pk), {"secret": False}, format="json")
    replaced = api.patch(env_url(pk=var.pk), {"secret": False, "value": "now-public"}, format="json")

    assert flipped.status_code == 400 and "value" in flipped.json()["fields"]
    assert replaced.status_code == 200 and replaced.json()["value"] == "now-public"


def test_env_patch_refuses_unknown_fields(api_for, team, app):
    var = EnvVarFactory(app=app, key="MODE", value="live")

    answer = api_for(team).patch(env_url(pk=var.pk), {"valeu": "typo"}, format="json")

    assert answer.status_code == 400 and answer.json()["code"] == "unknown_field"


def test_env_list_filters_by_stage_and_region(api_for, team, app):
    prod = app.stages.get(name="production")
    EnvVarFactory(app=app, key="AA", value="1")
    EnvVarFactory(app=app, key="BB", value="2", stage=prod)
    api = api_for(team, role=Role.VIEWER)

    app_wide = api.get(env_url(), {"stage": ""}).json()["results"]
    prod_only = api.get(env_url(), {"stage": "production"}).json()["results"]

    assert [r["key"] for r in app_wide] == ["AA"]
    assert [r["key"] for r in prod_only] == ["BB"]


def test_stage_limited_token_cannot_edit_other_stages_env(api_for, team, app):
    staging, prod = app.stages.get(name="staging"), app.stages.get(name="production")
    prod_var = EnvVarFactory(app=app, key="PP", value="prod", stage=prod)
    all_var = EnvVarFactory(app=app, key="ALL", value="all")
    staging_var = EnvVarFactory(app=app, key="SS", value="staging", stage=staging)
    api = api_for(team, role=Role.DEPLOYER, stages=["staging"])

    assert (
        api.post(env_url(), {"key": "XX", "value": "1", "stage": "production"}, format="json").status_code
        == 403
    )
    assert api.post(env_url(), {"key": "XX", "value": "1"}, format="json").status_code == 403
    assert api.patch(env_url(pk=prod_var.pk), {"value": "evil"}, format="json").status_code == 403
    assert api.delete(env_url(pk=prod_var.pk)).status_code == 403
    assert api.patch(env_url(pk=all_var.pk), {"value": "evil"}, format="json").status_code == 403
    # Moving its own var into another stage is a change to that stage too.
    assert api.patch(env_url(pk=staging_var.pk), {"stage": "production"}, format="json").status_code == 403
    assert api.patch(env_url(pk=staging_var.pk), {"value": "ok"}, format="json").status_code == 200
    assert (
        api.post(env_url(), {"key": "XX", "value": "1", "stage": "staging"}, format="json").status_code == 201
    )
    assert api.get(env_url()).status_code == 200
    assert sorted(EnvVar.objects.values_list("key", "value")) == [
        ("ALL", "all"),
        ("PP", "prod"),
        ("SS", "ok"),
        ("XX", "1"),
    ]


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_another_teams_env_var_is_not_found(api_for, team, other_team, method):
    foreign = AppFactory(team=other_team, slug="shop")
    var = EnvVarFactory(app=foreign, key="TOKEN", value=SECRET, secret=True)
    AppFactory(team=team, slug="shop")
    api = api_for(team, role=Role.ADMIN)

    answer = getattr(api, method)(env_url("shop", var.pk), {"value": "evil"}, format="json")

    assert answer.status_code == 404
    var.refresh_from_db()
    assert var.value == SECRET


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_an_env_var_is_reached_only_through_its_own_app(api_for, team, app, method):
    other = AppFactory(team=team, slug="billing")
    var = EnvVarFactory(app=other, key="MODE", value="billing")

    answer = getattr(api_for(team, role=Role.ADMIN), method)(
        env_url("shop", var.pk), {"value": "x"}, format="json"
    )

    assert answer.status_code == 404
    var.refresh_from_db()
    assert var.value == "billing"


def test_app_scoped_token_cannot_see_another_apps_env(api_for, team, app):
    other = AppFactory(team=team, slug="billing")
    var = EnvVarFactory(app=other, key="MODE", value="billing")
    api = api_for(team, role=Role.ADMIN, app=app)

    assert api.get(env_url("billing")).status_code == 404
    assert api.get(env_url("billing", var.pk)).status_code == 404
    assert api.post(env_url("billing"), {"key": "XX", "value": "1"}, format="json").status_code == 404
