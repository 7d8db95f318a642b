"""The HTTP probe client: one ``GET`` of a health URL, or thousands at once. No models.

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
import ssl
import string
import time
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import quote

import httptools
import uvloop

from controlplane import urlsafety
from controlplane.urlsafety import UnsafeURL

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


def probe_repeatedly(
    targets: Sequence[ProbeTarget], *, attempts: int, interval: float, timeout: float, steady: bool = False
) -> dict[str, ProbeResult]:
    """Probe ``targets`` concurrently up to ``attempts`` times, ``interval`` seconds apart; returns
    ``{url: its last result}``. By default a target that passes is done and one that fails is
    tried again (a deploy's verify, a wave's health gate). ``steady``: every target must pass
    every try, and the first failure ends the probing (a canary must hold)."""
    last: dict[str, ProbeResult] = {}
    pending = list(targets)
    for attempt in range(max(1, attempts)):
        if attempt:
            time.sleep(interval)
        results = run_async(probe_many(pending, timeout=timeout, concurrency=len(pending)))
        last.update((t.url, r) for t, r in zip(pending, results, strict=True))
        failed = [t for t, r in zip(pending, results, strict=True) if not r.ok]
        if not failed or (steady and failed):
            break
        if not steady:
            pending = failed
    return last
