"""Creating, changing and deleting alert channels: every write, with its audit entry.

Targets are credentials (a Slack or webhook URL lets anyone post): audit entries and API answers
only ever carry them masked.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import transaction

from controlplane import audit
from controlplane.access import Principal, require
from controlplane.choices import AlertEvent, Role
from controlplane.errors import DomainError
from controlplane.models import Channel, Team

from . import backend_for, kinds
from .base import InvalidTarget

SUBSCRIBABLE_EVENTS = tuple(e.value for e in AlertEvent if e != AlertEvent.TEST)
CHANNEL_FIELDS = ("name", "target", "events", "apps", "enabled")


class InvalidChannel(DomainError):
    code = "invalid_channel"
    status_code = 400


def validated_target(kind: str, target: str) -> str:
    """``target`` in canonical form for ``kind``. Raises InvalidChannel."""
    if kind not in kinds():
        raise InvalidChannel(f"Unknown channel kind '{kind}'.", fields={"kind": ["Unknown kind."]})
    try:
        return backend_for(kind).validate_target(target)
    except InvalidTarget as exc:
        raise InvalidChannel(str(exc), fields={"target": [str(exc)]})


def validated_events(events: Iterable[str]) -> list[str]:
    """The events, deduplicated in a stable order. Raises InvalidChannel for an unknown one."""
    events = list(dict.fromkeys(events))
    unknown = [e for e in events if e not in SUBSCRIBABLE_EVENTS]
    if unknown:
        detail = f"Unknown event{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}."
        raise InvalidChannel(detail, fields={"events": [detail]})
    return events


def _team_apps(team: Team, slugs: Iterable[str]):
    from deployments.models import App

    slugs = list(dict.fromkeys(slugs))
    apps = list(App.objects.filter(team=team, slug__in=slugs))
    missing = sorted(set(slugs) - {a.slug for a in apps})
    if missing:
        detail = f"The team has no app {', '.join(repr(s) for s in missing)}."
        raise InvalidChannel(detail, fields={"apps": [detail]})
    return apps


def _summary(channel: Channel) -> dict:
    return {
        "kind": channel.kind,
        "name": channel.name,
        "target": backend_for(channel.kind).mask(channel.target),
        "events": channel.events,
        "apps": sorted(channel.apps.values_list("slug", flat=True)),
        "enabled": channel.enabled,
    }


def create_channel(
    *,
    principal: Principal | None,
    team: Team,
    kind: str,
    target: str,
    name: str = "",
    events: Iterable[str] | None = None,
    apps: Iterable[str] = (),
    enabled: bool = True,
    request=None,
) -> tuple[Channel, str]:
    """Add an alert channel to ``team``. ``events`` defaults to every event; ``apps`` (slugs)
    empty means all apps. Returns ``(channel, signing_secret)``; the secret (webhooks only, else
    ``""``) is shown this once. Raises Forbidden unless an admin, InvalidChannel for bad input."""
    require(principal, Role.ADMIN, team_id=team.pk)
    target = validated_target(kind, target)
    events = validated_events(SUBSCRIBABLE_EVENTS if events is None else events)
    app_rows = _team_apps(team, apps)
    secret = backend_for(kind).new_signing_secret()
    with transaction.atomic():
        channel = Channel.objects.create(
            team=team,
            kind=kind,
            name=name,
            target=target,
            signing_secret=secret,
            events=events,
            enabled=enabled,
        )
        channel.apps.set(app_rows)
        audit.record(
            team=team,
            principal=principal,
            action="channel.create",
            obj=channel,
            changes=_summary(channel),
            request=request,
        )
    return channel, secret


def update_channel(*, principal: Principal | None, channel: Channel, data: dict, request=None) -> Channel:
    """Change ``name``, ``target``, ``events``, ``apps`` or ``enabled``. Turning a channel back on
    clears why it was disabled. Raises Forbidden unless an admin, InvalidChannel for bad input."""
    require(principal, Role.ADMIN, team_id=channel.team_id)
    unknown = set(data) - set(CHANNEL_FIELDS)
    if unknown:
        raise InvalidChannel(f"Cannot change: {', '.join(sorted(unknown))}.")
    before = _summary(channel)
    with transaction.atomic():
        update_fields = []
        if "name" in data:
            channel.name = data["name"]
            update_fields.append("name")
        if "target" in data:
            channel.target = validated_target(channel.kind, data["target"])
            update_fields.append("target")
        if "events" in data:
            channel.events = validated_events(data["events"])
            update_fields.append("events")
        if "enabled" in data:
            channel.enabled = bool(data["enabled"])
            update_fields.append("enabled")
            if channel.enabled:
                channel.disabled_reason = ""
                update_fields.append("disabled_reason")
        if update_fields:
            channel.save(update_fields=update_fields)
        if "apps" in data:
            channel.apps.set(_team_apps(channel.team, data["apps"]))
        after = _summary(channel)
        changes = {k: [before[k], after[k]] for k in after if before[k] != after[k]}
        if "target" in data and "target" not in changes:
            changes["target"] = ["(changed)", after["target"]]  # same mask, new value
        if changes:
            audit.record(
                team=channel.team,
                principal=principal,
                action="channel.update",
                obj=channel,
                changes=changes,
                request=request,
            )
    return channel


def delete_channel(*, principal: Principal | None, channel: Channel, request=None) -> None:
    """Delete a channel and its delivery history. Raises Forbidden unless an admin."""
    require(principal, Role.ADMIN, team_id=channel.team_id)
    with transaction.atomic():
        audit.record(
            team=channel.team,
            principal=principal,
            action="channel.delete",
            obj=channel,
            changes=_summary(channel),
            request=request,
        )
        channel.delete()
