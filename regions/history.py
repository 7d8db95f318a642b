"""Health history: latency over time, uptime and incidents of an app's stages per region.

The probes are downsampled in the database: one statement groups the window's probes of every
stage placement into fixed buckets (60 for the last hour, 96 for a day, 168 for a week), so
the page reads at most a few hundred rows however many probes a year holds. It walks the
``(stage_placement, -created_at)`` index, one range per placement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db import connection
from django.db.models import OuterRef, Prefetch, Q, Subquery
from django.utils import timezone

from controlplane.models import Notification

from .models import Incident, Probe, StagePlacement

WINDOWS = {
    # name: (length, bucket)
    "hour": (timedelta(hours=1), timedelta(minutes=1)),
    "day": (timedelta(days=1), timedelta(minutes=15)),
    "week": (timedelta(days=7), timedelta(hours=1)),
}
DEFAULT_WINDOW = "day"


@dataclass
class Bucket:
    start: datetime
    probes: int
    failed: int
    avg_ms: float | None  # over the successful probes only: a failure has no meaningful latency
    max_ms: float | None


@dataclass
class Series:
    """One stage in one region over the window."""

    stage_placement_id: int
    buckets: list[Bucket] = field(default_factory=list)

    @property
    def probes(self) -> int:
        return sum(b.probes for b in self.buckets)

    @property
    def failed(self) -> int:
        return sum(b.failed for b in self.buckets)

    @property
    def uptime(self) -> float | None:
        """Share of successful probes in the window, in percent (None without probes)."""
        return 100.0 * (self.probes - self.failed) / self.probes if self.probes else None


def _bucket_sql(seconds: int) -> str:
    column = "created_at"
    if connection.vendor == "postgresql":
        return f"floor(extract(epoch from {column}) / {seconds})"
    if connection.vendor == "sqlite":
        return f"cast(strftime('%%s', {column}) as integer) / {seconds}"
    return f"floor(unix_timestamp({column}) / {seconds})"


def latency_series(
    stage_placement_ids: list[int], *, window: str = DEFAULT_WINDOW, now: datetime | None = None
) -> dict[int, Series]:
    """``{stage placement id: Series}`` for ``window`` (hour, day or week), in one statement."""
    length, bucket = WINDOWS[window]
    now = now or timezone.now()
    since = now - length
    seconds = int(bucket.total_seconds())
    out = {pk: Series(stage_placement_id=pk) for pk in stage_placement_ids}
    if not stage_placement_ids:
        return out
    table = Probe._meta.db_table
    placeholders = ", ".join(["%s"] * len(stage_placement_ids))
    key = _bucket_sql(seconds)
    sql = (
        f"SELECT stage_placement_id, {key} AS b, COUNT(*), "  # noqa: S608 - names from the model
        f"SUM(CASE WHEN ok THEN 0 ELSE 1 END), "
        f"AVG(CASE WHEN ok THEN latency_ms END), MAX(CASE WHEN ok THEN latency_ms END) "
        f"FROM {table} WHERE stage_placement_id IN ({placeholders}) AND created_at >= %s "
        f"GROUP BY stage_placement_id, b ORDER BY stage_placement_id, b"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*stage_placement_ids, since])
        rows = cursor.fetchall()
    tz = timezone.get_current_timezone() if timezone.is_aware(now) else None
    for sp_id, b, count, failed, avg_ms, max_ms in rows:
        start = datetime.fromtimestamp(int(b) * seconds, tz=tz or timezone.UTC)
        out[sp_id].buckets.append(
            Bucket(
                start=start,
                probes=int(count),
                failed=int(failed or 0),
                avg_ms=float(avg_ms) if avg_ms is not None else None,
                max_ms=float(max_ms) if max_ms is not None else None,
            )
        )
    return out


def last_probes(stage_placement_ids: list[int]) -> dict[int, Probe]:
    """The newest probe of each stage placement, in one statement."""
    newest = (
        Probe.objects.filter(stage_placement=OuterRef("pk")).order_by("-created_at", "-id").values("pk")[:1]
    )
    latest = StagePlacement.objects.filter(pk__in=stage_placement_ids).annotate(last=Subquery(newest))
    return {p.stage_placement_id: p for p in Probe.objects.filter(pk__in=latest.values("last"))}


def incidents_in(*, app, window: str = DEFAULT_WINDOW, now: datetime | None = None, limit: int = 50):
    """``app``'s incidents open at any time during ``window``, newest first, with the alerts
    each sent (``notification_set`` prefetched as ``alerts``)."""
    length, _ = WINDOWS[window]
    since = (now or timezone.now()) - length
    return list(
        Incident.objects.filter(stage_placement__placement__app=app)
        .filter(Q(closed_at__isnull=True) | Q(closed_at__gte=since))
        .select_related("stage_placement__stage", "stage_placement__placement__region")
        .prefetch_related(
            Prefetch(
                "notification_set",
                queryset=Notification.objects.select_related("channel").order_by("created_at"),
                to_attr="alerts",
            )
        )
        .order_by("-opened_at", "-id")[:limit]
    )


def svg_chart(series: Series, *, window: str = DEFAULT_WINDOW, now: datetime | None = None) -> str:
    """A small latency chart as inline SVG: the average latency of successful probes per bucket
    as a line, buckets with failed probes as red bars. Only numbers go into it."""
    length, bucket = WINDOWS[window]
    now = now or timezone.now()
    since = now - length
    width, height, pad = 600, 120, 4
    span = length.total_seconds()
    top = max([b.max_ms or 0 for b in series.buckets] + [b.avg_ms or 0 for b in series.buckets] + [1.0])

    def x(t: datetime) -> float:
        return round(pad + (width - 2 * pad) * max(0.0, min(1.0, (t - since).total_seconds() / span)), 1)

    def y(ms: float) -> float:
        return round(height - pad - (height - 2 * pad) * (ms / top), 1)

    ok = [b.max_ms for b in series.buckets if b.max_ms is not None]
    peak = f"; peak {max(ok):.0f} ms" if ok else ": no successful probes"
    bar = max(1.0, (width - 2 * pad) * bucket.total_seconds() / span)
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" preserveAspectRatio="none" role="img" '
        f'aria-label="Latency over the last {window}{peak}">',
        f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}"/>',
    ]
    for b in series.buckets:
        if b.failed:
            share = b.failed / b.probes
            h = round((height - 2 * pad) * share, 1)
            parts.append(
                f'<rect class="fail" x="{x(b.start)}" y="{round(height - pad - h, 1)}" '
                f'width="{round(bar, 1)}" height="{h}">'
                f"<title>{b.failed} of {b.probes} probes failed</title></rect>"
            )
    points = " ".join(
        f"{x(b.start + bucket / 2)},{y(b.avg_ms)}" for b in series.buckets if b.avg_ms is not None
    )
    if points:
        parts.append(f'<polyline class="line" points="{points}"/>')
    parts.append("</svg>")
    return "".join(parts)
