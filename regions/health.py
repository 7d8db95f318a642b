"""Health of live stages in every region: probes, the up/down state machine, incidents.

A probe is one ``GET`` of a stage's health path in a region: healthy when the status is the
app's expected one and, if the app sets one, the expected text is in the first 5,120 bytes of
the body (as Route 53's ``HTTPS_STR_MATCH`` checks). A round probes every live placement
concurrently on one uvloop event loop. Probes speak HTTP/1.1 from an ``asyncio.Protocol`` with
httptools' C parser rather than through an httpx client or asyncio streams: on a 2-core machine
httpx's per-request overhead caps one process near 1,000 probes/s, and a round must fit
thousands of placements in one 10-second interval. The probes of one round that go to the same
host share kept-alive connections (each placement still gets a request of its own), so a
region's stages cost one TCP and TLS handshake, not one each. Deliveries of alerts, which are
few, use httpx.

Connections go to an address that passed :mod:`controlplane.urlsafety` (resolved once per
host per round; each address in turn until one connects), with TLS verified against the host
name.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import string
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast
from urllib.parse import quote

import httptools
import uvloop
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db import connection as db_connection
from django.db.models import F, OuterRef, Q, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from controlplane import urlsafety
from controlplane.urlsafety import UnsafeURL
from deployments.models import Stage

from .choices import HealthStatus
from .endpoints import health_url
from .models import AppRegion, Incident, Probe, Region, StagePlacement

log = logging.getLogger(__name__)

BODY_LIMIT = 5120  # bytes of the body searched for the expected text, as Route 53 does
USER_AGENT = "controlplane-health/1"
T = TypeVar("T")


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome. ``error`` says why it failed (empty when ``ok``)."""

    ok: bool
    status_code: int | None
    latency_ms: float
    error: str = ""


@dataclass(frozen=True)
class ProbeTarget:
    url: str
    expected_status: int = 200
    expected_text: str = ""


# --- One probe ------------------------------------------------------------------------------


class InvalidResponse(Exception):
    """The endpoint's answer is not an HTTP/1.1 response that can be read."""


class _Stale(Exception):
    """A kept-alive connection closed before any byte of the answer: the server closed it while
    it was idle (its keep-alive timeout), so the request is sent again on a new connection."""


class _Connection(asyncio.Protocol):
    """One HTTP/1.1 client connection: one request at a time, the answer parsed by httptools
    (llhttp, the parser uvicorn uses) as it arrives. :meth:`request` returns a future of
    ``(status, body, reusable)``; ``reusable`` is true when the whole answer was read and the
    server keeps the connection open (HTTP/1.1 without ``Connection: close``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future | None = None
        self.open = False
        self.used = False  # it has answered a request before
        self._surplus = False  # the server began another answer that nobody asked for
        self._start()

    def _start(self) -> None:
        self._status = 0
        self._body = bytearray()
        self._framed = False  # Content-Length or Transfer-Encoding: the end is not the connection's
        self._headers_done = False
        self._received = False

    def request(self, data: bytes) -> asyncio.Future:
        self._start()
        self._waiter = self._loop.create_future()
        assert self._transport is not None
        self._transport.write(data)
        return self._waiter

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    def _finish(self, reusable: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((self._status, bytes(self._body[:BODY_LIMIT]), reusable and self.open))
        if not reusable:
            self.close()

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:
            self.close()  # bytes nobody asked for: the connection cannot be trusted for another request
            return
        self._received = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._finish(reusable=False)  # 101 Switching Protocols: judged as an unexpected status
        except httptools.HttpParserError as exc:
            self._fail(InvalidResponse(str(exc) or type(exc).__name__))
        else:
            if self._waiter is not None and len(self._body) >= BODY_LIMIT:
                self._finish(reusable=False)  # enough read; the rest is not worth the bytes
        if self._surplus:
            self.close()  # the parser is inside an answer to nothing: the next one would be misread

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if self._waiter is None:
            return
        if self._headers_done and not self._framed:
            self._finish(reusable=False)  # a body that ends with the connection (HTTP/1.0 style)
        elif self.used and not self._received:
            self._fail(_Stale())
        elif isinstance(exc, OSError):
            self._fail(exc)
        elif self._received:
            self._fail(InvalidResponse("the connection closed before the response was complete"))
        else:
            self._fail(InvalidResponse("the connection closed without a response"))

    # httptools callbacks

    def on_message_begin(self) -> None:
        if self._waiter is None:
            self._surplus = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self._status = self._parser.get_status_code()
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if len(self._body) < BODY_LIMIT:
            self._body += body[: BODY_LIMIT - len(self._body)]

    def on_message_complete(self) -> None:
        if self._waiter is None:
            return
        if 100 <= self._status < 200:
            self._start()  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            self._received = True
            return
        self.used = True
        self._finish(reusable=self._parser.should_keep_alive())


class _Session:
    """What the probes of one round share: each host resolved and checked once (every probe of a
    host waits on one lookup), and idle kept-alive connections per scheme, host and port as
    written in the URL (never per address: a connection made for one name is not reused for
    another name that shares an address). API Gateway serves every stage of an app in a region
    on one host, so most probes after the first of a host skip the TCP (and TLS) handshake."""

    def __init__(self) -> None:
        self._pending: dict[tuple[str, int], asyncio.Future] = {}
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}

    async def addresses(self, host: str, port: int) -> list[str]:
        key = (host, port)
        future = self._pending.get(key)
        if future is None:
            loop = asyncio.get_running_loop()
            future = self._pending[key] = loop.run_in_executor(None, urlsafety.resolve, host, port)
        # Shielded: a probe that times out waiting must not cancel the lookup the others wait on.
        return await asyncio.shield(future)

    def idle(self, key: tuple[str, str, int]) -> _Connection | None:
        """An idle connection for ``key`` still open, if there is one (the newest first)."""
        idle = self._idle.get(key)
        while idle:
            connection = idle.pop()
            if connection.open:
                return connection
        return None

    async def connect(self, target: urlsafety.Target) -> _Connection:
        """A new connection to ``target``'s host, to an address that passed the check (each in
        the resolver's order until one connects), with TLS verified against the host name."""
        addresses = await self.addresses(target.host, target.port)
        https = target.scheme == "https"
        loop = asyncio.get_running_loop()
        for i, address in enumerate(addresses):
            try:
                _, connection = await loop.create_connection(
                    lambda: _Connection(loop),
                    address,
                    target.port,
                    ssl=urlsafety.ssl_context() if https else None,
                    server_hostname=target.host if https else None,
                )
                return connection
            except OSError:  # ssl.SSLError included
                if i == len(addresses) - 1:
                    raise
        raise AssertionError("resolve() returns at least one address")  # pragma: no cover

    async def exchange(
        self, key: tuple[str, str, int], connection: _Connection, request: bytes
    ) -> tuple[int, bytes]:
        try:
            status, body, reusable = await connection.request(request)
        except BaseException:
            connection.close()  # a timeout (cancellation) included: the answer may still arrive
            raise
        if reusable:
            self._idle.setdefault(key, []).append(connection)
        return status, body

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()


def _request(target: urlsafety.Target) -> bytes:
    """The bytes of ``GET`` for ``target``: the path percent-encoded where a request line needs it
    (spaces, non-ASCII), the host IDNA-encoded. Raises UnsafeURL for a host that cannot be."""
    path = quote(target.path, safe=string.punctuation)
    try:
        authority = target.authority.encode("ascii")
    except UnicodeEncodeError:
        try:
            authority = target.authority.encode("idna")
        except UnicodeError:
            raise UnsafeURL(f"{target.authority} is not a valid host name.")
    return b"GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\n\r\n" % (
        path.encode("ascii"),
        authority,
        USER_AGENT.encode(),
    )


async def _fetch(url: str, session: _Session) -> tuple[int, bytes]:
    """Status and the first BODY_LIMIT bytes of ``GET url``, on an idle connection of the
    session to the same host when there is one. Raises UnsafeURL, OSError (ssl.SSLError
    included) and InvalidResponse."""
    target = urlsafety.parse(url)
    request = _request(target)
    key = (target.scheme, target.host, target.port)
    connection = session.idle(key)
    if connection is not None:
        try:
            return await session.exchange(key, connection, request)
        except _Stale:
            pass  # closed by the server while idle; nothing was answered, so ask on a new one
    return await session.exchange(key, await session.connect(target), request)


def judge(status: int, body: bytes, *, expected_status: int, expected_text: str) -> str:
    """``""`` when a response is healthy, otherwise why not."""
    if status != expected_status:
        return f"HTTP {status} (expected {expected_status})"
    if expected_text and expected_text not in body.decode("utf-8", errors="replace"):
        return f"the body does not contain {expected_text!r}"
    return ""


async def probe(
    url: str,
    *,
    expected_status: int = 200,
    expected_text: str = "",
    timeout: float,
    session: _Session | None = None,
) -> ProbeResult:
    """Probe ``url`` once (on ``session``'s connections, or on a connection of its own). Never
    raises for what the endpoint or the network does."""
    started = time.perf_counter()
    status: int | None = None
    own = session is None
    session = session or _Session()
    try:
        async with asyncio.timeout(timeout):
            status, body = await _fetch(url, session)
        error = judge(status, body, expected_status=expected_status, expected_text=expected_text)
    except TimeoutError:
        error = f"timed out after {timeout:g}s"
    except UnsafeURL as exc:
        error = f"refused: {exc.detail}"
    except ConnectionRefusedError:
        error = "connection refused"
    except ssl.SSLError as exc:
        error = f"TLS error: {exc.reason or exc}"
    except ssl.CertificateError as exc:
        error = f"TLS certificate error: {exc}"
    except OSError as exc:
        error = f"connection failed: {exc.strerror or exc}"
    except InvalidResponse as exc:
        error = f"invalid HTTP response: {exc}"
    finally:
        if own:
            session.close()
    latency = round((time.perf_counter() - started) * 1000, 2)
    return ProbeResult(ok=not error, status_code=status or None, latency_ms=latency, error=error[:500])


async def probe_many(
    targets: Sequence[ProbeTarget], *, timeout: float, concurrency: int
) -> list[ProbeResult]:
    """Probe every target, at most ``concurrency`` at once; results in the targets' order. Each
    target gets a request of its own; requests to one host share kept-alive connections."""
    session = _Session()
    results: list[ProbeResult | None] = [None] * len(targets)
    pending = iter(enumerate(targets))

    # ``concurrency`` workers take the next target as each finishes one: the same bound as a
    # semaphore around one task per target, without thousands of tasks waiting on it.
    async def worker() -> None:
        for i, target in pending:
            results[i] = await probe(
                target.url,
                expected_status=target.expected_status,
                expected_text=target.expected_text,
                timeout=timeout,
                session=session,
            )

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(targets))))))
    finally:
        session.close()
    await asyncio.sleep(0)  # let closing transports finish before the loop goes away
    return cast(list[ProbeResult], results)  # every worker filled its slots


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on a uvloop event loop (a third more probes per second than
    asyncio's own loop here) from synchronous code, also when this thread already runs an event
    loop (then on a thread of its own)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run_async, coro).result()


def check_url(
    url: str, *, expected_status: int = 200, expected_text: str = "", timeout: float
) -> ProbeResult:
    """Probe ``url`` once, synchronously (the deploy's verify step and rollout health gates)."""
    return run_async(
        probe(url, expected_status=expected_status, expected_text=expected_text, timeout=timeout)
    )


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
    """Stage placements that serve traffic (their alias points at a version)."""
    return StagePlacement.objects.exclude(version="")


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


# --- Incidents ------------------------------------------------------------------------------


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
    from controlplane import notify

    decision = flap_state(incident.stage_placement, at)
    if decision == "alert":
        notify.notify_incident(incident=incident, event=event)
    elif decision == "flapping":
        log.warning("%s is flapping; alerts about it pause", incident.stage_placement)
        notify.notify_incident(incident=incident, event="health_down", flap="flapping")


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
    from controlplane import notify
    from controlplane.models import Notification

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
        notify.notify_incident(incident=incident, event="health_down", flap="settled")
        sent += 1
    return sent


def send_incident_reminders(*, now: datetime | None = None) -> int:
    """Remind channels of incidents still open ``HEALTH_REMINDER_MINUTES`` after the last alert
    (0: never). Returns how many reminders were sent."""
    from controlplane import notify

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
            notify.notify_incident(incident=incident, event="health_down", reminder=True)
            sent += 1
    return sent


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


def close_incidents_of_retired_placements(*, now: datetime | None = None) -> int:
    """Close open incidents of placements that no longer serve (their stage left the region):
    nothing will probe them again. Returns how many were closed; nobody is notified."""
    return Incident.objects.filter(closed_at__isnull=True, stage_placement__version="").update(
        closed_at=now or timezone.now()
    )


def read_route53_statuses() -> int:
    """Read the Route 53 health check status (``Healthy``/``Unhealthy``/``Unknown``) of every live
    placement that has a check, and store it beside the probes' own view. Returns how many
    placements were read. Route 53 allows few requests per second, so this runs on its own
    slower schedule (``HEALTH_ROUTE53_INTERVAL``)."""
    from .aws import route53
    from .aws.session import AwsError

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
