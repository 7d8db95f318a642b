"""The worker's side of a sandbox's network: a relay on a Unix socket that only the sandbox sees.

Each connection starts with one line from the forwarder inside (``forward.py``):

- ``PROXY``: an HTTP proxy request follows, either ``CONNECT host:port`` (HTTPS, and anything
  tunnelled) or a plain ``GET http://host/...``. The relay resolves the name itself, keeps only the
  addresses that are public (``urlsafety.public_address_problem``: never loopback, link-local,
  private, reserved or a cloud metadata address) or inside the sandbox's ``public_networks``
  (a stand-in for "the internet" in tests; metadata addresses stay refused), and connects to one of
  those. Otherwise it answers ``403`` with the reason and records the refusal.
- ``PORT n``: a connection to the host's ``127.0.0.1:n``, allowed only for the ports the sandbox
  was given (``loopback_ports``), e.g. the local AWS emulator for Lambda code.

The relay connects from the worker, so the name is resolved and every address is checked here,
at connection time (a name that resolves to a public address when checked and to a private one
later cannot slip through: the connection goes to the address that was checked).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from controlplane.urlsafety import METADATA_ADDRESSES, embedded_ipv4, public_address_problem

from .forward import pump  # the forwarder inside copies bytes the same way

CHUNK = 65536
MAX_HEAD = 65536
CONNECT_TIMEOUT = 15.0
# Connections one sandbox may have open through the relay at once: each holds threads and file
# descriptors of the worker, which a build must not be able to exhaust.
MAX_CONNECTIONS = 128
HOP_HEADERS = {b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive"}

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Refused(Exception):
    """The destination is not allowed; the message says why."""


def parse_networks(values: Iterable[str]) -> tuple[Network, ...]:
    """CIDRs (``"203.0.113.0/24"``, ``"127.0.0.2/32"``) as networks; raises ValueError."""
    return tuple(ipaddress.ip_network(value.strip(), strict=False) for value in values if value.strip())


def destination_problem(address: str, public_networks: tuple[Network, ...]) -> str | None:
    """None when the sandbox may connect to ``address``, otherwise why not."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"'{address}' is not an IP address."
    inner = embedded_ipv4(ip)
    if ip in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
        return f"{address} is a cloud metadata address."
    if any(ip in net or (inner is not None and inner in net) for net in public_networks):
        return None
    return public_address_problem(address)


class Relay:
    """Serves one sandbox's Unix socket on daemon threads until ``close()``."""

    def __init__(
        self,
        path: str,
        *,
        proxy: bool = True,
        loopback_ports: Iterable[int] = (),
        public_networks: tuple[Network, ...] = (),
        on_refused: Callable[[str], None] | None = None,
    ):
        self.path = path
        self.proxy = proxy
        self.loopback_ports = frozenset(int(p) for p in loopback_ports)
        self.public_networks = public_networks
        self.on_refused = on_refused
        self.refused: list[str] = []
        self._closed = False
        self._connections: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(path)
        # The sandbox's uid connects; the folder around it is that uid's alone.
        os.chmod(path, 0o666)  # noqa: S103
        self.listener.listen(128)
        self.thread = threading.Thread(target=self._accept, name="sandbox-relay", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self._closed = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()

    # --- plumbing ---------------------------------------------------------------------------------
    def _track(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._connections.add(sock)
        return sock

    def _untrack(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._connections.discard(sock)
        for sock in socks:
            sock.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                if self._closed:
                    return
                continue
            with self._lock:
                busy = len(self._connections) >= 2 * MAX_CONNECTIONS  # each has an upstream too
            if busy:
                self._refuse(f"the proxy: more than {MAX_CONNECTIONS} connections open at once.")
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(self._track(conn),), daemon=True).start()

    def _refuse(self, what: str) -> None:
        self.refused.append(what)
        if self.on_refused is not None:
            self.on_refused(what)

    def _serve(self, conn: socket.socket) -> None:
        upstream = None
        try:
            conn.settimeout(CONNECT_TIMEOUT)
            head = _read_until(conn, b"\n", 64)
            line, _, rest = head.partition(b"\n")
            if line.startswith(b"PORT "):
                port = int(line[5:])
                if port not in self.loopback_ports:
                    self._refuse(f"127.0.0.1:{port}: not a port this sandbox may reach.")
                    return
                upstream = self._track(socket.create_connection(("127.0.0.1", port), CONNECT_TIMEOUT))
                pending = rest
            elif line == b"PROXY":
                if not self.proxy:
                    self._refuse("the proxy: this sandbox has no network access.")
                    _answer(conn, 403, "This sandbox has no network access.")
                    return
                upstream, pending = self._proxy(conn, rest)
                if upstream is None:
                    return
            else:
                return
            conn.settimeout(None)
            upstream.settimeout(None)
            if pending:
                upstream.sendall(pending)
            back = threading.Thread(target=pump, args=(upstream, conn), daemon=True)
            back.start()
            pump(conn, upstream)
            back.join()
        except (OSError, ValueError):
            pass
        finally:
            self._untrack(conn, *([upstream] if upstream is not None else []))

    def _proxy(self, conn: socket.socket, buffered: bytes) -> tuple[socket.socket | None, bytes]:
        """Read one proxy request; returns the upstream connection and the bytes to send on it."""
        data = buffered
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_HEAD:
                _answer(conn, 431, "Request header too large.")
                return None, b""
            chunk = conn.recv(CHUNK)
            if not chunk:
                return None, b""
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        request_line, *header_lines = head.split(b"\r\n")
        try:
            method, target, version = request_line.decode("latin-1").split(" ")
        except ValueError:
            _answer(conn, 400, "Not an HTTP proxy request.")
            return None, b""
        if method == "CONNECT":
            host, port = _split_host_port(target, default=443)
            upstream = self._connect(conn, host, port)
            if upstream is not None:
                conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
            return upstream, body
        parts = urlsplit(target)
        if parts.scheme != "http" or not parts.hostname:
            _answer(conn, 400, "Only CONNECT and absolute http:// URLs go through this proxy.")
            return None, b""
        upstream = self._connect(conn, parts.hostname, parts.port or 80)
        if upstream is None:
            return None, b""
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        headers = [h for h in header_lines if h.split(b":", 1)[0].strip().lower() not in HOP_HEADERS]
        rewritten = b"\r\n".join(
            [f"{method} {path} {version}".encode("latin-1"), *headers, b"Connection: close"]
        )
        return upstream, rewritten + b"\r\n\r\n" + body

    def _connect(self, conn: socket.socket, host: str, port: int) -> socket.socket | None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            _answer(conn, 502, f"Cannot resolve {host}: {exc}.")
            return None
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
        problems = [destination_problem(a, self.public_networks) for a in addresses]
        allowed = [a for a, problem in zip(addresses, problems, strict=True) if problem is None]
        if not allowed:
            reason = next((p for p in problems if p), f"{host} has no address.")
            self._refuse(f"{host}:{port}: {reason}")
            _answer(conn, 403, f"The sandbox may not connect to {host}:{port}: {reason}")
            return None
        last: OSError | None = None
        for address in allowed:
            try:
                return self._track(socket.create_connection((address, port), CONNECT_TIMEOUT))
            except OSError as exc:
                last = exc
        _answer(conn, 502, f"Cannot connect to {host}:{port}: {last}.")
        return None


def _split_host_port(target: str, *, default: int) -> tuple[str, int]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default
    host, sep, port = target.rpartition(":")
    return (host, int(port)) if sep else (target, default)


def _read_until(sock: socket.socket, marker: bytes, limit: int) -> bytes:
    data = b""
    while marker not in data:
        if len(data) > limit:
            raise ValueError("header line too long")
        chunk = sock.recv(limit)
        if not chunk:
            raise ValueError("closed before the header line")
        data += chunk
    return data


def _answer(conn: socket.socket, status: int, message: str) -> None:
    reason = {400: "Bad Request", 403: "Forbidden", 431: "Request Header Fields Too Large"}.get(
        status, "Bad Gateway"
    )
    body = (message + "\n").encode()
    try:
        conn.sendall(
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + body
        )
    except OSError:
        pass
