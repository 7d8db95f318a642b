"""What the chaos suite (tests/chaos/) breaks things with: a Redis server of its own to kill and
restart, a beat process (the reaper runs as it does in production, every REAPER_INTERVAL), an AWS
proxy that throttles every other call with each service's real error shape or holds chosen calls
(to kill a worker in the middle of one), and the test process's Celery pointed at the chaos
broker and queue, so no other worker of the test session takes its messages."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from kombu import pools

from .awsproxy import HOP_BY_HOP
from .processes import ROOT, wait_for

# Longer runs: more rounds and longer outages (README: "The chaos suite").
LONG = os.environ.get("CHAOS_LONG", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` on a free port with nothing persisted: killed, it comes back empty, as a
    Redis without persistence does (every message it held is lost)."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    def start(self) -> RedisServer:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(self._answers, timeout=10, message="redis-server to answer")
        return self

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill()


class BeatProcess:
    """``celery beat`` in a subprocess (its schedule file of its own): sends the reaper and the
    other periodic tasks through the broker, as in production."""

    def __init__(self, *, env: dict[str, str], folder: Path) -> None:
        self.env = env
        self.folder = folder
        self.log_path = folder / "beat.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> BeatProcess:
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings", "CONTROLPLANE_TEST_WORKER": "1",
               "PYTHONUNBUFFERED": "1", **self.env}  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "controlplane", "beat", "--loglevel", "INFO",
             "--schedule", str(self.folder / "beat-schedule")],
            cwd=ROOT, env=env, stdout=self.log_path.open("ab"), stderr=subprocess.STDOUT,
        )  # fmt: skip
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@contextmanager
def celery_pointed_at(*, broker_url: str | None, transport_options: dict | None, queue: str):
    """The test process's Celery sends to ``queue`` on ``broker_url`` (None: the configured
    broker) while inside; every pooled connection is dropped on the way in and out."""
    from controlplane.celery import app

    saved = (app.conf.broker_url, app.conf.broker_transport_options, app.conf.task_default_queue)

    def reset() -> None:
        if app._pool is not None:
            app._pool.force_close_all()
            app._pool = None
        app.amqp._producer_pool = None
        pools.reset()  # kombu's producer pools, kept per broker URL across the switch

    reset()
    if broker_url is not None:
        app.conf.broker_url = broker_url
        app.conf.broker_transport_options = transport_options or {}
    app.conf.task_default_queue = queue
    try:
        yield
    finally:
        reset()
        app.conf.broker_url, app.conf.broker_transport_options, app.conf.task_default_queue = saved


# --- AWS ------------------------------------------------------------------------------------

_SERVICE = re.compile(r"Credential=[^/]+/\d{8}/[^/]+/([^/]+)/aws4_request")


def throttle_answer(service: str) -> tuple[int, dict[str, str], bytes]:
    """The status, headers and body AWS answers a throttled call of ``service`` with."""
    if service in ("lambda", "apigateway"):  # REST-JSON: the error type in a header
        body = {"message": "Rate exceeded", "Type": "User"} if service == "lambda" else {
            "message": "Too Many Requests"}  # fmt: skip
        return (
            429,
            {"x-amzn-ErrorType": "TooManyRequestsException", "Content-Type": "application/json"},
            (json.dumps(body).encode()),
        )
    if service == "s3":
        xml = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"
        return 503, {"Content-Type": "application/xml"}, xml.encode()
    if service in ("acm", "logs", "codebuild"):  # JSON 1.1
        body = {"__type": "ThrottlingException", "message": "Rate exceeded"}
        return 400, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(body).encode()
    # Query and REST-XML services (STS, IAM, Route 53).
    xml = ("<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded"
           "</Message></Error><RequestId>chaos</RequestId></ErrorResponse>")  # fmt: skip
    return 400, {"Content-Type": "text/xml"}, xml.encode()


class ChaosAwsProxy:
    """An HTTP proxy in front of the AWS emulator. ``throttle_every = 2`` answers every other
    call with the service's throttling error (counting every call, retries included);
    ``hold(pattern)`` keeps calls whose "METHOD path" matches waiting until ``release()``, then
    sends them on (to the emulator, as AWS does with a request whose caller died meanwhile).

    Every call, throttled or not, takes ``latency_s`` (80 ms: a round trip across the Atlantic
    plus the service's own time; bench/aws_model.py has the figures): a call to AWS is never the
    emulator's millisecond, and a throttled answer costs a round trip too. Without it a deploy's
    time is the CPU of this machine's processes, and a few milliseconds of retry backoff would
    look like a multiple of it."""

    def __init__(self, upstream: str, latency_s: float = 0.08) -> None:
        self.upstream = upstream.rstrip("/")
        self.latency_s = latency_s
        self.throttle_every = 0
        self.calls = 0
        self.throttled: dict[str, int] = {}
        self.held = 0
        self._hold: re.Pattern | None = None
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=128))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _send(self, status: int, headers: dict[str, str], data: bytes) -> None:
                try:
                    self.send_response(status)
                    for key, value in headers.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                except OSError:
                    pass  # the caller is gone (a killed worker)

            def _handle(self) -> None:
                body = self._body()
                time.sleep(proxy.latency_s)
                match = _SERVICE.search(self.headers.get("Authorization", ""))
                service = match.group(1) if match else ""
                if proxy._should_hold(f"{self.command} {self.path}"):
                    proxy._released.wait(timeout=120)
                if proxy._should_throttle(service):
                    self._send(*throttle_answer(service))
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = proxy._client.request(
                    self.command, proxy.upstream + self.path, headers=headers, content=body
                )
                out = {k: v for k, v in upstream.headers.items()
                       if k.lower() not in HOP_BY_HOP and k.lower() != "content-encoding"}  # fmt: skip
                self._send(upstream.status_code, out, upstream.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def _should_throttle(self, service: str) -> bool:
        with self._lock:
            self.calls += 1
            if self.throttle_every and self.calls % self.throttle_every == 0:
                self.throttled[service] = self.throttled.get(service, 0) + 1
                return True
        return False

    def _should_hold(self, request: str) -> bool:
        with self._lock:
            if self._hold is not None and self._hold.search(request):
                self.held += 1
                return True
        return False

    def hold(self, pattern: str) -> None:
        with self._lock:
            self._hold, self.held = re.compile(pattern), 0
            self._released.clear()

    def release(self) -> None:
        with self._lock:
            self._hold = None
        self._released.set()

    def stop(self) -> None:
        self.release()
        self._server.shutdown()
        self._client.close()


def redis_available() -> bool:
    return shutil.which("redis-server") is not None


def report(name: str, **figures) -> None:
    """Print the scenario's measured figures (pytest -s shows them; CI logs keep them)."""
    line = ", ".join(f"{k}={v:.1f}s" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"\nCHAOS {name}: {line}", flush=True)


def now() -> float:
    return time.time()
