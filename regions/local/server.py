"""The local regions' server: one asyncio process serving every region's REST APIs (a port per
region), the global endpoints of stages with a domain (Route 53 latency routing with health
checks, on the base port) and the admin API (faults, status). AWS state is read from the AWS the
control plane deploys to (moto in the dev stack) through ``regions/aws/serving.py``."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import shutil
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import httptools

from regions.aws import serving
from regions.aws.session import AwsError

from . import events, faults, rtt
from .code import UnsafeArchive, unpack
from .events import Request
from .pool import RUNTIMES, FunctionSpec, Isolation, Pool, UnknownRuntime

log = logging.getLogger("regions.local")

SERVED_BY = "X-Served-By-Region"
ROUTE_TTL_S = 5.0  # how long a stage's methods are trusted before reading them again
ALIAS_TTL_S = 1.0  # aliases move (deploys, canaries, rollbacks): read again after this
DOMAIN_TTL_S = 5.0
VERSION_TTL_S = 30.0
Response = tuple[int, list[tuple[str, str]] | dict, bytes]


@dataclass
class Config:
    host: str
    base_port: int
    ports: dict[str, int]
    data_dir: Path
    aws_endpoint: str = ""
    max_workers: int = 32
    max_per_version: int = 4
    idle_s: float = 300.0
    client_region: str = "us-east-1"
    check_interval_s: float = 0.0  # 0: each health check's own RequestInterval
    account_id: str = "123456789012"
    sandboxed: bool = True
    # Where versions are unpacked and the bootstraps copied: a folder the sandboxes' uids can read
    # (``controlplane.sandbox.workdir()``); the data folder when not sandboxed.
    code_root: Path | None = None


class Cache:
    """Values loaded by a coroutine, one load at a time per key; an expired value is still answered
    while it is read again (as a DNS or SDK cache would)."""

    def __init__(self, ttl: float, *, stale_ok: bool = True) -> None:
        self.ttl, self.stale_ok = ttl, stale_ok
        self.data: dict = {}
        self.loading: dict = {}

    async def get(self, key, load):
        hit = self.data.get(key)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        task = self.loading.get(key)
        if task is None:
            task = asyncio.ensure_future(self._load(key, load))
            self.loading[key] = task
        if hit is not None and self.stale_ok:
            # Nobody awaits this load: a failure is retried at the next request, not reported.
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
            return hit[1]
        return await asyncio.shield(task)

    async def _load(self, key, load):
        try:
            value = await load()
            self.data[key] = (time.monotonic() + self.ttl, value)
            return value
        finally:
            self.loading.pop(key, None)

    def clear(self) -> None:
        self.data.clear()


@dataclass
class Checker:
    """One Route 53 health check as its checkers see it: healthy until ``failure_threshold``
    requests in a row fail, healthy again after as many succeed."""

    check: serving.HealthCheck
    healthy: bool = True
    failures: int = 0
    successes: int = 0
    last_error: str = ""
    last_checked: float = 0.0
    task: asyncio.Task | None = field(default=None, repr=False)


class LocalRegions:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.by_port = {port: code for code, port in config.ports.items()}
        self.executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="aws")
        self.routes = Cache(ROUTE_TTL_S)
        self.aliases = Cache(ALIAS_TTL_S)
        # Versions are immutable, but a function made again under the same name numbers its
        # versions from 1 again: the configuration (with the code's digest) is read again now and then.
        self.versions = Cache(VERSION_TTL_S, stale_ok=False)
        self.domains = Cache(DOMAIN_TTL_S)
        self.mappings = Cache(DOMAIN_TTL_S)
        self.faults = faults.Faults()
        self.checkers: dict[str, Checker] = {}
        self.servers: dict[str, asyncio.base_events.Server] = {}
        self.connections: dict[str, set] = {}
        self.logs: dict[tuple, object] = {}
        self.code_dir = config.code_root or (config.data_dir / "code")
        self.log_dir = config.data_dir / "logs"
        aws_port = urlparse(config.aws_endpoint).port if config.aws_endpoint else None
        runtimes = RUNTIMES
        if config.code_root is not None:
            runtimes = config.code_root / "_runtimes"
            shutil.copytree(
                RUNTIMES, runtimes, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__")
            )
        self.pool = Pool(
            max_workers=config.max_workers,
            idle_s=config.idle_s,
            aws_endpoint=config.aws_endpoint,
            emit=self.emit,
            max_per_version=config.max_per_version,
            isolation=Isolation(
                sandboxed=config.sandboxed,
                loopback_ports=(aws_port,) if aws_port else (),
                runtimes=runtimes,
                readonly=tuple(dict.fromkeys((str(runtimes), str(self.code_dir)))),
            ),
        )

    # --- AWS reads (blocking boto3 calls on a thread pool) -------------------------------------

    async def _aws(self, func, *args):
        return await asyncio.get_running_loop().run_in_executor(self.executor, func, *args)

    async def stage_route(self, region: str, api_id: str, stage: str):
        return await self.routes.get(
            (region, api_id, stage), lambda: self._aws(serving.stage_route, region, api_id, stage)
        )

    async def alias(self, region: str, function: str, alias: str):
        return await self.aliases.get(
            (region, function, alias), lambda: self._aws(serving.alias_routing, region, function, alias)
        )

    async def spec(self, region: str, function: str, version: str) -> FunctionSpec | None:
        async def load():
            code = await self._aws(serving.version_code, region, function, version)
            if code is None:
                return None
            digest = code.code_sha256.replace("/", "_").replace("+", "-").rstrip("=")
            target = self.code_dir / region / function / f"{code.version}-{digest}"
            if not target.is_dir():
                data = await self._aws(serving.code_bytes, region, code.code_location, code.code_sha256)
                if not data:
                    raise UnsafeArchive(f"the code of {function}:{version} is not in this region's buckets")
                await self._aws(unpack, data, target)
            return FunctionSpec(
                region=region, function_name=function, version=code.version, runtime=code.runtime,
                handler=code.handler, memory_mb=code.memory_mb, timeout_s=code.timeout_s,
                code_dir=str(target), function_arn=code.function_arn, code_sha256=code.code_sha256,
                env=code.env,
            )  # fmt: skip

        return await self.versions.get((region, function, version), load)

    # --- logs ---------------------------------------------------------------------------------

    def emit(self, spec: FunctionSpec, line: str) -> None:
        """A line of a function's output: to the stack's output, prefixed with region and function,
        and to the version's log file (``<data>/logs/<region>/<function>/<version>.log``)."""
        sys.stdout.write(f"[{spec.region} {spec.function_name}:{spec.version}] {line}\n")
        sys.stdout.flush()
        key = spec.key
        handle = self.logs.get(key)
        if handle is None:
            path = self.log_dir / spec.region / spec.function_name / f"{spec.version}.log"
            path.parent.mkdir(parents=True, exist_ok=True)
            handle = self.logs[key] = path.open("a", buffering=1, encoding="utf-8")
        handle.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {line}\n")

    def say(self, message: str) -> None:
        sys.stdout.write(message + "\n")
        sys.stdout.flush()

    # --- a regional request --------------------------------------------------------------------

    async def regional(self, region: str, request: Request) -> Response | None:
        """A request to a region's port: ``/<api>/<stage>/<path>``, or ``/<stage>/<path>`` with the
        API's execute-api host. None: close the connection without answering."""
        host = request.header("host").split(":", 1)[0].lower()
        parts = request.path.lstrip("/").split("/", 2 if ".execute-api." not in host else 1)
        if ".execute-api." in host:
            api_id = host.split(".", 1)[0]
            if host.split(".")[2:3] != [region]:
                return events.FORBIDDEN
            rest = parts
        else:
            api_id, rest = parts[0], parts[1:]
        if not api_id or not rest or not rest[0]:
            return events.FORBIDDEN
        stage, proxy = rest[0], (rest[1] if len(rest) > 1 else "")
        return await self.serve_api(region, api_id, stage, proxy, request)

    async def serve_api(
        self, region: str, api_id: str, stage: str, proxy: str, request: Request, domain: str = ""
    ) -> Response | None:
        try:
            route = await self.stage_route(region, api_id, stage)
        except AwsError as exc:
            log.warning("%s: reading API %s failed: %s", region, api_id, exc)
            return events.INTERNAL_ERROR
        if route is None:
            return events.FORBIDDEN
        resource = "/" if not proxy else "/{proxy+}"
        target = route.resources.get(resource)
        if target is None:
            return events.FORBIDDEN
        function, qualifier = target
        fault = (
            self.faults.find(region=region, function_name=function, stage=stage)
            if self.faults.items
            else None
        )
        if fault is not None:
            early = await self.apply_fault(fault)
            if early is not False:
                return early
        if qualifier.startswith("${stageVariables.") and qualifier.endswith("}"):
            qualifier = route.variables.get(qualifier[len("${stageVariables.") : -1], "")
        return await self.invoke(region, function, qualifier, stage, proxy, request, route, resource, domain)

    async def apply_fault(self, fault: faults.Fault):
        """The answer a fault forces (None: drop the connection), or False to go on."""
        if fault.mode == "down":
            return None
        if fault.mode == "hang":
            await asyncio.Event().wait()  # until the client gives up and the task is cancelled
        if fault.mode == "slow":
            await asyncio.sleep(fault.ms / 1000)
            return False
        if fault.trips():
            return 503, {"content-type": "application/json"}, b'{"message": "Service Unavailable"}'
        return False

    async def invoke(self, region, function, qualifier, stage, proxy, request, route, resource, domain):
        try:
            alias = await self.alias(region, function, qualifier or "$LATEST")
        except AwsError as exc:
            log.warning("%s: reading alias %s:%s failed: %s", region, function, qualifier, exc)
            return events.INTERNAL_ERROR
        if alias is None:
            self.say(f"[{region} {function}] no alias {qualifier!r}: 502")
            return events.INTERNAL_ERROR
        version, weights = alias
        if weights:
            draw = random.random()
            for other, weight in weights.items():
                if draw < weight:
                    version = other
                    break
                draw -= weight
        try:
            spec = await self.spec(region, function, version)
        except (UnsafeArchive, AwsError, OSError) as exc:
            self.say(f"[{region} {function}:{version}] cannot load the code: {exc}")
            self.versions.data.pop((region, function, version), None)
            return events.INTERNAL_ERROR
        if spec is None:
            return events.INTERNAL_ERROR
        event = events.proxy_event(
            request, stage=stage, resource=resource, proxy=proxy, stage_variables=route.variables,
            rest_api_id=route.rest_api_id, account_id=self.config.account_id, domain=domain,
        )  # fmt: skip
        timeout = min(float(spec.timeout_s or 3), events.INTEGRATION_TIMEOUT_S)
        context = {
            "aws_request_id": request.request_id,
            "invoked_function_arn": f"{spec.function_arn}:{qualifier}" if qualifier else spec.function_arn,
            "deadline_ms": int((time.time() + timeout) * 1000),
        }
        payload = json.dumps({"event": event, "context": context}, separators=(",", ":")).encode()
        try:
            outcome = await self.pool.invoke(spec, payload, timeout)
        except UnknownRuntime as exc:
            self.emit(spec, f"Runtime.InvalidRuntime: {exc}")
            return events.INTERNAL_ERROR
        if outcome.kind == "timeout":
            return events.TIMED_OUT
        if outcome.kind != "ok":
            return events.INTERNAL_ERROR
        mapped = events.proxy_response(outcome.value)
        if mapped is None:
            self.emit(spec, "Execution failed due to configuration error: Malformed Lambda proxy response")
            return events.INTERNAL_ERROR
        return mapped

    # --- the global endpoint -------------------------------------------------------------------

    async def domain_targets(self, domain: str) -> list[tuple[str, str]]:
        """``[(region, health check id)]`` of a domain's latency records."""

        async def load():
            zone = await self._aws(serving.zone_for, domain)
            if not zone:
                return []
            records = await self._aws(serving.latency_records, zone, domain)
            return [(r["region"], r["health_check_id"]) for r in records if r["region"] in self.config.ports]

        targets = await self.domains.get(domain, load)
        for _, check_id in targets:
            if check_id and check_id not in self.checkers:
                await self.start_checker(check_id)
        return targets

    def is_healthy(self, check_id: str) -> bool:
        checker = self.checkers.get(check_id)
        return checker is None or checker.healthy

    def choose(self, targets: list[tuple[str, str]], client_region: str) -> str | None:
        """The nearest region to ``client_region`` whose health check passes; when none passes,
        the nearest of all (Route 53 answers as if all were healthy)."""
        healthy = [region for region, check in targets if not check or self.is_healthy(check)]
        candidates = healthy or [region for region, _ in targets]
        if not candidates:
            return None
        return rtt.nearest(client_region, candidates)[0]

    async def global_request(self, domain: str, path: str, request: Request) -> Response | None:
        targets = await self.domain_targets(domain)
        client_region = request.header("x-client-region") or self.config.client_region
        if client_region not in rtt.LOCATIONS:
            return (
                400,
                {"content-type": "application/json"},
                events.json_body(
                    {
                        "code": "unknown_client_region",
                        "detail": f"X-Client-Region {client_region!r} is no AWS region",
                    }
                ),
            )
        region = self.choose(targets, client_region)
        if region is None:
            return (
                404,
                {"content-type": "application/json"},
                events.json_body(
                    {
                        "code": "unknown_domain",
                        "detail": f"no latency records for {domain} in any hosted zone",
                    }
                ),
            )
        if self.faults.region_down(region):
            return None  # the client was sent to a region that refuses connections
        mapping = await self.mappings.get(
            (region, domain), lambda: self._aws(serving.base_path_target, region, domain, "")
        )
        if mapping is None:
            return events.FORBIDDEN
        api_id, stage = mapping
        answer = await self.serve_api(region, api_id, stage, path.lstrip("/"), request, domain=domain)
        if answer is None:
            return None
        status, headers, body = answer
        headers = list(headers.items()) if isinstance(headers, dict) else list(headers)
        return status, headers + [(SERVED_BY, region)], body

    # --- health checkers -----------------------------------------------------------------------

    async def start_checker(self, check_id: str) -> None:
        check = await self._aws(serving.health_check, check_id)
        if check is None or check_id in self.checkers:
            return
        checker = self.checkers[check_id] = Checker(check)
        checker.task = asyncio.ensure_future(self._check_loop(checker))

    def _check_target(self, check: serving.HealthCheck) -> tuple[str, int] | None:
        """The local region port that answers for a health check's host."""
        labels = check.fqdn.lower().split(".")
        if len(labels) > 2 and labels[1] == "execute-api" and labels[2] in self.config.ports:
            return self.config.host, self.config.ports[labels[2]]
        return None

    async def _check_loop(self, checker: Checker) -> None:
        refreshed = time.monotonic()
        while True:
            interval = self.config.check_interval_s or checker.check.interval_s
            ok, error = await self.probe(checker.check, timeout=min(4.0, max(interval, 0.5)))
            checker.last_checked = time.time()
            if ok:
                checker.successes, checker.failures, checker.last_error = checker.successes + 1, 0, ""
                if not checker.healthy and checker.successes >= checker.check.failure_threshold:
                    checker.healthy = True
                    self.say(
                        f"[route53] health check {checker.check.id} ({checker.check.fqdn}) is healthy again"
                    )
            else:
                checker.failures, checker.successes, checker.last_error = checker.failures + 1, 0, error
                if checker.healthy and checker.failures >= checker.check.failure_threshold:
                    checker.healthy = False
                    self.say(
                        f"[route53] health check {checker.check.id} ({checker.check.fqdn}) is unhealthy "
                        f"after {checker.failures} failed checks: {error}"
                    )
            await asyncio.sleep(interval)
            if time.monotonic() - refreshed > 30:
                refreshed = time.monotonic()
                try:
                    fresh = await self._aws(serving.health_check, checker.check.id)
                except AwsError:
                    fresh = checker.check
                if fresh is None:
                    self.checkers.pop(checker.check.id, None)
                    return
                checker.check = fresh

    async def probe(self, check: serving.HealthCheck, *, timeout: float) -> tuple[bool, str]:
        """One request as a Route 53 checker makes it: healthy on a 2xx or 3xx answer (and, for
        a STR_MATCH check, the string within the first 5,120 bytes of the body)."""
        target = self._check_target(check)
        if target is None:
            return False, f"{check.fqdn} is not served by the local regions"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(*target), timeout)
        except (OSError, TimeoutError) as exc:
            return False, f"connection failed: {exc.__class__.__name__}"
        try:
            writer.write(
                f"GET {check.path} HTTP/1.1\r\nHost: {check.fqdn}\r\n"
                "User-Agent: Amazon-Route53-Health-Check-Service\r\nConnection: close\r\n\r\n".encode()
            )
            data = await asyncio.wait_for(reader.read(5120 + 4096), timeout)
        except (OSError, TimeoutError) as exc:
            return False, f"no answer: {exc.__class__.__name__}"
        finally:
            writer.close()
        head, _, body = data.partition(b"\r\n\r\n")
        try:
            status = int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return False, "not an HTTP answer"
        if not 200 <= status < 400:
            return False, f"status {status}"
        if check.search_string and check.search_string.encode() not in body[:5120]:
            return False, "search string not found"
        return True, ""

    # --- admin API -----------------------------------------------------------------------------

    def status(self) -> dict:
        return {
            "sandboxed": self.config.sandboxed,
            "regions": {
                code: f"http://{self.config.host}:{port}" for code, port in self.config.ports.items()
            },
            "down": sorted(code for code in self.config.ports if self.faults.region_down(code)),
            "faults": [f.as_dict() for f in self.faults.items],
            "health_checks": {
                c.check.id: {
                    "fqdn": c.check.fqdn,
                    "path": c.check.path,
                    "healthy": c.healthy,
                    "interval_s": self.config.check_interval_s or c.check.interval_s,
                    "failure_threshold": c.check.failure_threshold,
                    "last_error": c.last_error,
                }
                for c in self.checkers.values()
            },  # fmt: skip
            "workers": [
                {
                    "region": w.spec.region,
                    "function": w.spec.function_name,
                    "version": w.spec.version,
                    "pid": w.proc.pid,
                    "rss_kb": w.rss_kb(),
                }
                for w in self.pool.workers()
            ],  # fmt: skip
        }

    async def admin(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        if path == "/_status" and request.method == "GET":
            return _json(200, self.status())
        if path != "/_faults":
            return _json(404, {"code": "not_found", "detail": f"no admin resource {request.path}"})
        if request.method == "GET":
            return _json(200, {"faults": [f.as_dict() for f in self.faults.items]})
        if request.method == "POST":
            try:
                fault = faults.parse(json.loads(request.body or b"null"), regions=set(self.config.ports))
            except (ValueError, faults.BadFault) as exc:
                return _json(400, {"code": "invalid_fault", "detail": str(exc)})
            self.faults.add(fault)
            await self.sync_listeners()
            self.say(
                f"[faults] {fault.region} {fault.mode}"
                + (f" ({fault.app} {fault.stage})" if fault.app else "")
            )
            return _json(201, fault.as_dict())
        if request.method == "DELETE":
            region = (parse_qs(request.query).get("region") or [""])[0]
            gone = self.faults.clear(region)
            await self.sync_listeners()
            self.say(f"[faults] cleared {len(gone)} fault(s)" + (f" in {region}" if region else ""))
            return _json(200, {"cleared": [f.as_dict() for f in gone]})
        return _json(405, {"code": "method_not_allowed", "detail": f"{request.method} is not allowed here"})

    # --- listeners -----------------------------------------------------------------------------

    async def listen(self, region: str | None, port: int) -> asyncio.base_events.Server:
        loop = asyncio.get_running_loop()
        handler = (lambda req: self.regional(region, req)) if region else self.front
        conns = self.connections.setdefault(region or "", set())
        return await loop.create_server(
            lambda: HttpProtocol(handler, conns, region or ""),
            self.config.host,
            port,
            reuse_address=True,
            backlog=1024,
        )

    async def sync_listeners(self) -> None:
        """A region that is down refuses connections: its listener is closed (and its open
        connections dropped); it listens again when the fault goes."""
        for code, port in self.config.ports.items():
            down = self.faults.region_down(code)
            if down and code in self.servers:
                self.servers.pop(code).close()
                for conn in list(self.connections.get(code, ())):
                    conn.transport.abort()
            elif not down and code not in self.servers:
                self.servers[code] = await self.listen(code, port)

    async def front(self, request: Request) -> Response | None:
        """The base port: the admin API (``/_...``) and global endpoints (by Host or ``/<domain>/``)."""
        if request.path.startswith("/_"):
            return await self.admin(request)
        host = request.header("host").split(":", 1)[0].lower()
        if "." in host and not host.replace(".", "").isdigit() and host != "localhost":
            return await self.global_request(host, request.path, request)
        domain, _, rest = request.path.lstrip("/").partition("/")
        if "." not in domain:
            return _json(404, {"code": "not_found", "detail": "ask /<domain>/<path>, or /_status"})
        return await self.global_request(domain.lower(), "/" + rest, request)

    async def housekeeping(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if self.faults.expire():
                self.say("[faults] a fault expired")
                await self.sync_listeners()
            if int(time.monotonic() * 4) % 4 == 0:  # once a second
                reaped = self.pool.reap()
                if reaped:
                    self.say(f"[pool] stopped {reaped} idle worker(s)")

    async def start(self) -> None:
        self.front_server = await self.listen(None, self.config.base_port)
        await self.sync_listeners()
        self.housekeeper = asyncio.ensure_future(self.housekeeping())

    def close(self) -> None:
        for server in [self.front_server, *self.servers.values()]:
            server.close()
        for checker in self.checkers.values():
            if checker.task:
                checker.task.cancel()
        self.housekeeper.cancel()
        self.pool.close()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _json(status: int, obj) -> Response:
    return status, {"content-type": "application/json"}, events.json_body(obj)


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 301: "Moved Permanently", 302: "Found",
            304: "Not Modified", 400: "Bad Request", 403: "Forbidden", 404: "Not Found",
            405: "Method Not Allowed", 413: "Payload Too Large", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}  # fmt: skip


class HttpProtocol(asyncio.Protocol):
    """HTTP/1.1 with keep-alive, parsed by httptools; requests on one connection answered in order."""

    def __init__(self, handler, connections: set, region: str) -> None:
        self.handler, self.connections, self.region = handler, connections, region
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque = deque()
        self.task: asyncio.Task | None = None
        self.transport = None
        self.closing = False

    def connection_made(self, transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "127.0.0.1"
        self.connections.add(self)
        self._reset()

    def connection_lost(self, exc) -> None:
        self.connections.discard(self)
        self.closing = True
        if self.task is not None:
            self.task.cancel()

    def _reset(self) -> None:
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.too_large = False

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._write(400, [("content-type", "application/json")], b'{"message": "Bad Request"}', False)
        except httptools.HttpParserError:
            self._write(400, [("content-type", "application/json")], b'{"message": "Bad Request"}', False)

    # httptools callbacks
    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))
        if name.lower() == b"content-length" and value.isdigit() and int(value) > events.MAX_BODY:
            self.too_large = True

    def on_body(self, body: bytes) -> None:
        self.size += len(body)
        if self.size > events.MAX_BODY:
            self.too_large = True
        if not self.too_large:
            self.body.append(body)

    def on_message_complete(self) -> None:
        parsed = httptools.parse_url(self.url)
        request = Request(
            method=self.parser.get_method().decode(),
            path=parsed.path.decode("utf-8", "replace") if parsed.path else "/",
            query=parsed.query.decode("utf-8", "replace") if parsed.query else "",
            headers=self.headers,
            body=b"".join(self.body),
            source_ip=self.peer,
        )
        item = (request, self.parser.should_keep_alive(), self.too_large)
        self._reset()
        self.queue.append(item)
        if self.task is None:
            self.task = asyncio.ensure_future(self._serve())

    async def _serve(self) -> None:
        try:
            while self.queue and not self.closing:
                request, keep_alive, too_large = self.queue.popleft()
                if too_large:
                    self._write(*events.TOO_LARGE, False)
                    return
                try:
                    answer = await self.handler(request)
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - one bad request must not stop the server
                    log.exception("request %s %s failed", request.method, request.path)
                    answer = events.INTERNAL_ERROR
                if answer is None:
                    self.transport.abort()
                    return
                self._write(*answer, keep_alive, request.request_id)
                if not keep_alive:
                    return
        finally:
            self.task = None

    def _write(self, status, headers, body, keep_alive, request_id: str = "") -> None:
        if self.closing or self.transport.is_closing():
            return
        items = list(headers.items()) if isinstance(headers, dict) else headers
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}"]
        lines.extend(f"{k}: {v}" for k, v in items if k.lower() not in ("content-length", "connection"))
        lines.append(f"Content-Length: {len(body)}")
        if request_id:
            lines.append(f"x-amzn-RequestId: {request_id}")
        if self.region and not any(k == SERVED_BY for k, _ in items):
            lines.append(f"{SERVED_BY}: {self.region}")
        if not keep_alive:
            lines.append("Connection: close")
        self.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "replace") + body)
        if not keep_alive:
            self.closing = True
            self.transport.close()


async def run(config: Config, *, ready=None) -> None:
    """Serve until cancelled. ``ready`` (a callable) is called once every port listens."""
    regions = LocalRegions(config)
    await regions.start()
    if ready:
        ready(regions)
    try:
        await asyncio.Event().wait()
    finally:
        regions.close()
