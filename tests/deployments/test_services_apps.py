import threading

import pytest
from django.db import connection

from controlplane.access import SystemPrincipal, TokenPrincipal
from controlplane.choices import Role
from controlplane.errors import Forbidden
from controlplane.models import AuditEntry
from deployments.choices import DeploymentStatus
from deployments.env import EnvTooLarge, InvalidEnvVar
from deployments.models import App, Artifact, Deployment, EnvVar, Release, Stage
from deployments.rollout import InvalidRollout, validate_rollout
from deployments.services.apps import (
    DuplicateEnvVar,
    create_app,
    create_stage,
    delete_env_var,
    delete_stage,
    set_env_var,
    update_app,
    update_env_var,
)
from tests.factories import ApiTokenFactory, AppFactory, AppRegionFactory, RegionFactory, StageFactory


@pytest.fixture
def app(team):
    app = AppFactory(team=team, slug="shop")
    for code in ("us-east-1", "eu-west-1"):
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    return app


def token_principal(team, **kwargs):
    return TokenPrincipal(token=ApiTokenFactory(team=team, **kwargs))


@pytest.mark.parametrize(
    "rollout",
    [
        {},
        {"waves": [["us-east-1"], ["*"]], "bake_s": 0, "on_failure": "leave"},
        {"waves": [["eu-west-1", "us-east-1"]], "bake_s": 3600, "on_failure": "rollback"},
        {"on_failure": "rollback"},
        {"waves": [["*"]]},
        {"keep_failed": True},
        {"on_failure": "rollback", "keep_failed": False},
    ],
)
def test_valid_rollout_policies_pass_unchanged(rollout):
    assert validate_rollout(rollout, region_codes=["us-east-1", "eu-west-1"]) == rollout


def test_a_rollout_naming_a_region_outside_the_app_says_which(db):
    with pytest.raises(InvalidRollout) as err:
        validate_rollout({"waves": [["us-east-1"], ["sa-east-1"]]}, region_codes=["us-east-1"])
    assert "sa-east-1" in err.value.detail and "wave 2" in err.value.detail


@pytest.mark.parametrize("value", ["yes", 1, None, {"on": True}])
def test_keep_failed_must_be_true_or_false(db, value):
    with pytest.raises(InvalidRollout) as err:
        validate_rollout({"keep_failed": value}, region_codes=["us-east-1"])
    assert err.value.detail == "'keep_failed' must be true or false."


def test_create_app_places_it_and_audits_without_the_webhook_secret(team):
    RegionFactory(code="us-east-1")
    admin = token_principal(team, role=Role.ADMIN)

    app = create_app(
        principal=admin, team=team, data={"slug": "api", "runtime": "python3.13", "regions": ["us-east-1"]}
    )

    assert list(app.placements.values_list("region__code", flat=True)) == ["us-east-1"]
    entry = AuditEntry.objects.get(action="app.create")
    assert entry.app == app and entry.token == admin.token
    assert app.webhook_secret not in str(entry.changes)


def test_a_system_principal_may_not_create_apps(team):
    RegionFactory(code="us-east-1")

    with pytest.raises(Forbidden):
        create_app(
            principal=SystemPrincipal(team_id=team.pk),
            team=team,
            data={"slug": "api", "runtime": "python3.13", "regions": ["us-east-1"]},
        )
    assert not App.objects.exists()


def test_set_env_var_without_a_principal_is_the_installation_acting(app):
    var = set_env_var(principal=None, app=app, key="MODE", value="live")

    assert var.pk and AuditEntry.objects.get(action="env.create").actor == "system"


def test_set_env_var_refuses_a_stage_of_another_app(app, team):
    other_stage = StageFactory(app=AppFactory(team=team), name="production")

    with pytest.raises(InvalidEnvVar):
        set_env_var(principal=None, app=app, key="MODE", value="x", stage=other_stage)


def test_the_4kb_check_uses_the_most_specific_value(app):
    prod = StageFactory(app=app, name="production")
    set_env_var(principal=None, app=app, key="BLOB", value="x" * 3500)

    # Overriding BLOB for production with a small value does not add to production's size.
    set_env_var(principal=None, app=app, key="BLOB", value="small", stage=prod)
    set_env_var(principal=None, app=app, key="OTHER", value="y" * 400, stage=prod)

    # But the app-wide value still counts in every other stage.
    StageFactory(app=app, name="staging")
    with pytest.raises(EnvTooLarge) as err:
        set_env_var(principal=None, app=app, key="MORE", value="z" * 600)
    assert "staging" in err.value.detail and "BLOB" in err.value.detail


def test_update_env_var_records_changed_fields_and_never_values(app):
    var = set_env_var(principal=None, app=app, key="TOKEN", value="first-secret", secret=True)

    update_env_var(principal=None, env_var=var, value="second-secret")
    update_env_var(principal=None, env_var=var, key="TOKEN")  # no change: no entry

    entries = list(AuditEntry.objects.filter(action="env.update"))
    assert len(entries) == 1 and entries[0].changes["changed"] == ["value"]
    assert "first-secret" not in str(entries[0].changes) and "second-secret" not in str(entries[0].changes)
    assert EnvVar.objects.get(pk=var.pk).value == "second-secret"


def test_moving_an_env_var_onto_an_existing_key_is_a_duplicate(app):
    prod = StageFactory(app=app, name="production")
    set_env_var(principal=None, app=app, key="MODE", value="a", stage=prod)
    other = set_env_var(principal=None, app=app, key="MODE", value="b")

    with pytest.raises(DuplicateEnvVar):
        update_env_var(principal=None, env_var=other, stage=prod)
    assert EnvVar.objects.get(pk=other.pk).stage is None


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_writes_of_one_key_leave_one_row_and_no_500(team):
    app = AppFactory(team=team)
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def write(value: str) -> None:
        barrier.wait()
        try:
            set_env_var(principal=None, app=app, key="RACE", value=value)
            outcomes.append("created")
        except DuplicateEnvVar:
            outcomes.append("duplicate")
        finally:
            connection.close()

    threads = [threading.Thread(target=write, args=(v,)) for v in ("1", "2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["created", "duplicate"]
    assert EnvVar.objects.filter(app=app, key="RACE").count() == 1


def test_stage_limited_token_may_not_delete_app_wide_env_vars(app, team):
    var = set_env_var(principal=None, app=app, key="MODE", value="a")
    limited = token_principal(team, role=Role.DEPLOYER, stages=["staging"])

    with pytest.raises(Forbidden):
        delete_env_var(principal=limited, env_var=var)
    assert EnvVar.objects.filter(pk=var.pk).exists()


def test_delete_stage_removes_its_releases_and_deployments(app):
    stage = create_stage(principal=None, app=app, name="staging", data={"branch": "develop"})
    artifact = Artifact.objects.create(app=app, sha256="d" * 64, size=1)
    release = Release.objects.create(app=app, stage=stage, number=1, artifact=artifact, env_snapshot="{}")
    Deployment.objects.create(
        app=app, stage=stage, release=release, status=DeploymentStatus.SUCCEEDED, triggered_by="t"
    )

    delete_stage(principal=None, stage=stage)

    assert not Stage.objects.filter(pk=stage.pk).exists()
    assert not Release.objects.exists() and not Deployment.objects.exists()
    assert Artifact.objects.filter(pk=artifact.pk).exists()  # artifacts belong to the app
    assert AuditEntry.objects.filter(action="stage.delete").exists()


@pytest.mark.parametrize(
    ("url", "refused"),
    [
        ("https://ada:ghp_token123@github.com/acme/shop.git", True),
        ("https://ghp_token123@github.com/acme/shop.git", True),
        ("ssh://git:pw@git.example.com/acme/shop.git", True),
        ("https://github.com/acme/shop.git", False),
        ("git@github.com:acme/shop.git", False),
        ("ssh://git@git.example.com/acme/shop.git", False),
    ],
)
def test_a_repo_url_carrying_a_credential_is_refused_and_never_stored(team, url, refused):
    data = {"slug": "shop", "runtime": "python3.12", "handler": "app.handler", "repo_url": url}
    if refused:
        with pytest.raises(Exception, match="git_credential") as caught:
            create_app(principal=None, team=team, data=data)
        assert caught.value.code == "invalid_app"
        assert not App.objects.exists()
        assert "ghp_token123" not in str(list(AuditEntry.objects.values_list("changes", flat=True)))
    else:
        assert create_app(principal=None, team=team, data=data).repo_url == url


def test_only_an_admin_repoints_repo_url_while_a_git_credential_is_set(team, app):
    app.repo_url = "https://github.com/acme/shop.git"
    app.git_credential = "ghp_private_token"
    app.save()
    deployer = token_principal(team, role=Role.DEPLOYER)

    with pytest.raises(Forbidden):
        update_app(principal=deployer, app=app, data={"repo_url": "https://evil.example.com/x.git"})
    app.refresh_from_db()
    assert app.repo_url == "https://github.com/acme/shop.git"

    update_app(principal=deployer, app=app, data={"handler": "main.handler"})  # other fields: deployers may
    admin = token_principal(team, role=Role.ADMIN)
    update_app(principal=admin, app=app, data={"repo_url": "https://gitlab.com/acme/shop.git"})
    app.refresh_from_db()
    assert app.repo_url == "https://gitlab.com/acme/shop.git"
