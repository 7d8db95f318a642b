import pytest
from django.apps import apps
from django.contrib import admin
from django.test import RequestFactory
from django.urls import reverse
from django.utils import timezone

from controlplane.models import ApiToken, AuditEntry, Channel, Notification, NotificationAttempt
from deployments.models import (
    Artifact,
    Deployment,
    DeploymentEvent,
    EnvVar,
    GitHostConnection,
    GitHostDeployment,
    GitHostPost,
    GitHostPostAttempt,
    OidcTrustPolicy,
    RegionDeployment,
    Release,
    WebhookDelivery,
)
from regions.models import Incident, Probe, ProbeRollup, StagePlacement
from tests.factories import (
    ApiTokenFactory,
    AppFactory,
    AppRegionFactory,
    EnvVarFactory,
    MembershipFactory,
    RegionFactory,
    StageFactory,
    TeamFactory,
    UserFactory,
)

ENV_SECRET = "env-secret-7c1e"
GIT_CREDENTIAL = "git-credential-91ab"
CHANNEL_TARGET = "https://hooks.slack.com/services/T000/B000/slack-secret-path"
SIGNING_SECRET = "signing-secret-55d0"
SNAPSHOT_SECRET = "snapshot-secret-e2f4"
GIT_HOST_TOKEN = "git-host-token-3d9a"
PLAIN_VALUE = "plain-value-visible"
APPS = ("controlplane", "regions", "deployments")


@pytest.fixture
def world(db):
    """One row of every model of the project, with a known secret in every encrypted field."""
    team = TeamFactory(slug="acme")
    MembershipFactory(team=team, user=UserFactory(username="member"))
    region = RegionFactory(code="us-east-1")
    app = AppFactory(team=team, slug="shop", git_credential=GIT_CREDENTIAL)
    placement = AppRegionFactory(app=app, region=region)
    stage = StageFactory(app=app, name="production")
    secret_var = EnvVarFactory(app=app, key="API_KEY", value=ENV_SECRET, secret=True)
    plain_var = EnvVarFactory(app=app, key="MODE", value=PLAIN_VALUE)
    token = ApiTokenFactory(team=team, name="ci")
    channel = Channel.objects.create(
        team=team, kind="slack", name="ops", target=CHANNEL_TARGET, signing_secret=SIGNING_SECRET
    )
    artifact = Artifact.objects.create(app=app, sha256="c" * 64, size=100)
    release = Release.objects.create(
        app=app,
        stage=stage,
        number=1,
        artifact=artifact,
        env_snapshot=f'{{"us-east-1": {{"API_KEY": "{SNAPSHOT_SECRET}"}}}}',
        env_secret_keys=["API_KEY"],
    )
    deployment = Deployment.objects.create(app=app, stage=stage, release=release, triggered_by="user:member")
    RegionDeployment.objects.create(deployment=deployment, region=region, version="3")
    DeploymentEvent.objects.create(deployment=deployment, region=region, seq=1, message="Published version 3")
    sp = StagePlacement.objects.create(placement=placement, stage=stage, version="3")
    Probe.objects.create(stage_placement=sp, ok=True, status_code=200, latency_ms=12.5)
    ProbeRollup.objects.create(
        stage_placement=sp,
        bucket=timezone.now(),
        probes=60,
        failed=1,
        latency_sum_ms=700.0,
        latency_max_ms=30.0,
    )
    Incident.objects.create(stage_placement=sp, reason="timeouts", closed_at=timezone.now())
    notification = Notification.objects.create(
        channel=channel, event="test", app=app, payload={"text": "hello"}
    )
    NotificationAttempt.objects.create(notification=notification, number=1, status="sent", response_code=200)
    WebhookDelivery.objects.create(provider="github", delivery_id="d-1", app=app, outcome="ignored")
    OidcTrustPolicy.objects.create(app=app, repository="acme/shop", ref="main")
    GitHostConnection.objects.create(app=app, provider="github", credential=GIT_HOST_TOKEN)
    post = GitHostPost.objects.create(deployment=deployment, key="deployment:queued", state="queued")
    GitHostPostAttempt.objects.create(post=post, number=1, status="sent", response_code=201)
    GitHostDeployment.objects.create(deployment=deployment, provider="github", external_id="7")
    AuditEntry.objects.create(team=team, actor="user:member", action="app.create", object_type="app")
    return {
        "app": app,
        "secret_var": secret_var,
        "plain_var": plain_var,
        "token": token,
        "secrets": [
            ENV_SECRET,
            GIT_CREDENTIAL,
            CHANNEL_TARGET,
            "slack-secret-path",
            SIGNING_SECRET,
            SNAPSHOT_SECRET,
            GIT_HOST_TOKEN,
            app.webhook_secret,
            token.token_hash,
            token.raw,
        ],
    }


@pytest.fixture
def staff(client, db):
    client.root = UserFactory(username="root", is_staff=True, is_superuser=True)
    client.force_login(client.root)
    return client


def project_models():
    return [m for label in APPS for m in apps.get_app_config(label).get_models()]


def _url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_model_of_the_project_has_an_admin():
    missing = [m._meta.label for m in project_models() if not admin.site.is_registered(m)]
    assert missing == []


@pytest.mark.parametrize("model", project_models(), ids=lambda m: m._meta.label)
def test_admin_pages_load_and_never_show_a_secret(staff, world, model):
    obj = model._default_manager.first()
    assert obj is not None, f"the world fixture has no {model._meta.label}"
    pages = [_url(model, "changelist"), _url(model, "change", obj.pk)]
    request = RequestFactory().get("/")
    request.user = staff.root
    if admin.site._registry[model].has_add_permission(request):
        pages.append(_url(model, "add"))

    for page in pages:
        answer = staff.get(page)
        assert answer.status_code == 200, page
        html = answer.content.decode()
        for secret in world["secrets"]:
            assert secret not in html, f"{page} shows {secret!r}"


def test_plain_env_values_are_shown_and_secret_ones_masked(staff, world):
    html = staff.get(_url(EnvVar, "changelist")).content.decode()

    assert PLAIN_VALUE in html and ENV_SECRET not in html
    assert PLAIN_VALUE in staff.get(_url(EnvVar, "change", world["plain_var"].pk)).content.decode()


def _env_form(var, **changes):
    data = {
        "app": var.app_id,
        "stage": var.stage_id or "",
        "region": var.region_id or "",
        "key": var.key,
        "value": "",
        "secret": "on" if var.secret else "",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not False}


def test_a_blank_secret_value_in_the_admin_keeps_the_stored_one(staff, world):
    var = world["secret_var"]

    answer = staff.post(_url(EnvVar, "change", var.pk), _env_form(var, key="API_KEY_RENAMED"))

    assert answer.status_code == 302
    var.refresh_from_db()
    assert (var.key, var.value) == ("API_KEY_RENAMED", ENV_SECRET)


def test_a_new_secret_value_in_the_admin_replaces_the_stored_one(staff, world):
    var = world["secret_var"]

    staff.post(_url(EnvVar, "change", var.pk), _env_form(var, value="rotated-value"))

    var.refresh_from_db()
    assert var.value == "rotated-value"


def test_the_admin_will_not_reveal_a_secret_by_clearing_its_flag(staff, world):
    var = world["secret_var"]

    answer = staff.post(_url(EnvVar, "change", var.pk), _env_form(var, secret=""))

    assert answer.status_code == 200 and "Set a new value" in answer.content.decode()
    var.refresh_from_db()
    assert var.secret and var.value == ENV_SECRET


def _app_form(staff, app, **changes) -> dict:
    """The app's change form as the admin renders it (with its one stage inline), plus ``changes``."""
    form = staff.get(_url(type(app), "change", app.pk)).context["adminform"].form
    data = {name: form[name].value() or "" for name in form.fields}
    data.update(changes)
    data.update(
        {
            "stages-TOTAL_FORMS": "1",
            "stages-INITIAL_FORMS": "1",
            "stages-0-id": str(app.stages.get().pk),
            "stages-0-app": str(app.pk),
            "stages-0-name": "production",
            "stages-0-branch": "main",
        }
    )
    return data


def test_app_secrets_are_write_only_in_the_admin(staff, world):
    app = world["app"]
    webhook_secret = app.webhook_secret
    data = _app_form(staff, app, webhook_secret="", git_credential="", memory_mb=1024)

    answer = staff.post(_url(type(app), "change", app.pk), data)

    assert answer.status_code == 302, answer.context["adminform"].form.errors if answer.context else answer
    app.refresh_from_db()
    assert (app.memory_mb, app.webhook_secret, app.git_credential) == (1024, webhook_secret, GIT_CREDENTIAL)


def test_adding_a_token_in_the_admin_shows_the_raw_value_once_and_stores_its_hash(staff, world):
    answer = staff.post(
        _url(ApiToken, "add"),
        {"team": world["app"].team_id, "name": "from-admin", "role": "viewer", "stages": "[]"},
        follow=True,
    )

    assert answer.status_code == 200
    token = ApiToken.objects.get(name="from-admin")
    shown = [str(m) for m in answer.context["messages"]]
    raw = next(word for m in shown for word in m.split() if word.startswith("cp_"))
    assert ApiToken.hash(raw) == token.token_hash and token.prefix == raw[:8]
    assert raw not in staff.get(_url(ApiToken, "change", token.pk)).content.decode()
    assert raw not in staff.get(_url(ApiToken, "changelist")).content.decode()


def test_the_admin_revokes_tokens(staff, world):
    token = world["token"]

    staff.post(_url(ApiToken, "changelist"), {"action": "revoke", "_selected_action": [token.pk]})

    token.refresh_from_db()
    assert token.revoked_at is not None


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"key": "AWS_REGION"}, "reserved"),
        ({"key": "MODE"}, "already set for this stage and region"),
        ({"value": "x" * 5000}, "4096-byte limit"),
    ],
)
def test_the_admin_applies_the_api_rules_to_env_vars(staff, world, changes, needle):
    var = world["secret_var"]

    answer = staff.post(_url(EnvVar, "change", var.pk), _env_form(var, **changes))

    assert answer.status_code == 200 and needle in answer.content.decode()
    var.refresh_from_db()
    assert (var.key, var.value) == ("API_KEY", ENV_SECRET)


def test_an_env_change_in_the_admin_is_audited_without_its_value(staff, world):
    var = world["secret_var"]

    staff.post(_url(EnvVar, "change", var.pk), _env_form(var, value="rotated-value"))

    entry = AuditEntry.objects.filter(action="env.update").get()
    assert entry.actor == "user:root" and entry.changes["key"] == "API_KEY"
    assert "rotated-value" not in str(entry.changes) and ENV_SECRET not in str(entry.changes)


def test_an_ssh_key_pasted_in_the_admin_keeps_its_newlines_and_is_never_shown(staff, world):
    app = world["app"]
    key = (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjE\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
    )
    data = _app_form(staff, app, webhook_secret="", git_credential=key)

    answer = staff.post(_url(type(app), "change", app.pk), data)

    assert answer.status_code == 302
    app.refresh_from_db()
    assert app.git_credential == key
    page = staff.get(_url(type(app), "change", app.pk)).content.decode()
    assert "b3BlbnNzaC1rZXktdjE" not in page and '<textarea name="git_credential"' in page
