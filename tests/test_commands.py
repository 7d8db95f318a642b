from io import StringIO

import pytest
from cryptography.fernet import Fernet
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import override_settings
from rest_framework.test import APIClient

from controlplane.choices import Role
from controlplane.crypto import InvalidToken
from controlplane.models import ApiToken, Channel, Membership, Team
from deployments.models import App, Artifact, EnvVar, Release
from regions.catalog import commercial_regions
from regions.models import Region
from tests.factories import AppFactory, EnvVarFactory, StageFactory, TeamFactory


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


# --- bootstrap --------------------------------------------------------------------------------


def test_bootstrap_seeds_every_commercial_region_once(db):
    first = run("bootstrap")
    Region.objects.filter(code="eu-west-1").update(enabled=False)  # an admin's choice survives
    second = run("bootstrap")

    assert Region.objects.count() == len(commercial_regions()) >= 30
    assert Region.objects.get(code="eu-central-1").name == "Europe (Frankfurt)"
    assert f"{Region.objects.count()} added" in first
    assert "0 added" in second
    assert not Region.objects.get(code="eu-west-1").enabled
    assert Region.objects.filter(enabled=True).count() == Region.objects.count() - 1


def test_bootstrap_creates_a_team_and_its_admin_with_the_password_from_the_environment(db, monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_ADMIN_PASSWORD", "from-the-environment-123")

    output = run("bootstrap", "--team", "acme", "--admin-user", "alice", "--admin-email", "a@example.com")
    again = run("bootstrap", "--team", "acme", "--admin-user", "alice")

    user = get_user_model().objects.get(username="alice")
    assert user.check_password("from-the-environment-123")
    assert not user.is_superuser and not user.is_staff and user.email == "a@example.com"
    assert Membership.objects.get(team__slug="acme", user=user).role == Role.ADMIN
    assert Team.objects.filter(slug="acme").count() == 1 and Membership.objects.count() == 1
    assert "from-the-environment-123" not in output + again
    assert "already present" in again


def test_bootstrap_prints_a_generated_password_once(db, monkeypatch):
    monkeypatch.delenv("CONTROLPLANE_ADMIN_PASSWORD", raising=False)

    first = run("bootstrap", "--team", "acme", "--admin-user", "bob")
    second = run("bootstrap", "--team", "acme", "--admin-user", "bob")

    line = next(line for line in first.splitlines() if "Generated password" in line)
    password = line.rsplit(" ", 1)[1]
    assert get_user_model().objects.get(username="bob").check_password(password)
    assert "Generated password" not in second and password not in second


def test_bootstrap_admin_password_option_wins(db, monkeypatch):
    monkeypatch.setenv("CONTROLPLANE_ADMIN_PASSWORD", "env-password-123")

    output = run(
        "bootstrap", "--team", "acme", "--admin-user", "carol", "--admin-password", "option-password-1"
    )

    assert get_user_model().objects.get(username="carol").check_password("option-password-1")
    assert "option-password-1" not in output and "Generated" not in output


def test_bootstrap_admin_user_needs_a_team(db):
    with pytest.raises(CommandError, match="--team"):
        run("bootstrap", "--admin-user", "dave")


# --- create_api_token -------------------------------------------------------------------------


def test_create_api_token_prints_a_working_token_on_the_last_line(db):
    output = run("create_api_token", "--team", "newteam", "--role", "admin", "--name", "ci")

    raw = output.strip().splitlines()[-1]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    answer = client.get("/api/v1/teams/")
    assert answer.status_code == 200
    assert [(t["slug"], t["role"]) for t in answer.json()["results"]] == [("newteam", "admin")]
    token = ApiToken.objects.get()
    assert (token.name, token.role) == ("ci", "admin")
    assert raw not in (token.token_hash, token.prefix)


def test_create_api_token_scopes_to_an_app_and_stages_with_expiry(db):
    team = TeamFactory(slug="acme")
    app = AppFactory(team=team, slug="shop")
    StageFactory(app=app, name="staging")

    output = run(
        "create_api_token", "--team", "acme", "--app", "shop", "--stages", "staging,qa", "--expires-days", "7"
    )

    raw = output.strip().splitlines()[-1]
    token = ApiToken.objects.get(token_hash=ApiToken.hash(raw))
    assert token.app == app and token.stages == ["qa", "staging"] and token.role == Role.DEPLOYER
    assert token.expires_at is not None
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert client.get("/api/v1/apps/shop/").status_code == 200


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--app", "nope"], "no app"),
        (["--stages", "bad-stage"], "bad-stage"),
        (["--expires-days", "0"], "at least 1"),
    ],
)
def test_create_api_token_refuses_bad_options(db, args, needle):
    TeamFactory(slug="acme")

    with pytest.raises(CommandError, match=needle):
        run("create_api_token", "--team", "acme", *args)
    assert not ApiToken.objects.exists()


# --- Encryption keys and reencrypt_secrets ----------------------------------------------------

OLD_KEY = Fernet.generate_key().decode()
NEW_KEY = Fernet.generate_key().decode()


def _raw(table: str, column: str, pk: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {column} FROM {table} WHERE id = %s", [pk])  # noqa: S608 - fixed names
        return cursor.fetchone()[0]


@pytest.fixture
def secrets_under_old_key(db):
    """One row for every encrypted field, written under OLD_KEY alone."""
    with override_settings(ENCRYPTION_KEYS=[OLD_KEY]):
        team = TeamFactory(slug="acme")
        app = AppFactory(team=team, slug="shop", git_credential="git-cred-plain")
        stage = StageFactory(app=app, name="production")
        env = EnvVarFactory(app=app, key="API_KEY", value="env-plain", secret=True)
        channel = Channel.objects.create(
            team=team, kind="webhook", target="https://hooks.example.com/x", signing_secret="sign-plain"
        )
        artifact = Artifact.objects.create(app=app, sha256="b" * 64, size=1)
        release = Release.objects.create(
            app=app, stage=stage, number=1, artifact=artifact, env_snapshot='{"us-east-1": {"A": "1"}}'
        )
        webhook_secret = App.objects.get(pk=app.pk).webhook_secret
    return {
        "env": env.pk,
        "app": app.pk,
        "channel": channel.pk,
        "release": release.pk,
        "webhook_secret": webhook_secret,
    }


def test_values_under_an_old_key_still_decrypt_after_a_new_key_is_prepended(secrets_under_old_key):
    with override_settings(ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        assert EnvVar.objects.get(pk=secrets_under_old_key["env"]).value == "env-plain"
        assert App.objects.get(pk=secrets_under_old_key["app"]).git_credential == "git-cred-plain"
    with override_settings(ENCRYPTION_KEYS=[NEW_KEY]), pytest.raises(InvalidToken):
        EnvVar.objects.get(pk=secrets_under_old_key["env"]).value  # noqa: B018 - decrypting is the test


def test_reencrypt_secrets_moves_every_value_to_the_new_key(secrets_under_old_key):
    ids = secrets_under_old_key
    env_updated_at = EnvVar.objects.filter(pk=ids["env"]).values_list("updated_at", flat=True).get()

    with override_settings(ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        output = run("reencrypt_secrets", "--batch-size", "1")

    assert "deployments.EnvVar.value: 1 re-encrypted" in output
    assert "deployments.App.webhook_secret: 1 re-encrypted" in output
    assert "controlplane.Channel.target: 1 re-encrypted" in output
    assert "deployments.Release.env_snapshot: 1 re-encrypted" in output
    new_only = Fernet(NEW_KEY.encode())
    assert new_only.decrypt(_raw("deployments_envvar", "value", ids["env"]).encode()) == b"env-plain"
    with override_settings(ENCRYPTION_KEYS=[NEW_KEY]):
        assert EnvVar.objects.get(pk=ids["env"]).value == "env-plain"
        app = App.objects.get(pk=ids["app"])
        assert (app.git_credential, app.webhook_secret) == ("git-cred-plain", ids["webhook_secret"])
        channel = Channel.objects.get(pk=ids["channel"])
        assert (channel.target, channel.signing_secret) == ("https://hooks.example.com/x", "sign-plain")
        assert Release.objects.get(pk=ids["release"]).env_snapshot == '{"us-east-1": {"A": "1"}}'
        assert EnvVar.objects.get(pk=ids["env"]).updated_at == env_updated_at


def test_reencrypt_secrets_reports_values_no_key_decrypts(secrets_under_old_key):
    with (
        override_settings(ENCRYPTION_KEYS=[NEW_KEY]),
        pytest.raises(CommandError, match="could not be decrypted"),
    ):
        run("reencrypt_secrets")
    # Nothing was lost: the old key still reads every value.
    with override_settings(ENCRYPTION_KEYS=[OLD_KEY]):
        assert EnvVar.objects.get(pk=secrets_under_old_key["env"]).value == "env-plain"


def test_reencrypt_secrets_with_many_rows_in_small_batches(db):
    with override_settings(ENCRYPTION_KEYS=[OLD_KEY]):
        app = AppFactory()
        for n in range(7):
            EnvVarFactory(app=app, key=f"K{n}", value=f"v{n}")

    with override_settings(ENCRYPTION_KEYS=[NEW_KEY, OLD_KEY]):
        output = run("reencrypt_secrets", "--batch-size", "3")

    assert "deployments.EnvVar.value: 7 re-encrypted" in output
    with override_settings(ENCRYPTION_KEYS=[NEW_KEY]):
        assert sorted(EnvVar.objects.values_list("value", flat=True)) == [f"v{n}" for n in range(7)]


@pytest.mark.parametrize("slug", ["Bad Slug!", "-lead", "x" * 64, ""])
def test_create_api_token_refuses_a_bad_team_slug_and_creates_nothing(db, slug):
    with pytest.raises(CommandError, match="not a valid team slug"):
        call_command("create_api_token", f"--team={slug}")
    assert not Team.objects.exists()


def test_check_reports_a_malformed_encryption_key(settings):
    from django.core.management.base import SystemCheckError

    settings.ENCRYPTION_KEYS = [settings.ENCRYPTION_KEYS[0], "notakey"]
    with pytest.raises(SystemCheckError, match="key 2 of 2 is not a Fernet key"):
        call_command("check")
