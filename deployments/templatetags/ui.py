"""Template helpers of the web UI: one time format everywhere, human status labels."""

from __future__ import annotations

from datetime import UTC, datetime

from django import template
from django.utils import timezone
from django.utils.html import format_html

from deployments.views.common import human_seconds, status_label

register = template.Library()


def ago(value: datetime, now: datetime | None = None) -> str:
    """``"just now"``, ``"3 min ago"``, ``"2 h ago"``, ``"in 5 min"``, ``"4 days ago"``."""
    seconds = ((now or timezone.now()) - value).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 45:
        text = "just now" if not future else "in a moment"
        return text
    if seconds < 3600:
        amount = f"{round(seconds / 60)} min"
    elif seconds < 86400:
        amount = f"{round(seconds / 3600)} h"
    elif seconds < 86400 * 60:
        days = round(seconds / 86400)
        amount = f"{days} day{'s' if days != 1 else ''}"
    else:
        return value.astimezone(UTC).strftime("%Y-%m-%d")
    return f"in {amount}" if future else f"{amount} ago"


@register.simple_tag
def when(value: datetime | None, empty: str = "—"):
    """A time as "3 min ago", with the absolute UTC time on hover (and in ``datetime`` for the
    script that keeps the relative text fresh)."""
    if value is None:
        return format_html('<span class="muted">{}</span>', empty)
    utc = value.astimezone(UTC)
    return format_html(
        '<time class="rel" datetime="{}" title="{}">{}</time>',
        utc.isoformat().replace("+00:00", "Z"),
        utc.strftime("%Y-%m-%d %H:%M:%S UTC"),
        ago(value),
    )


@register.simple_tag
def badge(status: str | None):
    """A status badge, as ``_status.html`` draws it; a tag rather than an ``{% include %}`` in
    table loops, where each include costs a template render of its own."""
    return format_html(
        '<span class="badge status-{}" data-status="{}">{}</span>',
        status or "none",
        "None" if status is None else status,
        status_label(status or "") or "—",
    )


@register.filter
def label(status: str) -> str:
    return status_label(status)


@register.filter
def seconds(value) -> str:
    return human_seconds(value)
