"""Alert delivery: an event fans out to the team's subscribed channels as Notification rows, one per
channel, each delivered by a task with retries. A row is the record of a delivery whatever
happens to the task: the sweeper re-enqueues rows whose task was lost. Every try is logged as a
NotificationAttempt (outcome, answer, error, how long it took). What an alert says is written
by the part it is about: ``deployments/alerts.py`` and ``regions/alerts.py``.

Delivery outcome: sent; pending again with a next attempt (timeouts, 5xx, throttling; at most
``NOTIFY_MAX_ATTEMPTS`` tries); or failed (permanent errors, out of tries). A target that is
gone for good (Slack 404/410, an address the mail server refuses, an invalid phone number)
also disables the channel, with the error as the reason, so it stops failing on every alert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from . import audit, queue
from .channels import backend_for
from .channels.base import DeliveryError, Message
from .choices import AlertEvent, NotificationStatus
from .models import Channel, Notification, NotificationAttempt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one delivery attempt ended in. ``retry_in``: seconds until the next try, when one is due."""

    status: str  # a NotificationStatus, or "skipped" when the row was not ours to send
    retry_in: float | None = None
    error: str = ""


# --- Who hears about what -------------------------------------------------------------------


def subscribed_channels(*, team_id: int, app_id: int | None, event: str) -> list[Channel]:
    """Enabled channels of the team subscribed to ``event`` for this app (or for all apps)."""
    qs = Channel.objects.filter(team_id=team_id, enabled=True)
    qs = qs.filter(Q(apps=None) | Q(apps=app_id)) if app_id else qs.filter(apps=None)
    return [c for c in qs.distinct().order_by("pk") if event in (c.events or [])]


def fan_out(
    *, team_id: int, app, event: str, message: Message, deployment=None, incident=None
) -> list[Notification]:
    """One Notification row per channel of the team subscribed to ``event`` for ``app`` (a
    deployment's transition is told to a channel once), each delivered after commit. Returns
    the rows created. The wording is the caller's (``deployments/alerts.py``,
    ``regions/alerts.py``)."""
    channels = subscribed_channels(team_id=team_id, app_id=app.pk if app else None, event=event)
    if deployment is not None:
        # The engine may report a transition again when a job is resumed: one alert per transition.
        done = set(
            Notification.objects.filter(deployment=deployment, event=event).values_list(
                "channel_id", flat=True
            )
        )
        channels = [c for c in channels if c.pk not in done]
    if not channels:
        return []
    now = timezone.now()
    rows = Notification.objects.bulk_create(
        [
            Notification(
                channel=channel,
                event=event,
                app=app,
                deployment=deployment,
                incident=incident,
                payload=message.to_payload(),
                next_attempt_at=now,
                created_at=now,
            )
            for channel in channels
        ]
    )
    enqueue(row.pk for row in rows)
    return rows


def enqueue(notification_ids: Iterable[int]) -> None:
    """Hand deliveries to the workers after commit (see :mod:`controlplane.queue`: a broker
    failure is logged; the rows stay pending and the sweeper enqueues them again)."""
    queue.enqueue("workers.deliver_notification", notification_ids)


# --- Messages -------------------------------------------------------------------------------


def channel_test_message(channel: Channel) -> Message:
    return Message(
        event=AlertEvent.TEST,
        title="Test alert from controlplane",
        text="If you can read this, alerts sent to this channel arrive.",
        url=settings.SITE_URL,
        fields={"Team": channel.team.slug, "Channel": channel.name or f"#{channel.pk}", "Kind": channel.kind},
        severity="info",
        data={"team": channel.team.slug, "channel_id": channel.pk},
    )


def retry_delay(attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    delays = settings.NOTIFY_RETRY_DELAYS or [10.0]
    return float(delays[min(attempt - 1, len(delays) - 1)])


def deliver_notification(*, notification_id: int, max_attempts: int | None = None) -> DeliveryOutcome:
    """Make one delivery attempt of a pending notification. Returns the outcome; ``retry_in`` is
    set when another attempt is due (the caller schedules it). A row already sent, failed, or
    claimed by another worker is skipped. A row whose next attempt is not due yet (a task
    redelivered during its backoff, or while another worker's attempt holds the lease) is left
    alone: the outcome is pending with ``retry_in`` the seconds until it is due."""
    max_attempts = max_attempts or settings.NOTIFY_MAX_ATTEMPTS
    row = Notification.objects.select_related("channel__team").filter(pk=notification_id).first()
    if row is None or row.status != NotificationStatus.PENDING:
        return DeliveryOutcome("skipped")
    channel = row.channel
    now = timezone.now()
    if row.next_attempt_at is not None and row.next_attempt_at > now:
        wait = (row.next_attempt_at - now).total_seconds()
        return DeliveryOutcome(NotificationStatus.PENDING, retry_in=wait, error="not due yet")
    if not channel.enabled and row.event != AlertEvent.TEST:
        Notification.objects.filter(pk=row.pk, status=NotificationStatus.PENDING).update(
            status=NotificationStatus.FAILED,
            error=f"Channel disabled: {channel.disabled_reason or 'by an admin'}"[:2000],
            next_attempt_at=None,
        )
        return DeliveryOutcome(NotificationStatus.FAILED, error="channel disabled")
    # The claim: the attempt counter moves only for the worker that saw its old value, and the
    # lease keeps the sweeper away while the attempt runs.
    lease = now + timedelta(seconds=settings.NOTIFY_TIMEOUT + 60)
    claimed = Notification.objects.filter(
        pk=row.pk, status=NotificationStatus.PENDING, attempts=row.attempts
    ).update(attempts=F("attempts") + 1, next_attempt_at=lease)
    if not claimed:
        return DeliveryOutcome("skipped")
    attempt = row.attempts + 1
    started = time.perf_counter()
    try:
        delivered = backend_for(channel.kind).send(
            channel=channel, message=Message.from_payload(row.payload), delivery_id=row.pk
        )
    except DeliveryError as exc:
        return _failed(row, channel, exc, attempt=attempt, max_attempts=max_attempts, started=started)
    except Exception as exc:  # noqa: BLE001 - a backend bug must not leave the row pending forever
        log.exception("notification %s: unexpected error from the %s backend", row.pk, channel.kind)
        error = DeliveryError(f"Unexpected error: {type(exc).__name__}.")
        error.transient = True
        return _failed(row, channel, error, attempt=attempt, max_attempts=max_attempts, started=started)
    with transaction.atomic():
        Notification.objects.filter(pk=row.pk).update(
            status=NotificationStatus.SENT,
            sent_at=timezone.now(),
            response_code=delivered.response_code,
            error="",
            next_attempt_at=None,
        )
        _log_attempt(row, attempt, NotificationStatus.SENT, started, response_code=delivered.response_code)
    return DeliveryOutcome(NotificationStatus.SENT)


def _log_attempt(
    row: Notification, number: int, status: str, started: float, *, response_code=None, error: str = ""
) -> None:
    NotificationAttempt.objects.create(
        notification=row,
        number=number,
        status=status,
        response_code=response_code,
        error=error,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


def _failed(
    row: Notification,
    channel: Channel,
    exc: DeliveryError,
    *,
    attempt: int,
    max_attempts: int,
    started: float,
):
    detail = exc.detail[:2000]
    if exc.transient and attempt < max_attempts:
        delay = retry_delay(attempt)
        with transaction.atomic():
            Notification.objects.filter(pk=row.pk).update(
                error=detail,
                response_code=exc.response_code,
                next_attempt_at=timezone.now() + timedelta(seconds=delay),
            )
            _log_attempt(
                row,
                attempt,
                NotificationStatus.PENDING,
                started,
                response_code=exc.response_code,
                error=detail,
            )
        log.info("notification %s attempt %s failed (%s); next in %ss", row.pk, attempt, detail, delay)
        return DeliveryOutcome(NotificationStatus.PENDING, retry_in=delay, error=detail)
    with transaction.atomic():
        _log_attempt(
            row, attempt, NotificationStatus.FAILED, started, response_code=exc.response_code, error=detail
        )
        if exc.transient:
            detail = f"Gave up after {attempt} attempts: {detail}"[:2000]
        Notification.objects.filter(pk=row.pk).update(
            status=NotificationStatus.FAILED,
            error=detail,
            response_code=exc.response_code,
            next_attempt_at=None,
        )
    log.warning("notification %s to %s channel %s failed: %s", row.pk, channel.kind, channel.pk, detail)
    if exc.disables_channel:
        disable_channel(channel=channel, reason=exc.detail)
    return DeliveryOutcome(NotificationStatus.FAILED, error=detail)


def disable_channel(*, channel: Channel, reason: str) -> bool:
    """Turn a channel off because its target is gone, saying why. Returns False when it was
    already off. Audited as the control plane's own action."""
    reason = reason[:500]
    with transaction.atomic():
        changed = Channel.objects.filter(pk=channel.pk, enabled=True).update(
            enabled=False, disabled_reason=reason
        )
        if changed:
            channel.enabled, channel.disabled_reason = False, reason
            audit.record(
                team=channel.team,
                principal=None,
                action="channel.disable",
                obj=channel,
                changes={"enabled": [True, False], "reason": reason},
            )
    return bool(changed)


def send_test(*, channel: Channel) -> Notification:
    """Send a test message to ``channel`` now (one attempt, even when the channel is disabled)
    and return its notification row, sent or failed with the reason."""
    row = Notification.objects.create(
        channel=channel,
        event=AlertEvent.TEST,
        payload=channel_test_message(channel).to_payload(),
        next_attempt_at=timezone.now(),
    )
    deliver_notification(notification_id=row.pk, max_attempts=1)
    row.refresh_from_db()
    return row


def requeue_stale_notifications(*, now: datetime | None = None, grace_s: float = 60) -> int:
    """Enqueue again pending deliveries whose next attempt is ``grace_s`` overdue (a lost task, a
    worker that died mid-send); rows out of attempts are failed instead. Returns how many were
    enqueued."""
    now = now or timezone.now()
    stale = Notification.objects.filter(
        status=NotificationStatus.PENDING, next_attempt_at__lt=now - timedelta(seconds=grace_s)
    )
    stale.filter(attempts__gte=settings.NOTIFY_MAX_ATTEMPTS).update(
        status=NotificationStatus.FAILED,
        error="Gave up: no attempt finished within the allowed attempts.",
        next_attempt_at=None,
    )
    ids = list(
        stale.filter(attempts__lt=settings.NOTIFY_MAX_ATTEMPTS)
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:1000]
    )
    enqueue(ids)
    return len(ids)
