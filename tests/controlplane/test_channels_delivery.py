"""Each channel kind delivers to a real receiver: a local HTTP server, a local SMTP server, SNS
in moto."""

import time

import pytest
from django.core import mail
from django.utils import timezone
from moto.backends import get_backend

from controlplane import notify
from controlplane.channels.webhook import verify
from controlplane.choices import NotificationStatus
from controlplane.models import Channel, Notification
from tests.support.alerting import make_channel
from tests.support.receivers import Reply

ACCOUNT = "123456789012"


def send_test(channel) -> Notification:
    return notify.send_test(channel=channel)


def test_webhook_body_is_signed_with_a_timestamp(team, http_server):
    receiver = http_server()
    channel = make_channel(team, "webhook", receiver.url + "/hooks/cp")
    row = send_test(channel)
    assert row.status == NotificationStatus.SENT
    (request,) = receiver.received("POST")
    headers = request.headers
    assert headers["content-type"] == "application/json"
    assert headers["x-controlplane-event"] == "test"
    assert headers["x-controlplane-delivery"] == str(row.pk)
    assert abs(int(headers["x-controlplane-timestamp"]) - time.time()) < 60
    assert verify(
        channel.raw_signing_secret,
        headers["x-controlplane-timestamp"],
        request.body,
        headers["x-controlplane-signature"],
    )
    assert not verify(
        "whsec_wrong", headers["x-controlplane-timestamp"], request.body, headers["x-controlplane-signature"]
    )
    assert not verify(
        channel.raw_signing_secret,
        headers["x-controlplane-timestamp"],
        request.body + b" ",
        headers["x-controlplane-signature"],
    )
    body = request.json()
    assert body["event"] == "test" and body["delivery_id"] == row.pk and body["data"]["team"] == "acme"


def test_webhook_410_gone_disables_the_channel(team, http_server):
    receiver = http_server()
    receiver.respond(410, "gone")
    channel = make_channel(team, "webhook", receiver.url + "/hook")
    assert send_test(channel).status == NotificationStatus.FAILED
    channel.refresh_from_db()
    assert not channel.enabled and channel.disabled_reason == "HTTP 410: gone"


def test_webhook_400_fails_the_delivery_but_keeps_the_channel(team, http_server):
    receiver = http_server()
    receiver.respond(400, "bad payload")
    channel = make_channel(team, "webhook", receiver.url + "/hook")
    row = send_test(channel)
    assert row.status == NotificationStatus.FAILED and row.response_code == 400
    channel.refresh_from_db()
    assert channel.enabled


def test_email_is_delivered_through_a_real_smtp_server_with_text_and_html(team, smtp_server):
    channel = make_channel(team, "email", "oncall@example.com")
    row = send_test(channel)
    assert row.status == NotificationStatus.SENT, row.error
    (message,) = smtp_server.messages
    assert message["To"] == "oncall@example.com"
    assert message["Subject"] == "[controlplane] Test alert from controlplane"
    assert message["X-Controlplane-Event"] == "test"
    text = message.get_body(preferencelist=("plain",)).get_content()
    html = message.get_body(preferencelist=("html",)).get_content()
    assert "alerts sent to this channel arrive" in text
    assert "<h2" in html and "Test alert from controlplane" in html
    assert mail.outbox == []  # it went over SMTP, not to the test outbox


def test_email_refused_by_the_mail_server_disables_the_channel(team, smtp_server):
    channel = make_channel(team, "email", "nobody@example.com")
    row = send_test(channel)
    assert row.status == NotificationStatus.FAILED and row.response_code == 550
    channel.refresh_from_db()
    assert not channel.enabled
    assert channel.disabled_reason.startswith("The mail server refused the address: 550")
    assert smtp_server.messages == []


def test_email_server_down_is_retried_not_disabled(team, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", 1  # nothing listens there
    channel = make_channel(team, "email", "oncall@example.com")
    row = Notification.objects.create(
        channel=channel, event="health_down", payload={"title": "t", "text": "x", "event": "health_down"}
    )
    outcome = notify.deliver_notification(notification_id=row.pk)
    assert outcome.status == NotificationStatus.PENDING and outcome.retry_in is not None
    assert "Cannot reach the mail server" in outcome.error
    channel.refresh_from_db()
    assert channel.enabled


def test_sms_is_published_through_sns(team, aws, settings):
    settings.SMS_REGION = "eu-west-1"
    channel = make_channel(team, "sms", "+14155550100")
    row = send_test(channel)
    assert row.status == NotificationStatus.SENT, row.error
    sent = list(get_backend("sns")[ACCOUNT]["eu-west-1"].sms_messages.values())
    assert sent == [("+14155550100", "Test alert from controlplane http://127.0.0.1:8000")]


def test_sms_to_an_invalid_number_disables_the_channel(team, aws):
    # A number saved before validation tightened, or one SNS rejects.
    channel = Channel.objects.create(team=team, kind="sms", target="+0123456789", events=["health_down"])
    row = send_test(channel)
    assert row.status == NotificationStatus.FAILED
    channel.refresh_from_db()
    assert not channel.enabled and "SNS refused the number" in channel.disabled_reason
    assert get_backend("sns")[ACCOUNT]["us-east-1"].sms_messages == {}


@pytest.mark.parametrize("status", [500, 502, 503, 429])
def test_slack_5xx_and_throttling_are_transient(team, slack, status):
    slack.respond(status, "try later")
    channel = make_channel(team, "slack", slack.url + "/hook")
    row = Notification.objects.create(
        channel=channel, event="health_down", payload={"event": "health_down", "title": "t", "text": "x"}
    )
    outcome = notify.deliver_notification(notification_id=row.pk)
    assert outcome.status == NotificationStatus.PENDING and outcome.retry_in == 10
    row.refresh_from_db()
    assert row.attempts == 1 and row.response_code == status and row.status == NotificationStatus.PENDING


def test_webhook_that_answers_after_the_timeout_is_delivered_on_retry(team, http_server, settings):
    settings.NOTIFY_TIMEOUT = 0.5
    receiver = http_server()
    receiver.then(Reply(200, b"ok", delay=2.0))  # the first request outlasts the timeout
    channel = make_channel(team, "webhook", receiver.url + "/hook")
    row = Notification.objects.create(
        channel=channel, event="health_down", payload={"event": "health_down", "title": "t", "text": "x"}
    )
    started = time.monotonic()
    first = notify.deliver_notification(notification_id=row.pk)
    assert time.monotonic() - started < 1.8  # it gave up at the timeout, not when the answer came
    assert first.status == NotificationStatus.PENDING and first.retry_in == 10
    row.refresh_from_db()
    assert row.error == "Timed out after 0.5s." and row.response_code is None and row.attempts == 1

    Notification.objects.filter(pk=row.pk).update(next_attempt_at=timezone.now())  # backoff over
    second = notify.deliver_notification(notification_id=row.pk)
    assert second.status == NotificationStatus.SENT
    row.refresh_from_db()
    assert (row.status, row.attempts, row.response_code, row.error) == ("sent", 2, 200, "")
    first_try, second_try = receiver.received("POST")
    assert first_try.headers["x-controlplane-delivery"] == second_try.headers["x-controlplane-delivery"]
    assert Channel.objects.get(pk=channel.pk).enabled


@pytest.mark.parametrize(("status", "body"), [(410, "channel_is_archived"), (404, "no_service")])
def test_slack_webhook_that_is_gone_disables_the_channel(team, slack, status, body):
    slack.respond(status, body)
    channel = make_channel(team, "slack", slack.url + "/services/T0/B0/XXXX")
    row = Notification.objects.create(
        channel=channel, event="health_down", payload={"event": "health_down", "title": "t", "text": "x"}
    )
    outcome = notify.deliver_notification(notification_id=row.pk)
    assert outcome.status == NotificationStatus.FAILED and outcome.retry_in is None
    row.refresh_from_db()
    assert row.status == NotificationStatus.FAILED and row.response_code == status and row.attempts == 1
    channel.refresh_from_db()
    assert not channel.enabled and channel.disabled_reason == f"HTTP {status}: {body}"
    assert len(slack.received("POST")) == 1
