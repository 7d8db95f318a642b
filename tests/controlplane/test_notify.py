"""Fan-out of events to subscribed channels and delivery with retries, on real receivers."""

import json

import pytest
from django.test import override_settings
from django.utils import timezone

from controlplane import notify
from controlplane.choices import Role
from controlplane.models import AuditEntry, Channel, Notification, NotificationAttempt
from deployments import alerts
from deployments.models import Deployment, RegionDeployment
from regions.models import Region
from tests.factories import AppFactory, StageFactory
from tests.support.alerting import deliver_pending, make_channel
from tests.support.processes import wait_for
from tests.support.receivers import Reply


@pytest.fixture
def deployment(team):
    app = AppFactory(team=team, slug="api")
    stage = StageFactory(app=app, name="production")
    deployment = Deployment.objects.create(
        app=app,
        stage=stage,
        kind="deploy",
        status="partially_failed",
        commit_sha="0123456789abcdef0123456789abcdef01234567",
        commit_message="Fix the checkout timeout\n\nLonger explanation.",
        commit_branch="main",
        triggered_by="token:ci (cp_ab12)",
    )
    for code, status, version, error in [
        ("us-east-1", "succeeded", "7", ""),
        ("eu-west-1", "failed", "", "Verify: HTTP 503 (expected 200)"),
    ]:
        region, _ = Region.objects.get_or_create(code=code)
        RegionDeployment.objects.create(
            deployment=deployment, region=region, status=status, version=version, error=error
        )
    return deployment


def test_deploy_failure_reaches_subscribed_channels_with_commit_regions_and_link(
    team, deployment, slack, http_server, settings
):
    settings.SITE_URL = "https://cp.example.com"
    webhook = http_server()
    make_channel(team, "slack", slack.url + "/hook", events=["deploy_failed"], apps=["api"])
    make_channel(team, "webhook", webhook.url + "/hook", events=["deploy_failed", "rollback"])
    make_channel(team, "slack", slack.url + "/started-only", events=["deploy_started"])
    AppFactory(team=team, slug="billing")
    make_channel(team, "slack", slack.url + "/billing", apps=["billing"])

    alerts.notify_deployment(deployment.pk, "deploy_failed")
    deliver_pending()

    (message,) = slack.received("POST")
    assert message.path == "/hook"
    blocks = message.json()["blocks"]
    assert blocks[0]["text"]["text"] == "Deploy failed: api production"
    fields = {f["text"].split("\n", 1)[0]: f["text"].split("\n", 1)[1] for f in blocks[2]["fields"]}
    assert fields["*Commit*"] == "0123456 Fix the checkout timeout"
    assert fields["*Kind*"] == "deploy"
    assert fields["*Regions*"] == (
        "eu-west-1: failed — Verify: HTTP 503 (expected 200)\nus-east-1: succeeded (version 7)"
    )
    assert blocks[3]["elements"][0]["url"] == f"https://cp.example.com/deployments/{deployment.pk}/"
    (hook,) = webhook.received("POST")
    data = hook.json()["data"]
    assert data["deployment_id"] == deployment.pk and data["status"] == "partially_failed"
    assert [r["region"] for r in data["regions"]] == ["eu-west-1", "us-east-1"]


def test_same_transition_reported_twice_alerts_once(team, deployment, slack):
    make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(deployment.pk, "deploy_started")
    alerts.notify_deployment(deployment.pk, "deploy_started")
    alerts.notify_deployment(deployment.pk, "deploy_succeeded")
    deliver_pending()
    titles = [r.json()["blocks"][0]["text"]["text"] for r in slack.received("POST")]
    assert titles == ["Deploying: api production", "Deployed: api production"]


def test_notify_deployment_never_raises(team, slack, caplog):
    make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(999999, "deploy_failed")
    assert Notification.objects.count() == 0
    assert "could not queue deploy_failed notifications for deployment 999999" in caplog.text


def test_disabled_channel_gets_nothing(team, deployment, slack):
    channel = make_channel(team, "slack", slack.url + "/hook")
    Channel.objects.filter(pk=channel.pk).update(enabled=False, disabled_reason="HTTP 404: no_service")
    alerts.notify_deployment(deployment.pk, "rollback")
    assert Notification.objects.count() == 0


def backoff_passes(row) -> None:
    """Let the row's backoff run out, as the clock would."""
    Notification.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())


def test_transient_failures_are_retried_then_succeed(team, deployment, slack):
    slack.then(Reply(503, b"busy"), Reply(500, b"oops"))
    make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(deployment.pk, "deploy_failed")
    row = Notification.objects.get()

    first = notify.deliver_notification(notification_id=row.pk)
    assert (first.status, first.retry_in) == ("pending", 10)
    row.refresh_from_db()
    assert row.attempts == 1 and row.error == "HTTP 503: busy" and row.next_attempt_at > timezone.now()
    backoff_passes(row)
    second = notify.deliver_notification(notification_id=row.pk)
    assert (second.status, second.retry_in) == ("pending", 60)
    backoff_passes(row)
    third = notify.deliver_notification(notification_id=row.pk)
    assert third.status == "sent"
    row.refresh_from_db()
    assert (row.status, row.attempts, row.response_code, row.error) == ("sent", 3, 200, "")
    assert len(slack.received("POST")) == 3
    assert notify.deliver_notification(notification_id=row.pk).status == "skipped"  # a redelivery
    assert len(slack.received("POST")) == 3


def test_every_attempt_is_logged_and_listed_with_the_delivery(team, deployment, slack, api_for):
    slack.then(Reply(503, b"busy"), Reply(502, b"bad gateway"))
    channel = make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(deployment.pk, "deploy_failed")
    row = Notification.objects.get()
    for _ in range(3):
        notify.deliver_notification(notification_id=row.pk)
        backoff_passes(row)

    assert Notification.objects.count() == 1
    row.refresh_from_db()
    assert (row.status, row.attempts) == ("sent", 3)
    log = list(NotificationAttempt.objects.filter(notification=row).order_by("number"))
    assert [(a.number, a.status, a.response_code, a.error) for a in log] == [
        (1, "pending", 503, "HTTP 503: busy"),
        (2, "pending", 502, "HTTP 502: bad gateway"),
        (3, "sent", 200, ""),
    ]
    assert all(a.duration_ms is not None and a.duration_ms >= 0 for a in log)
    assert log[0].created_at <= log[1].created_at <= log[2].created_at

    viewer = api_for(team, role=Role.VIEWER)
    (delivery,) = viewer.get(f"/api/v1/channels/{channel.pk}/notifications/").json()["results"]
    assert delivery["status"] == "sent" and delivery["attempts"] == 3
    assert [(a["number"], a["status"], a["response_code"]) for a in delivery["attempt_log"]] == [
        (1, "pending", 503),
        (2, "pending", 502),
        (3, "sent", 200),
    ]
    (listed,) = viewer.get("/api/v1/channels/").json()["results"]
    assert len(listed["recent_notifications"][0]["attempt_log"]) == 3


def test_a_delivery_that_gives_up_logs_each_try_as_it_ended(team, deployment, slack):
    slack.respond(503, "down")
    make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(deployment.pk, "deploy_failed")
    row = Notification.objects.get()
    for _ in range(3):
        notify.deliver_notification(notification_id=row.pk)
        backoff_passes(row)
    statuses = NotificationAttempt.objects.filter(notification=row).values_list("status", flat=True)
    assert list(statuses) == ["pending", "pending", "failed"]
    assert NotificationAttempt.objects.get(number=3).error == "HTTP 503: down"


def test_task_redelivered_during_its_backoff_waits_for_it(team, deployment, slack):
    slack.then(Reply(503, b"busy"))
    make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(deployment.pk, "deploy_failed")
    row = Notification.objects.get()
    assert notify.deliver_notification(notification_id=row.pk).retry_in == 10
    row.refresh_from_db()
    due = row.next_attempt_at

    # The broker hands the task out again at once (a lost ack, a restarted worker).
    again = notify.deliver_notification(notification_id=row.pk)
    assert again.status == "pending" and 9 < again.retry_in <= 10  # scheduled for when it is due
    row.refresh_from_db()
    assert (row.attempts, row.next_attempt_at, row.status) == (1, due, "pending")
    assert len(slack.received("POST")) == 1  # nothing was sent early

    backoff_passes(row)
    assert notify.deliver_notification(notification_id=row.pk).status == "sent"
    assert len(slack.received("POST")) == 2


def test_gives_up_after_three_tries_and_keeps_the_channel(team, deployment, slack):
    slack.respond(503, "down for maintenance")
    channel = make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(deployment.pk, "deploy_failed")
    row = Notification.objects.get()
    outcomes = []
    for _ in range(4):
        outcomes.append(notify.deliver_notification(notification_id=row.pk))
        backoff_passes(row)
    assert [o.status for o in outcomes] == ["pending", "pending", "failed", "skipped"]
    row.refresh_from_db()
    assert row.status == "failed" and row.attempts == 3
    assert row.error == "Gave up after 3 attempts: HTTP 503: down for maintenance"
    assert len(slack.received("POST")) == 3
    channel.refresh_from_db()
    assert channel.enabled


def test_slack_404_disables_the_channel_and_later_alerts_skip_it(team, deployment, slack):
    slack.respond(404, "no_service")
    channel = make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(deployment.pk, "deploy_started")
    (outcome,) = deliver_pending()
    assert outcome.status == "failed"
    channel.refresh_from_db()
    assert not channel.enabled and channel.disabled_reason == "HTTP 404: no_service"
    entry = AuditEntry.objects.get(action="channel.disable")
    assert entry.actor == "system" and entry.changes["reason"] == "HTTP 404: no_service"
    alerts.notify_deployment(deployment.pk, "deploy_failed")
    assert Notification.objects.count() == 1
    assert len(slack.received("POST")) == 1


def test_url_that_now_leads_to_a_private_address_is_refused_at_delivery(team, deployment, slack):
    channel = make_channel(team, "webhook", f"http://localhost:{slack.port}/hook")
    alerts.notify_deployment(deployment.pk, "deploy_failed")
    with override_settings(ALLOW_PRIVATE_URLS=False):
        (outcome,) = deliver_pending()
    assert outcome.status == "failed"
    assert slack.received() == []
    channel.refresh_from_db()
    assert not channel.enabled and "loopback" in channel.disabled_reason


def test_rows_whose_task_was_lost_are_enqueued_again(team, deployment, slack):
    make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(deployment.pk, "deploy_failed")
    row = Notification.objects.get()
    assert notify.requeue_stale_notifications() == 0  # not overdue yet
    later = timezone.now() + timezone.timedelta(minutes=5)
    assert notify.requeue_stale_notifications(now=later) == 1
    Notification.objects.filter(pk=row.pk).update(attempts=3)
    assert notify.requeue_stale_notifications(now=later) == 0
    row.refresh_from_db()
    assert row.status == "failed" and row.error.startswith("Gave up")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_real_worker_delivers_after_commit_and_retries_later(team, deployment, slack, worker_process):
    slack.then(Reply(503, b"busy"))
    make_channel(team, "slack", slack.url + "/hook")
    alerts.notify_deployment(deployment.pk, "rollback")  # autocommit: enqueued at once
    (first,) = slack.wait_for_requests(1, timeout=30)
    row = Notification.objects.get()
    # The attempt is claimed before it is sent and recorded after: wait for the record.
    wait_for(lambda: Notification.objects.get(pk=row.pk).error, timeout=10)
    row.refresh_from_db()
    assert row.status == "pending" and row.attempts == 1 and row.error == "HTTP 503: busy"
    assert row.next_attempt_at is not None
    # The worker tries again after the first backoff step (NOTIFY_RETRY_DELAYS, 10 s by default).
    first_try, second_try = slack.wait_for_requests(2, timeout=40)
    assert first_try.body == second_try.body
    wait_for(lambda: Notification.objects.get(pk=row.pk).status == "sent", timeout=15)
    row.refresh_from_db()
    assert row.attempts == 2 and row.response_code == 200
    assert json.loads(second_try.body)["blocks"][0]["text"]["text"] == "Rolled back: api production"
