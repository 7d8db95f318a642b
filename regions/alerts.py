"""What an incident's alerts say (``health_down``, ``health_up``, reminders, flapping), and
handing them to :mod:`controlplane.notify` for fan-out and delivery."""

from __future__ import annotations

from django.conf import settings

from controlplane.channels.base import Message
from controlplane.choices import AlertEvent
from controlplane.models import Notification
from controlplane.notify import fan_out


def _duration(seconds: float | None) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def incident_message(incident, event: str, *, reminder: bool = False, flap: str = "") -> Message:
    """The alert for an incident opening (``health_down``), still open (``reminder``) or closing.
    ``flap``: ``"flapping"`` (the region keeps going down and up; alerts about it pause) or
    ``"settled"`` (it stopped flapping and stayed down), both sent as ``health_down``."""
    sp = incident.stage_placement
    app, stage, region = sp.stage.app, sp.stage, sp.placement.region.code
    name = f"{app.slug} {stage.name}"
    fields = {"App": app.slug, "Stage": stage.name, "Region": region, "Incident": f"#{incident.pk}"}
    if event == AlertEvent.HEALTH_UP:
        title = f"{name} recovered in {region}"
        text = f"Health checks pass again in {region}; it was down for {_duration(incident.duration_s)}."
        severity = "good"
        fields["Down for"] = _duration(incident.duration_s)
    else:
        title = f"{'Still down' if reminder else 'DOWN'}: {name} in {region}"
        text = (
            f"{name} is still failing its health checks in {region}, for "
            f"{_duration(incident.duration_s)} now."
            if reminder
            else f"{name} failed its health checks in {region} "
            f"{max(sp.consecutive_failures, 1)} times in a row."
        )
        severity = "danger"
        fields["Reason"] = incident.reason or "unknown"
        if sp.route53_status:
            fields["Route 53"] = sp.route53_status
    if flap:
        window = _duration(getattr(settings, "HEALTH_FLAP_WINDOW", 600.0))
        severity = "warning" if flap == "flapping" else "danger"
        if flap == "flapping":
            title = f"FLAPPING: {name} in {region}"
            text = (
                f"{name} keeps going down and coming back in {region}. Alerts about it are paused "
                f"until it has been stable for {window}."
            )
        else:
            title = f"DOWN: {name} in {region}"
            text = f"{name} stopped flapping in {region} and has been down for {window} or more."
        fields["Flapping"] = "yes" if flap == "flapping" else "stopped; still down"
    fields["Opened"] = incident.opened_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    return Message(
        event=event,
        title=title,
        text=text,
        url=settings.SITE_URL + settings.HEALTH_URL_PATH.format(app=app.slug) + f"?team={app.team.slug}",
        fields=fields,
        severity=severity,
        data={
            "team": app.team.slug,
            "app": app.slug,
            "stage": stage.name,
            "region": region,
            "incident_id": incident.pk,
            "opened_at": incident.opened_at.isoformat(),
            "closed_at": incident.closed_at.isoformat() if incident.closed_at else None,
            "duration_s": round(incident.duration_s or 0, 1),
            "reason": incident.reason,
            "reminder": reminder,
            "flapping": flap == "flapping",
            "settled": flap == "settled",
        },
    )


def notify_incident(*, incident, event: str, reminder: bool = False, flap: str = "") -> list[Notification]:
    """Queue ``health_down``/``health_up`` deliveries for an incident to every subscribed channel
    of its app's team. Returns the rows created (sent after the current transaction commits)."""
    app = incident.stage_placement.stage.app
    message = incident_message(incident, event, reminder=reminder, flap=flap)
    return fan_out(team_id=app.team_id, app=app, event=event, message=message, incident=incident)
