"""Real local servers for health and alert tests: HTTP endpoints that can be flipped between
healthy and failing, receivers that record what they were sent (Slack, webhooks), and an SMTP
server (aiosmtpd) that records mail."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller

from .processes import wait_for


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self):
        return json.loads(self.body)


@dataclass
class Reply:
    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0  # seconds to wait before answering (timeouts)
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = self.server.owner.next_reply()
        self.server.owner.record(
            Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        )
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = _serve

    def log_message(self, format, *args):  # noqa: A002 - quiet test output
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HttpServer


@dataclass
class HttpServer:
    """A ThreadingHTTPServer on 127.0.0.1 answering every request with ``reply`` (or the next of
    ``queued`` replies first), recording each request."""

    reply: Reply = field(default_factory=Reply)
    queued: deque = field(default_factory=deque)
    requests: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def next_reply(self) -> Reply:
        with self._lock:
            return self.queued.popleft() if self.queued else self.reply

    def record(self, received: Received) -> None:
        with self._lock:
            self.requests.append(received)

    def respond(
        self, status: int = 200, body: bytes | str = b"ok", delay: float = 0.0, headers: dict | None = None
    ) -> None:
        """Answer every later request this way."""
        self.reply = Reply(status, body.encode() if isinstance(body, str) else body, delay, headers or {})

    def then(self, *replies: Reply) -> None:
        """Answer the next requests with ``replies``, in order, before the default reply."""
        with self._lock:
            self.queued.extend(replies)

    def healthy(self) -> None:
        self.respond(200, b'{"status": "ok"}')

    def failing(self) -> None:
        self.respond(503, b"unavailable")

    def received(self, method: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.requests if method is None or r.method == method]

    def wait_for_requests(
        self, count: int, *, timeout: float = 15, method: str | None = "POST"
    ) -> list[Received]:
        return wait_for(
            lambda: (got := self.received(method)) and len(got) >= count and got,
            timeout=timeout,
            message=f"{count} {method or ''} request(s) to {self.url}",
        )

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _MailHandler:
    def __init__(self, owner: SmtpServer):
        self.owner = owner

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if address.split("@")[0] in self.owner.refuse_local_parts:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.owner.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


class SmtpServer:
    """A real SMTP server (aiosmtpd) on a free loopback port, keeping every message it accepts.
    Recipients whose local part is in ``refuse_local_parts`` are refused with a 550."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse_local_parts: set[str] = {"nobody"}
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._controller = Controller(_MailHandler(self), hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()
