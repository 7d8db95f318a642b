"""Incidents: one opens when a stage's region goes down and closes when it recovers; flap
damping keeps a region going down and up from alerting on every transition; reminders for
incidents still open. What the alerts say is :mod:`regions.alerts`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from controlplane.models import Notification

from . import alerts
from .models import Incident, StagePlacement

log = logging.getLogger("regions.health")


def flap_limit() -> int:
    """More than this many transitions (down or up) within :func:`flap_window` is flapping
    (``HEALTH_FLAP_TRANSITIONS``, default 4; 0 turns flap damping off)."""
    return int(getattr(settings, "HEALTH_FLAP_TRANSITIONS", 4))


def flap_window() -> timedelta:
    """``HEALTH_FLAP_WINDOW`` seconds (default 600): the span transitions are counted in, and
    how long a flapping placement must be stable before alerts about it resume."""
    return timedelta(seconds=float(getattr(settings, "HEALTH_FLAP_WINDOW", 600.0)))


FLAP_HISTORY = 200  # incidents read to decide; an episode longer than this is judged on its end


def flap_decision(times: Sequence[datetime], *, limit: int, window: timedelta) -> str:
    """Whether to alert about the last of a placement's transitions ``times`` (oldest first):
    ``"alert"``; ``"flapping"`` (it is the first of an episode to make more than ``limit``
    transitions within ``window``: send one notice that alerts pause); or ``"quiet"`` (the
    episode was already flapping: say nothing). An episode is a run of transitions each within
    ``window`` of the one before, so a placement stable for a whole window starts afresh."""
    if limit <= 0 or not times:
        return "alert"
    start = 0
    for i in range(1, len(times)):
        if times[i] - times[i - 1] > window:
            start = i
    episode = times[start:]
    first = 0
    for i, at in enumerate(episode):
        while at - episode[first] > window:
            first += 1
        if i - first + 1 > limit:
            return "flapping" if i == len(episode) - 1 else "quiet"
    return "alert"


def _transition_times(stage_placement: StagePlacement, until: datetime) -> list[datetime]:
    """The placement's transitions up to ``until``, oldest first: every incident opening (down)
    and closing (up)."""
    rows = (
        Incident.objects.filter(stage_placement=stage_placement, opened_at__lte=until)
        .order_by("-opened_at")
        .values_list("opened_at", "closed_at")[:FLAP_HISTORY]
    )
    return sorted(t for opened, closed in rows for t in (opened, closed) if t is not None and t <= until)


def flap_state(stage_placement: StagePlacement, at: datetime) -> str:
    """:func:`flap_decision` for the placement's transition at ``at``."""
    limit = flap_limit()
    if limit <= 0:
        return "alert"
    return flap_decision(_transition_times(stage_placement, at), limit=limit, window=flap_window())


def _alert(incident: Incident, event: str, at: datetime) -> None:
    decision = flap_state(incident.stage_placement, at)
    if decision == "alert":
        alerts.notify_incident(incident=incident, event=event)
    elif decision == "flapping":
        log.warning("%s is flapping; alerts about it pause", incident.stage_placement)
        alerts.notify_incident(incident=incident, event="health_down", flap="flapping")


def open_incident(
    *, stage_placement: StagePlacement, reason: str, at: datetime | None = None
) -> Incident | None:
    """Open an incident for a placement that went down and notify its app's channels (unless it
    is flapping: see :func:`flap_decision`). Returns the new incident, or None when one is
    already open (nobody is told twice)."""
    at = at or timezone.now()
    try:
        with transaction.atomic():
            incident = Incident.objects.create(
                stage_placement=stage_placement, reason=reason[:500], opened_at=at
            )
    except IntegrityError:
        return None
    log.warning("incident %s opened: %s is down (%s)", incident.pk, stage_placement, reason)
    _alert(incident, "health_down", at)
    return incident


def close_incident(*, stage_placement: StagePlacement, at: datetime | None = None) -> Incident | None:
    """Close the placement's open incident and notify (unless it is flapping). Returns it, or
    None when none was open."""
    at = at or timezone.now()
    incident = Incident.objects.filter(stage_placement=stage_placement, closed_at__isnull=True).first()
    if incident is None:
        return None
    if not Incident.objects.filter(pk=incident.pk, closed_at__isnull=True).update(closed_at=at):
        return None
    incident.closed_at = at
    log.info(
        "incident %s closed after %.0fs: %s recovered", incident.pk, incident.duration_s, stage_placement
    )
    _alert(incident, "health_up", at)
    return incident


def alert_settled_flaps(*, now: datetime | None = None) -> int:
    """Tell channels about placements that stopped flapping while down: their incident opened
    without an alert (flapping) and has stayed open for a whole :func:`flap_window`. Only
    incidents that reached that age in the last few intervals are looked at, so each is
    examined a bounded number of times. Returns how many were alerted."""
    if flap_limit() <= 0:
        return 0
    now = now or timezone.now()
    settled_by = now - flap_window()
    lookback = timedelta(seconds=max(60.0, 3 * settings.HEALTH_PROBE_INTERVAL))
    candidates = Incident.objects.filter(
        closed_at__isnull=True, opened_at__lte=settled_by, opened_at__gt=settled_by - lookback
    ).select_related("stage_placement__stage__app__team", "stage_placement__placement__region")
    sent = 0
    for incident in candidates:
        if flap_state(incident.stage_placement, incident.opened_at) == "alert":
            continue  # its opening was alerted as usual
        if Notification.objects.filter(incident=incident, payload__data__settled=True).exists():
            continue
        alerts.notify_incident(incident=incident, event="health_down", flap="settled")
        sent += 1
    return sent


def send_incident_reminders(*, now: datetime | None = None) -> int:
    """Remind channels of incidents still open ``HEALTH_REMINDER_MINUTES`` after the last alert
    (0: never). Returns how many reminders were sent."""
    minutes = settings.HEALTH_REMINDER_MINUTES
    if minutes <= 0:
        return 0
    now = now or timezone.now()
    due = (
        Incident.objects.filter(closed_at__isnull=True)
        .annotate(last_alert=Coalesce("last_reminder_at", "opened_at"))
        .filter(last_alert__lte=now - timedelta(minutes=minutes))
        .select_related("stage_placement__stage__app__team", "stage_placement__placement__region")
    )
    sent = 0
    for incident in due:
        # The conditional update is the claim: a second scheduler finds the new value and skips.
        claimed = Incident.objects.filter(
            pk=incident.pk, closed_at__isnull=True, last_reminder_at=incident.last_reminder_at
        ).update(last_reminder_at=now)
        if claimed:
            alerts.notify_incident(incident=incident, event="health_down", reminder=True)
            sent += 1
    return sent


def close_incidents_of_retired_placements(*, now: datetime | None = None) -> int:
    """Close open incidents of placements that no longer serve (their stage left the region):
    nothing will probe them again. Returns how many were closed; nobody is notified."""
    return Incident.objects.filter(closed_at__isnull=True, stage_placement__version="").update(
        closed_at=now or timezone.now()
    )
