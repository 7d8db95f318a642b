"""Health history: latency over time, uptime and incidents of an app's stages per region.

The last hour is downsampled in the database (one statement groups the hour's probes into
1-minute buckets). A day or a week is read from 15-minute rollups (``ProbeRollup``), which this
module fills from the probes of buckets that are over, the first time a chart needs them: a
week is at most 672 rows per stage placement however many probes there are, and the history
outlives the pruning of old probes. Raw probes are read by the ``(stage_placement, -created_at)``
index, one range per placement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db import connection
from django.db.models import OuterRef, Prefetch, Q, Subquery
from django.utils import timezone

from controlplane.models import Notification

from .models import Incident, Probe, ProbeRollup, StagePlacement

WINDOWS = {
    # name: (length, bucket)
    "hour": (timedelta(hours=1), timedelta(minutes=1)),
    "day": (timedelta(days=1), timedelta(minutes=15)),
    "week": (timedelta(days=7), timedelta(hours=1)),
}
DEFAULT_WINDOW = "day"
ROLLUP = timedelta(minutes=15)  # the rollup table's bucket (a divisor of every longer bucket)
ROLLUP_GRACE = timedelta(minutes=2)  # a bucket is rolled up once it has been over this long


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
    """SQL for the bucket number (epoch seconds // ``seconds``) of a probe's ``created_at``."""
    column = "created_at"
    if connection.vendor == "postgresql":
        return f"floor(extract(epoch from {column}) / {seconds})"
    if connection.vendor == "sqlite":
        return f"cast(strftime('%%s', {column}) as integer) / {seconds}"
    return f"floor(unix_timestamp({column}) / {seconds})"


def _floor(moment: datetime, step: timedelta) -> datetime:
    seconds = int(step.total_seconds())
    return datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, tz=UTC)


def _aggregate(ranges: dict[int, datetime], *, seconds: int, until: datetime | None = None) -> list[tuple]:
    """``(stage placement id, bucket start, probes, failed, latency sum, latency max)`` of the raw
    probes of each placement from its own start time, in ``seconds`` buckets: one statement, one
    index range per placement."""
    if not ranges:
        return []
    table = Probe._meta.db_table
    where = " OR ".join(["(stage_placement_id = %s AND created_at >= %s)"] * len(ranges))
    params: list = [value for pk, since in ranges.items() for value in (pk, since)]
    if until is not None:
        where = f"({where}) AND created_at < %s"
        params.append(until)
    key = _bucket_sql(seconds)
    sql = (
        f"SELECT stage_placement_id, {key} AS b, COUNT(*), "  # noqa: S608 - names from the model
        f"SUM(CASE WHEN ok THEN 0 ELSE 1 END), "
        f"SUM(CASE WHEN ok THEN latency_ms END), MAX(CASE WHEN ok THEN latency_ms END) "
        f"FROM {table} WHERE {where} GROUP BY stage_placement_id, b"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [
            (
                sp,
                datetime.fromtimestamp(int(b) * seconds, tz=UTC),
                int(n),
                int(failed or 0),
                float(total or 0),
                peak,
            )
            for sp, b, n, failed, total, peak in cursor.fetchall()
        ]


def latency_series(
    stage_placement_ids: list[int], *, window: str = DEFAULT_WINDOW, now: datetime | None = None
) -> dict[int, Series]:
    """``{stage placement id: Series}`` for ``window`` (hour, day or week).

    The last hour is read from the probes (one statement). A day or a week is read from the
    15-minute rollups, plus the probes since each placement's last rollup; buckets that are over
    (with a grace for late rows) and not yet rolled up are stored on the way, so steady state is
    two small statements whatever the number of probes."""
    length, bucket = WINDOWS[window]
    now = now or timezone.now()
    since = now - length
    ids = list(stage_placement_ids)
    sums: dict[tuple[int, datetime], list] = {}

    def add(sp: int, start: datetime, n: int, failed: int, total: float, peak) -> None:
        key = (sp, _floor(start, bucket))
        row = sums.setdefault(key, [0, 0, 0.0, None])
        row[0] += n
        row[1] += failed
        row[2] += total
        if peak is not None:
            row[3] = peak if row[3] is None else max(row[3], peak)

    if bucket < ROLLUP:
        for row in _aggregate(dict.fromkeys(ids, since), seconds=int(bucket.total_seconds())):
            add(*row)
    elif ids:
        since = _floor(since, ROLLUP)
        last: dict[int, datetime] = {}
        for r in ProbeRollup.objects.filter(stage_placement_id__in=ids, bucket__gte=since).values_list(
            "stage_placement_id", "bucket", "probes", "failed", "latency_sum_ms", "latency_max_ms"
        ):
            add(*r)
            last[r[0]] = max(last.get(r[0], r[1]), r[1])
        fresh = {pk: last[pk] + ROLLUP if pk in last else since for pk in ids}
        done = _floor(now - ROLLUP_GRACE, ROLLUP)  # buckets before this one are over
        new = []
        for row in _aggregate(fresh, seconds=int(ROLLUP.total_seconds())):
            add(*row)
            sp, start, n, failed, total, peak = row
            if start + ROLLUP <= done:
                new.append(
                    ProbeRollup(
                        stage_placement_id=sp, bucket=start, probes=n, failed=failed,
                        latency_sum_ms=total, latency_max_ms=peak,
                    )
                )  # fmt: skip
        if new:
            ProbeRollup.objects.bulk_create(new, ignore_conflicts=True)
    out = {pk: Series(stage_placement_id=pk) for pk in ids}
    for (sp, start), (n, failed, total, peak) in sorted(sums.items(), key=lambda item: item[0][1]):
        ok = n - failed
        out[sp].buckets.append(
            Bucket(
                start=start,
                probes=n,
                failed=failed,
                avg_ms=total / ok if ok else None,
                max_ms=float(peak) if peak is not None else None,
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
