import pytest
from django.test import override_settings

from controlplane.choices import Role
from controlplane.models import AuditEntry, Channel, Notification
from tests.factories import AppFactory

SLACK_PATH = "/services/T000/B000/abcdefghWXYZ"


@pytest.fixture
def admin(team, api_for):
    return api_for(team, role=Role.ADMIN)


def create(client, **body):
    return client.post("/api/v1/channels/", body, format="json")


def test_admin_adds_slack_channel_and_target_is_masked_from_then_on(admin, slack):
    answer = create(admin, kind="slack", name="ops", target=slack.url + SLACK_PATH)
    assert answer.status_code == 201, answer.json()
    body = answer.json()
    assert body["target"] == f"http://127.0.0.1:{slack.port}/…/WXYZ"
    assert body["events"] == [
        "health_down",
        "health_up",
        "deploy_started",
        "deploy_succeeded",
        "deploy_failed",
        "rollback",
    ]
    assert body["apps"] == [] and body["enabled"] is True and body["team"] == "acme"
    assert body["signing_secret"] is None
    listed = admin.get("/api/v1/channels/").json()["results"]
    assert [c["target"] for c in listed] == [body["target"]]
    assert SLACK_PATH not in str(listed)
    entry = AuditEntry.objects.get(action="channel.create")
    assert SLACK_PATH not in str(entry.changes) and entry.changes["target"].endswith("/…/WXYZ")
    assert Channel.objects.get().target == slack.url + SLACK_PATH  # stored whole (encrypted)


def test_webhook_signing_secret_is_shown_once(admin, http_server):
    answer = create(admin, kind="webhook", target=http_server().url + "/hook", events=["deploy_failed"])
    assert answer.status_code == 201
    secret = answer.json()["signing_secret"]
    assert secret.startswith("whsec_") and len(secret) > 30
    detail = admin.get(f"/api/v1/channels/{answer.json()['id']}/").json()
    assert "signing_secret" not in detail and secret not in str(detail)
    assert Channel.objects.get().signing_secret == secret


def test_channel_limited_to_some_apps_by_slug(admin, team, slack):
    AppFactory(team=team, slug="api")
    ok = create(admin, kind="slack", target=slack.url + "/x", apps=["api"], events=["health_down"])
    assert ok.status_code == 201 and ok.json()["apps"] == ["api"]
    unknown = create(admin, kind="slack", target=slack.url + "/x", apps=["nope"])
    assert unknown.status_code == 400
    assert unknown.json()["code"] == "invalid_channel" and "apps" in unknown.json()["fields"]


@pytest.mark.parametrize(
    ("kind", "target", "field_message"),
    [
        ("email", "not-an-address", "valid email"),
        ("sms", "555-0100", "E.164"),
        ("sms", "+0123456789", "E.164"),
        ("webhook", "ftp://example.com/x", "https"),
    ],
)
def test_invalid_targets_are_refused_per_kind(admin, kind, target, field_message):
    answer = create(admin, kind=kind, target=target)
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_channel"
    assert field_message in answer.json()["fields"]["target"][0]


def test_unknown_event_is_refused(admin, slack):
    answer = create(admin, kind="slack", target=slack.url, events=["health_down", "lunch"])
    assert answer.status_code == 400 and answer.json()["code"] == "invalid"


def test_email_and_phone_are_normalised_and_masked(admin):
    email = create(admin, kind="email", target="Oncall@Example.COM").json()
    sms = create(admin, kind="sms", target="+1 (415) 555-0100").json()
    assert email["target"] == "O…@example.com"
    assert sms["target"] == "+1••••••0100"
    assert set(Channel.objects.values_list("target", flat=True)) == {"Oncall@example.com", "+14155550100"}


@override_settings(ALLOW_PRIVATE_URLS=False)
def test_slack_target_must_be_a_slack_webhook_in_production(admin):
    answer = create(admin, kind="slack", target="https://example.com/services/x")
    assert answer.status_code == 400
    assert "hooks.slack.com" in answer.json()["detail"]
    assert create(admin, kind="slack", target="https://hooks.slack.com/services/T/B/X").status_code == 201


@override_settings(ALLOW_PRIVATE_URLS=False)
@pytest.mark.parametrize(
    "url", ["https://127.0.0.1/hook", "https://localhost:8443/hook", "https://10.0.0.8/x"]
)
def test_webhook_to_private_address_is_refused(admin, url):
    answer = create(admin, kind="webhook", target=url)
    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_channel" and "refused" in answer.json()["detail"]


def test_viewer_reads_channels_but_cannot_change_them(team, api_for, admin, slack):
    channel_id = create(admin, kind="slack", target=slack.url + "/x").json()["id"]
    viewer = api_for(team, role=Role.VIEWER)
    assert viewer.get("/api/v1/channels/").status_code == 200
    assert viewer.get(f"/api/v1/channels/{channel_id}/").status_code == 200
    assert viewer.get(f"/api/v1/channels/{channel_id}/notifications/").status_code == 200
    assert create(viewer, kind="slack", target=slack.url).status_code == 403
    assert viewer.patch(f"/api/v1/channels/{channel_id}/", {"name": "x"}, format="json").status_code == 403
    assert viewer.delete(f"/api/v1/channels/{channel_id}/").status_code == 403
    assert viewer.post(f"/api/v1/channels/{channel_id}/test/").status_code == 403
    assert slack.received() == []


def test_deployer_cannot_add_channels(team, api_for, slack):
    assert create(api_for(team, role=Role.DEPLOYER), kind="slack", target=slack.url).status_code == 403


def test_another_teams_channel_is_not_found_for_every_verb(admin, other_team, api_for, slack):
    channel_id = create(admin, kind="slack", target=slack.url + "/x").json()["id"]
    stranger = api_for(other_team, role=Role.ADMIN)
    url = f"/api/v1/channels/{channel_id}/"
    assert stranger.get(url).status_code == 404
    assert stranger.patch(url, {"name": "mine"}, format="json").status_code == 404
    assert stranger.delete(url).status_code == 404
    assert stranger.post(url + "test/").status_code == 404
    assert stranger.get(url + "notifications/").status_code == 404
    assert stranger.get("/api/v1/channels/").json()["results"] == []
    assert Channel.objects.get().name == "" and slack.received() == []


def test_admin_changes_and_deletes_a_channel(admin, slack, http_server):
    channel_id = create(admin, kind="slack", target=slack.url + "/old1").json()["id"]
    new = http_server()
    answer = admin.patch(
        f"/api/v1/channels/{channel_id}/",
        {"name": "deploys", "target": new.url + "/new2", "events": ["deploy_failed"]},
        format="json",
    )
    assert answer.status_code == 200, answer.json()
    assert answer.json()["name"] == "deploys" and answer.json()["target"].endswith("/…/new2")
    assert answer.json()["events"] == ["deploy_failed"]
    assert admin.patch(f"/api/v1/channels/{channel_id}/", {"kind": "email"}, format="json").status_code == 400
    assert admin.delete(f"/api/v1/channels/{channel_id}/").status_code == 204
    assert not Channel.objects.exists()
    assert list(AuditEntry.objects.order_by("id").values_list("action", flat=True)) == [
        "channel.create",
        "channel.update",
        "channel.delete",
    ]


def test_test_message_reaches_slack_and_is_listed_as_a_delivery(admin, slack):
    channel_id = create(admin, kind="slack", target=slack.url + "/services/T/B/C").json()["id"]
    answer = admin.post(f"/api/v1/channels/{channel_id}/test/")
    assert answer.status_code == 200, answer.json()
    assert answer.json()["status"] == "sent" and answer.json()["response_code"] == 200
    (received,) = slack.received("POST")
    assert received.path == "/services/T/B/C"
    assert received.json()["blocks"][0]["text"]["text"] == "Test alert from controlplane"
    deliveries = admin.get(f"/api/v1/channels/{channel_id}/notifications/").json()["results"]
    assert [(d["event"], d["status"], d["attempts"]) for d in deliveries] == [("test", "sent", 1)]
    recent = admin.get(f"/api/v1/channels/{channel_id}/").json()["recent_notifications"]
    assert recent[0]["title"] == "Test alert from controlplane"


def test_test_to_a_removed_slack_webhook_disables_the_channel_and_says_why(admin, slack):
    slack.respond(404, "no_service")
    channel_id = create(admin, kind="slack", target=slack.url + "/x").json()["id"]
    answer = admin.post(f"/api/v1/channels/{channel_id}/test/")
    assert answer.json()["status"] == "failed"
    assert answer.json()["response_code"] == 404 and "no_service" in answer.json()["error"]
    channel = admin.get(f"/api/v1/channels/{channel_id}/").json()
    assert channel["enabled"] is False
    assert channel["disabled_reason"] == "HTTP 404: no_service"

    slack.respond(200)
    enabled = admin.patch(f"/api/v1/channels/{channel_id}/", {"enabled": True}, format="json").json()
    assert enabled["enabled"] is True and enabled["disabled_reason"] == ""
    assert Notification.objects.count() == 1


def test_app_scoped_token_sees_only_channels_and_deliveries_of_its_app(team, api_for, admin, slack):
    api, billing = AppFactory(team=team, slug="api"), AppFactory(team=team, slug="billing")
    every_app = create(admin, kind="slack", target=slack.url + "/all").json()["id"]
    api_only = create(admin, kind="slack", target=slack.url + "/api", apps=["api"]).json()["id"]
    billing_only = create(admin, kind="slack", target=slack.url + "/b", apps=["billing"]).json()["id"]
    both = create(admin, kind="slack", target=slack.url + "/ab", apps=["api", "billing"]).json()["id"]
    for channel_id in (every_app, both, billing_only):
        for app in (api, billing):
            Notification.objects.create(
                channel_id=channel_id,
                event="health_down",
                app=app,
                payload={"title": f"DOWN: {app.slug} production in eu-west-1"},
            )
    scoped = api_for(team, role=Role.VIEWER, app=api)

    listed = scoped.get("/api/v1/channels/").json()["results"]
    assert sorted(c["id"] for c in listed) == sorted([every_app, api_only, both])
    assert "DOWN: billing" not in str(listed)
    by_id = {c["id"]: c for c in listed}
    assert [n["title"] for n in by_id[every_app]["recent_notifications"]] == [
        "DOWN: api production in eu-west-1"
    ]
    assert by_id[both]["apps"] == ["api"]
    for path in ("", "notifications/"):
        assert scoped.get(f"/api/v1/channels/{billing_only}/{path}").status_code == 404
    deliveries = scoped.get(f"/api/v1/channels/{every_app}/notifications/").json()["results"]
    assert [(d["app"], d["title"]) for d in deliveries] == [("api", "DOWN: api production in eu-west-1")]
    # The team-wide view is unchanged.
    assert len(admin.get("/api/v1/channels/").json()["results"]) == 4
    assert len(admin.get(f"/api/v1/channels/{every_app}/notifications/").json()["results"]) == 2
