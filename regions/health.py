"""Health of live stages in every region: probe rounds (the probes themselves are
:mod:`regions.probes`), the up/down state machine, probe retention and Route 53's own view.
Incidents, and their flap damping, are :mod:`regions.incidents`; what alerts say,
:mod:`regions.alerts`.

A round probes every live placement concurrently on one event loop, records the results in a
few set-based statements, and opens or closes incidents for the placements that changed state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection as db_connection
from django.db import transaction
from django.db.models import F, OuterRef, Q, Subquery
from django.utils import timezone

from deployments.models import Stage

from .aws import route53
from .aws.session import AwsError
from .choices import HealthStatus
from .endpoints import health_url
from .incidents import alert_settled_flaps, close_incident, open_incident
from .models import AppRegion, Probe, Region, StagePlacement
from .probes import ProbeResult, ProbeTarget, probe_many, run_async

log = logging.getLogger(__name__)

# --- State ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthState:
    status: str
    failures: int
    successes: int


def advance(
    state: HealthState, ok: bool, *, failure_threshold: int, recovery_threshold: int
) -> tuple[HealthState, str | None]:
    """The state after one more probe result, and the transition it caused: ``"down"`` (it just
    went down), ``"up"`` (it recovered from down) or None. Becoming ``up`` from ``unknown`` is not a
    transition anyone is told about. Thresholds make flapping (ok, fail, ok, ...) change nothing."""
    if ok:
        successes, failures = state.successes + 1, 0
        status = HealthStatus.UP if successes >= max(1, recovery_threshold) else state.status
    else:
        successes, failures = 0, state.failures + 1
        status = HealthStatus.DOWN if failures >= max(1, failure_threshold) else state.status
    transition = None
    if status == HealthStatus.DOWN and state.status != HealthStatus.DOWN:
        transition = "down"
    elif status == HealthStatus.UP and state.status == HealthStatus.DOWN:
        transition = "up"
    return HealthState(str(status), failures, successes), transition


@dataclass
class RoundSummary:
    """What one probe round did."""

    probed: int = 0
    healthy: int = 0
    went_down: list[int] = field(default_factory=list)  # stage placement ids
    came_up: list[int] = field(default_factory=list)
    probe_seconds: float = 0.0
    total_seconds: float = 0.0


# What a round reads: enough to resolve the endpoint and judge the answer, nothing encrypted.
PROBE_FIELDS = (
    "version",
    "endpoint_url",
    "health_check_id",
    "health_status",
    "consecutive_failures",
    "consecutive_successes",
    "route53_status",
    "stage",
    "placement",
)
STAGE_FIELDS = (
    "name",
    "app__slug",
    "app__health_path",
    "app__health_expected_status",
    "app__health_expected_text",
    "app__team__slug",
)


def live_placements():
    """Stage placements that serve traffic (their alias points at a version), except those of a
    stage being taken down: from the moment its teardown starts nothing probes or alerts on it."""
    return StagePlacement.objects.exclude(version="").filter(stage__teardown_started_at__isnull=True)


def probe_timeout() -> float:
    """Seconds one probe of a round may take: ``HEALTH_PROBE_TIMEOUT``, but never more than
    80% of ``HEALTH_PROBE_INTERVAL``, so one hung endpoint cannot stretch a round past the next."""
    return min(settings.HEALTH_PROBE_TIMEOUT, settings.HEALTH_PROBE_INTERVAL * 0.8)


def probe_lease() -> float:
    """Seconds a round's claim on a placement lasts (``HEALTH_PROBE_LEASE``, default 60): while
    it holds, no other round probes the placement; a round that died leaves placements to the
    rounds after it once the lease is over."""
    return float(getattr(settings, "HEALTH_PROBE_LEASE", 60.0))


def run_probe_round(*, min_age: float | None = None, now: datetime | None = None) -> RoundSummary:
    """Probe every live stage placement not probed in the last ``min_age`` seconds (default half
    the probe interval), record the results, move health states, open and close incidents and
    notify channels (see :func:`flap_decision` for placements that keep going down and up).
    ``now``: the round's time (default: the clock; results are dated when recorded). Returns a
    summary.

    Placements are claimed with one conditional update that sets ``last_probe_at`` to the claim's
    expiry (this round's start plus :func:`probe_lease`), a time in the future, so no other round
    takes them while they are in flight, however long this round lasts. Recording the results
    sets ``last_probe_at`` back to the round's start: the schedule is anchored on when rounds
    start, so a slow or hung endpoint never delays the next probe of any placement."""
    started = time.perf_counter()
    round_at = now or timezone.now()
    if min_age is None:
        min_age = settings.HEALTH_PROBE_INTERVAL / 2
    cutoff = round_at - timedelta(seconds=min_age)
    claim = round_at + timedelta(seconds=probe_lease())
    live_placements().filter(Q(last_probe_at__isnull=True) | Q(last_probe_at__lte=cutoff)).update(
        last_probe_at=claim
    )
    claimed = list(live_placements().filter(last_probe_at=claim).only(*PROBE_FIELDS))
    # Thousands of placements share a few hundred stages and regions: load each once and attach
    # it (a select_related would build a stage, app, team, placement and region per row).
    stages = {
        s.pk: s
        for s in Stage.objects.filter(placements__last_probe_at=claim)
        .distinct()
        .select_related("app__team")
        .only(*STAGE_FIELDS)
    }
    # A few dozen regions: one object each, shared by every placement in it.
    regions = Region.objects.only("code").in_bulk()
    placements_by_pk = {
        p.pk: p for p in AppRegion.objects.filter(stages__last_probe_at=claim).distinct().only("region")
    }
    for placement in placements_by_pk.values():
        placement.region = regions[placement.region_id]
    for sp in claimed:
        sp.stage = stages[sp.stage_id]
        sp.placement = placements_by_pk[sp.placement_id]
    placements, targets, unprobed = [], [], []
    for sp in claimed:
        url = health_url(sp)
        if not url:
            unprobed.append(sp.pk)  # nothing to probe until the deploy records an endpoint
            continue
        app = sp.stage.app
        placements.append(sp)
        targets.append(ProbeTarget(url, app.health_expected_status, app.health_expected_text))
    summary = RoundSummary(probed=len(targets))
    if targets:
        probe_started = time.perf_counter()
        results = run_async(
            probe_many(targets, timeout=probe_timeout(), concurrency=settings.HEALTH_PROBE_CONCURRENCY)
        )
        summary.probe_seconds = time.perf_counter() - probe_started
        record_results(
            placements=placements,
            results=results,
            summary=summary,
            at=now,  # a caller's clock (tests, benchmarks) also dates the results
            claim=claim,
            anchor=round_at,
        )
    for ids in _chunks(unprobed):
        StagePlacement.objects.filter(pk__in=ids, last_probe_at=claim).update(last_probe_at=round_at)
    alert_settled_flaps(now=now)
    summary.total_seconds = time.perf_counter() - started
    return summary


UPDATE_CHUNK = 900  # ids per statement, under every database's limit on query parameters


def _chunks(ids: list[int]):
    for i in range(0, len(ids), UPDATE_CHUNK):
        yield ids[i : i + UPDATE_CHUNK]


def _still_claimed(claim: datetime) -> set[int]:
    """The placements that still carry this round's claim, locked until the transaction ends (on
    databases that lock rows). A placement whose lease ran out and that another round claimed
    is that round's to record. The claim's value (this round's start plus the lease) marks this
    round's placements alone, as it did when the round read them, so no list of ids is sent."""
    return set(
        StagePlacement.objects.select_for_update().filter(last_probe_at=claim).values_list("pk", flat=True)
    )


PROBE_COLUMNS = ("stage_placement", "ok", "status_code", "latency_ms", "error", "created_at")


def _insert_probes(rows: list[tuple[int, bool, int | None, float, str]], at: datetime) -> None:
    """Insert one Probe row per ``(stage placement id, ok, status code, latency, error)``, dated
    ``at``: with COPY on PostgreSQL, one executemany elsewhere. A round writes thousands of
    them; ``bulk_create`` spent a quarter of a second per 5,000 building model instances and
    quoting every value of its statements in Python."""
    meta = Probe._meta
    quote_name = db_connection.ops.quote_name
    table = quote_name(meta.db_table)
    columns = ", ".join(quote_name(meta.get_field(name).column) for name in PROBE_COLUMNS)
    with db_connection.cursor() as cursor:
        if db_connection.vendor == "postgresql":
            with cursor.cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row((*row, at))
            return
        created_at = meta.get_field("created_at").get_db_prep_save(at, db_connection)
        cursor.executemany(
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(PROBE_COLUMNS))})",  # noqa: S608 - names from the model
            [(*row, created_at) for row in rows],
        )


def record_results(
    *,
    placements: Sequence[StagePlacement],
    results: Sequence[ProbeResult],
    summary: RoundSummary | None = None,
    at: datetime | None = None,
    claim: datetime | None = None,
    anchor: datetime | None = None,
) -> RoundSummary:
    """Store one probe result per placement, advance their states, open/close incidents and
    notify. ``placements`` must be claimed by the caller (see :func:`run_probe_round`): with
    ``claim`` (the claim's ``last_probe_at`` value) only placements still carrying it are
    recorded, and every update is conditional on the state read with the claim, so a round
    whose lease ran out never counts a result twice. ``last_probe_at`` becomes ``anchor`` (the
    round's start; default ``at``, when the results are recorded).

    Most placements keep their status from one round to the next, so they are written in a few
    set-based updates (still healthy, still failing: counters moved with ``F()``, latency copied
    from the probe row just written); placements whose status changes are written in one update
    per old and new state. A per-row ``bulk_update`` of thousands of rows cost seconds per round."""
    summary = summary or RoundSummary(probed=len(results))
    at = at or timezone.now()
    anchor = anchor or at
    failure_threshold = settings.HEALTH_FAILURE_THRESHOLD
    recovery_threshold = settings.HEALTH_RECOVERY_THRESHOLD
    latency = Subquery(
        Probe.objects.filter(stage_placement=OuterRef("pk"), created_at=at).values("latency_ms")[:1]
    )
    with transaction.atomic():
        owned = _still_claimed(claim) if claim is not None else None
        guard = {"last_probe_at": claim} if claim is not None else {}
        transitions: list[tuple[StagePlacement, str, ProbeResult]] = []
        steady: dict[tuple[bool, str], list[int]] = {}
        changed: dict[tuple[HealthState, HealthState], list[int]] = {}
        probes: list[tuple[int, bool, int | None, float, str]] = []
        for sp, result in zip(placements, results, strict=True):
            if owned is not None and sp.pk not in owned:
                continue
            probes.append((sp.pk, result.ok, result.status_code, result.latency_ms, result.error))
            before = HealthState(sp.health_status, sp.consecutive_failures, sp.consecutive_successes)
            state, transition = advance(
                before, result.ok, failure_threshold=failure_threshold, recovery_threshold=recovery_threshold
            )
            sp.health_status = state.status
            sp.consecutive_failures = state.failures
            sp.consecutive_successes = state.successes
            sp.last_probe_at = anchor
            sp.last_latency_ms = result.latency_ms
            summary.healthy += result.ok
            if state.status != before.status:
                changed.setdefault((before, state), []).append(sp.pk)
            else:
                steady.setdefault((result.ok, before.status), []).append(sp.pk)
            if transition:
                transitions.append((sp, transition, result))
        _insert_probes(probes, at)
        for (ok, status), pks in steady.items():
            counters = (
                {"consecutive_successes": F("consecutive_successes") + 1, "consecutive_failures": 0}
                if ok
                else {"consecutive_failures": F("consecutive_failures") + 1, "consecutive_successes": 0}
            )
            for ids in _chunks(pks):
                StagePlacement.objects.filter(pk__in=ids, health_status=status, **guard).update(
                    **counters, last_probe_at=anchor, last_latency_ms=latency
                )
        # Changes come in groups too (every new placement turns up at once): one update per state.
        for (before, state), pks in changed.items():
            for ids in _chunks(pks):
                StagePlacement.objects.filter(
                    pk__in=ids,
                    health_status=before.status,
                    consecutive_failures=before.failures,
                    consecutive_successes=before.successes,
                    **guard,
                ).update(
                    health_status=state.status,
                    consecutive_failures=state.failures,
                    consecutive_successes=state.successes,
                    last_probe_at=anchor,
                    last_latency_ms=latency,
                )
        for sp, transition, result in transitions:
            if transition == "down":
                open_incident(stage_placement=sp, reason=result.error, at=at)
                summary.went_down.append(sp.pk)
            else:
                close_incident(stage_placement=sp, at=at)
                summary.came_up.append(sp.pk)
    return summary


def prune_probes(
    *, older_than_days: int | None = None, now: datetime | None = None, batch: int = 5000
) -> int:
    """Delete probe results older than ``HEALTH_PROBE_RETENTION_DAYS``, in batches so a large
    table is never locked for long. Returns how many were deleted."""
    days = settings.HEALTH_PROBE_RETENTION_DAYS if older_than_days is None else older_than_days
    cutoff = (now or timezone.now()) - timedelta(days=days)
    deleted = 0
    while True:
        ids = list(Probe.objects.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return deleted
        deleted += Probe.objects.filter(pk__in=ids).delete()[0]


def read_route53_statuses() -> int:
    """Read the Route 53 health check status (``Healthy``/``Unhealthy``/``Unknown``) of every live
    placement that has a check, and store it beside the probes' own view. Returns how many
    placements were read. Route 53 allows few requests per second, so this runs on its own
    slower schedule (``HEALTH_ROUTE53_INTERVAL``)."""
    read = 0
    placements = live_placements().exclude(health_check_id="").select_related("placement__region")
    for sp in placements:
        try:
            status = route53.health_check_status(sp.health_check_id, role_arn=sp.placement.region.role_arn)
        except AwsError as exc:
            status = f"Error: {exc.code}"
        status = status[:32]
        read += 1
        if status != sp.route53_status:
            StagePlacement.objects.filter(pk=sp.pk).update(route53_status=status)
    return read
