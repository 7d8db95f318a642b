"""The probes' HTTP client against real local servers that misbehave in scripted ways: kept-alive
connections shared by the probes of one host (each URL still gets its own request and result),
servers that close them, malformed and truncated answers, and TLS."""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from controlplane import urlsafety
from regions.probes import BODY_LIMIT, ProbeTarget, check_url, probe_many, run_async
from tests.support.certs import self_signed_pem


def answer(status: int = 200, body: bytes = b"ok", *headers: str) -> bytes:
    head = [f"HTTP/1.1 {status} X", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class Request:
    connection: int  # which connection it came on, numbered from 0 in order of arrival
    index: int  # its place on that connection, from 0
    path: str


class Last(bytes):
    """Bytes to send back before closing the connection."""


Script = Callable[[Request], bytes | None]  # the bytes to send back; None: close without answering


@dataclass
class ScriptedServer:
    """A TCP server on loopback that reads HTTP requests and answers each as ``script`` says,
    keeping connections open between requests until the script returns None. Records every
    request it read, with the connection it came on."""

    script: Script
    tls: ssl.SSLContext | None = None
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._lock = threading.Lock()
        self._connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://localhost:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                number, self._connections = self._connections, self._connections + 1
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buffer = b""
            index = 0
            while True:
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                request = Request(number, index, head.split(b" ")[1].decode())
                with self._lock:
                    self.requests.append(request)
                reply = self.script(request)
                if reply is None:
                    return
                conn.sendall(reply)
                if isinstance(reply, Last):
                    return
                index += 1
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def paths(self) -> list[str]:
        with self._lock:
            return [r.path for r in self.requests]

    def connections(self) -> int:
        with self._lock:
            return self._connections

    def stop(self) -> None:
        self._sock.close()


@pytest.fixture
def scripted():
    servers: list[ScriptedServer] = []

    def make(script: Script, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        servers.append(ScriptedServer(script, tls))
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def probe_all(urls: list[str], *, concurrency: int = 1, expected_text: str = "", timeout: float = 5):
    targets = [ProbeTarget(url, expected_text=expected_text) for url in urls]
    return run_async(probe_many(targets, timeout=timeout, concurrency=concurrency))


def test_probes_of_one_host_share_a_connection_and_each_url_gets_its_own_answer(scripted):
    # The answer depends on the path, so a mixed-up response would show in the results.
    server = scripted(lambda r: answer(503, b"down") if "bad" in r.path else answer(200, r.path.encode()))
    paths = ["/a/health", "/bad/health", "/c/health", "/d/health"]
    results = probe_all([server.url + p for p in paths], expected_text="/")
    assert [r.ok for r in results] == [True, False, True, True]
    assert results[1].error == "HTTP 503 (expected 200)"
    assert sorted(server.paths()) == sorted(paths)
    assert server.connections() == 1


def test_answer_bodies_go_to_the_probe_that_asked_when_probes_run_at_once(scripted):
    server = scripted(lambda r: answer(200, f"served {r.path}".encode()))
    urls = [f"{server.url}/{i}" for i in range(60)]
    results = run_async(
        probe_many(
            [ProbeTarget(url, expected_text=f"served /{i}") for i, url in enumerate(urls)],
            timeout=5,
            concurrency=8,
        )
    )
    assert all(r.ok for r in results), [r.error for r in results if not r.ok]
    assert sorted(server.paths()) == sorted(f"/{i}" for i in range(60))
    assert server.connections() <= 8


def test_a_server_that_closes_a_kept_alive_connection_still_gets_every_url_probed(scripted):
    # Every connection answers one request, then closes on reading the next one without a word
    # (the worst moment: the probe has already sent its request on the reused connection).
    server = scripted(lambda r: answer(200, b"ok") if r.index == 0 else None)
    results = probe_all([f"{server.url}/{i}" for i in range(5)])
    assert [r.ok for r in results] == [True] * 5
    answered = [r.path for r in server.requests if r.index == 0]
    assert answered == [f"/{i}" for i in range(5)]


def test_connection_close_from_the_server_is_honoured(scripted):
    server = scripted(lambda r: answer(200, b"ok", "Connection: close"))
    results = probe_all([f"{server.url}/{i}" for i in range(3)])
    assert all(r.ok for r in results)
    assert server.connections() == 3


def test_bytes_after_an_answer_do_not_leak_into_the_next_probes_answer(scripted):
    # The start of a second answer nobody asked for follows each real one.
    server = scripted(lambda r: answer(200, b"ok") + b"HTTP/1.1 500 Surplus\r\n")
    results = probe_all([f"{server.url}/{i}" for i in range(3)])
    assert [r.error for r in results] == ["", "", ""]
    assert server.connections() == 3


def test_a_chunked_body_is_read_and_the_connection_kept(scripted):
    body = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    server = scripted(lambda r: b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    results = probe_all([f"{server.url}/{i}" for i in range(3)], expected_text="hello world")
    assert all(r.ok for r in results), [r.error for r in results]
    assert server.connections() == 1


def test_a_body_longer_than_the_limit_does_not_hold_up_the_next_probe(scripted):
    server = scripted(lambda r: answer(200, b"x" * (BODY_LIMIT * 4) + b"READY"))
    results = probe_all([f"{server.url}/{i}" for i in range(3)], expected_text="x")
    assert all(r.ok for r in results)
    missing = probe_all([server.url + "/late"], expected_text="READY")
    assert "does not contain" in missing[0].error


def test_a_body_that_ends_with_the_connection_is_read_whole(scripted):
    server = scripted(lambda r: Last(b"HTTP/1.0 200 OK\r\n\r\n" + b'{"status": "ok"}'))
    result = check_url(server.url + "/health", expected_text='"ok"', timeout=5)
    assert result.ok, result.error


def test_an_interim_answer_is_skipped_for_the_real_one(scripted):
    server = scripted(lambda r: b"HTTP/1.1 100 Continue\r\n\r\n" + answer(204, b""))
    result = check_url(server.url + "/health", expected_status=204, timeout=5)
    assert result.ok and result.status_code == 204


def test_a_malformed_answer_is_an_invalid_http_response(scripted):
    server = scripted(lambda r: b"this is not HTTP\r\n\r\n")
    result = check_url(server.url + "/health", timeout=5)
    assert not result.ok and result.status_code is None
    assert result.error.startswith("invalid HTTP response:")


def test_no_answer_at_all_is_an_invalid_http_response(scripted):
    server = scripted(lambda r: None)
    result = check_url(server.url + "/health", timeout=5)
    assert result.error == "invalid HTTP response: the connection closed without a response"


def test_a_truncated_body_is_an_invalid_http_response(scripted):
    server = scripted(lambda r: Last(answer(200, b"x" * 100)[:-60]))
    result = check_url(server.url + "/health", timeout=5)
    assert result.error == "invalid HTTP response: the connection closed before the response was complete"


def test_a_slow_answer_times_out(scripted):
    event = threading.Event()
    server = scripted(lambda r: (event.wait(3), answer())[1])
    result = check_url(server.url + "/health", timeout=0.3)
    event.set()
    assert result.error == "timed out after 0.3s"


def test_the_request_line_percent_encodes_what_http_cannot_carry(scripted):
    server = scripted(lambda r: answer())
    assert check_url(server.url + "/health check/é", timeout=5).ok
    assert server.paths() == ["/health%20check/%C3%A9"]


# --- TLS ------------------------------------------------------------------------------------


def self_signed(tmp_path) -> tuple[ssl.SSLContext, ssl.SSLContext, list[str]]:
    """A server context with a certificate for localhost, a client context that trusts it, and
    the list the server fills with the SNI names it is sent."""
    cert, key = self_signed_pem("localhost", ip="127.0.0.1", ca=True)
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_file, key_file)
    names: list[str] = []
    server.sni_callback = lambda sock, server_name, ctx: names.append(server_name) and None
    client = ssl.create_default_context(cafile=str(cert_file))
    return server, client, names


def test_https_probe_verifies_the_certificate_and_sends_the_host_name(scripted, tmp_path, monkeypatch):
    server_ctx, client_ctx, names = self_signed(tmp_path)
    server = scripted(lambda r: answer(200, b"secure"), tls=server_ctx)
    monkeypatch.setattr(urlsafety, "ssl_context", lambda: client_ctx)
    results = probe_all([server.url + "/a", server.url + "/b"], expected_text="secure")
    assert all(r.ok for r in results), [r.error for r in results]
    assert names == ["localhost"]  # one handshake, with SNI, for both probes
    assert server.connections() == 1


def test_https_probe_of_an_untrusted_certificate_is_a_tls_error(scripted, tmp_path):
    server_ctx, _, _ = self_signed(tmp_path)
    server = scripted(lambda r: answer(), tls=server_ctx)
    result = check_url(server.url + "/health", timeout=5)
    assert not result.ok and result.error.startswith("TLS error:")
    assert server.paths() == []


def test_a_host_that_resolves_slower_than_the_timeout_times_out_each_of_its_probes(scripted, monkeypatch):
    # Probes of a host share one lookup; the first to time out must not cancel it for the rest.
    slow, fast = scripted(lambda r: answer()), scripted(lambda r: answer())
    resolve = urlsafety.resolve

    def slow_resolve(host: str, port: int) -> list[str]:
        if port == slow.port:
            time.sleep(1)
        return resolve(host, port)

    monkeypatch.setattr(urlsafety, "resolve", slow_resolve)
    # The second worker reaches the slow host after its fast probe, so it waits on the lookup
    # the first worker started, with a later deadline.
    urls = [slow.url + "/1", fast.url + "/1", slow.url + "/2"]
    results = probe_all(urls, concurrency=2, timeout=0.5)
    assert [r.error for r in results] == ["timed out after 0.5s", "", "timed out after 0.5s"]
