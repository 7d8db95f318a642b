"""Outgoing URL safety: where the control plane may send requests (Slack, webhooks, probes).

A team admin chooses webhook URLs, so a URL could point the control plane at itself, at the
cloud's metadata service or at the private network it runs in. Only ``https`` is allowed unless
``ALLOW_HTTP_URLS``; the host must resolve to public addresses unless ``ALLOW_PRIVATE_URLS``. The
check happens when a URL is saved (early feedback) and again at every connection, on the address
actually connected to, so a name that later resolves elsewhere (DNS rebinding) is still refused.
Cloud metadata addresses are refused even when private addresses are allowed: nothing legitimate
lives there, and they hand out credentials.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from .errors import DomainError

# Instance metadata (EC2 IPv4/IPv6, ECS task credentials, other clouds' equivalents).
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in ("169.254.169.254", "fd00:ec2::254", "169.254.170.2", "169.254.170.23", "100.100.100.200")
)


class UnsafeURL(DomainError):
    """The URL may not be requested: wrong scheme, no host, or a refused address."""

    code = "unsafe_url"
    status_code = 400


@dataclass(frozen=True)
class Target:
    """A URL split into what a connection needs."""

    scheme: str
    host: str  # as written (a name or an address), without brackets
    port: int
    authority: str = ""  # host[:port] as written, for the Host header
    path: str = "/"  # path and query, for the request line


# IPv6 ranges that stand for an IPv4 address in their last 32 bits: a translator (NAT64, SIIT)
# forwards the connection to it. RFC 6052's well-known NAT64 prefix and RFC 7915's IPv4-translated
# addresses; IPv4-mapped and 6to4 are read with ipaddress' own properties.
IPV4_IN_LAST_32_BITS = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("::ffff:0:0:0/96"))


def embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (IPv4-mapped ``::ffff:a.b.c.d``, NAT64
    ``64:ff9b::a.b.c.d``, IPv4-translated ``::ffff:0:a.b.c.d``, 6to4 ``2002:aabb:ccdd::``), or None."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in net for net in IPV4_IN_LAST_32_BITS):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _not_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """What kind of non-public address ``ip`` is ("a loopback address", ...), or None."""
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_private:
        return "a private address"
    if ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "not a public address"
    return None


def address_problem(address: str) -> str | None:
    """None when a connection to ``address`` is allowed, otherwise why not. An IPv6 address that
    wraps an IPv4 one (see :func:`embedded_ipv4`) is judged by the IPv4 address it leads to:
    ``ipaddress`` calls NAT64 and 6to4 addresses global whatever they wrap."""
    return public_address_problem(address, allow_private=settings.ALLOW_PRIVATE_URLS)


def public_address_problem(address: str, *, allow_private: bool = False) -> str | None:
    """:func:`address_problem` without the settings: None when ``address`` is public (or, with
    ``allow_private``, anything but a metadata address), otherwise why not. The build sandbox's
    network proxy judges every connection with it."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"'{address}' is not an IP address."
    inner = embedded_ipv4(ip)
    for candidate in (ip, inner):
        if candidate in METADATA_ADDRESSES:
            return f"{candidate} is a cloud metadata address."
    if allow_private:
        return None
    if inner is not None:
        kind = _not_public(inner)
        return f"{ip} leads to {inner}, {kind}." if kind else None
    kind = _not_public(ip)
    return f"{ip} is {kind}." if kind else None


def parse(url: str) -> Target:
    """Scheme, host and port of ``url``. Raises UnsafeURL for a scheme other than https (or http
    when ``ALLOW_HTTP_URLS``), a missing host or a bad port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"Not a valid URL: {exc}.")
    allowed = ("https", "http") if settings.ALLOW_HTTP_URLS else ("https",)
    if parts.scheme not in allowed:
        raise UnsafeURL("Only https URLs are allowed." if parts.scheme != "https" else "Not a valid URL.")
    if not parts.hostname:
        raise UnsafeURL("The URL has no host.")
    return Target(
        scheme=parts.scheme,
        host=parts.hostname,
        port=port or (443 if parts.scheme == "https" else 80),
        authority=parts.netloc.rsplit("@", 1)[-1],
        path=(parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )


def _literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return None


def resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, every one of them allowed. Raises UnsafeURL when the
    name does not resolve or any address is refused (one bad answer could be the one used)."""
    literal = _literal(host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise UnsafeURL(f"Cannot resolve {host}: {exc}.")
        addresses = list(dict.fromkeys(info[4][0] for info in infos))
    check_addresses(host, addresses)
    return addresses


def check_addresses(host: str, addresses: list[str]) -> None:
    """Raise UnsafeURL when any of ``host``'s ``addresses`` is refused."""
    if not addresses:
        raise UnsafeURL(f"{host} has no address.")
    for address in addresses:
        problem = address_problem(address)
        if problem:
            raise UnsafeURL(f"{host} is refused: {problem}")


def check_url(url: str) -> Target:
    """Check ``url`` before it is saved: scheme, host, and the addresses it resolves to now. A
    name that does not resolve yet is accepted (DNS may be on its way); every delivery checks
    again. Raises UnsafeURL."""
    target = parse(url)
    try:
        resolve(target.host, target.port)
    except UnsafeURL as exc:
        if "Cannot resolve" not in exc.detail:
            raise
    return target


@lru_cache(maxsize=1)
def ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every outgoing connection (building one costs ~20 ms)."""
    return httpx.create_ssl_context()


class SafeTransport(httpx.HTTPTransport):
    """An httpx transport that checks every request's URL and connects to a checked address.

    The request URL's host is swapped for an address that passed the check; the ``Host`` header
    keeps the name, and TLS uses the name for SNI and certificate verification. The addresses
    are tried in the resolver's order until one accepts the connection (nothing has been sent
    before that, so trying the next one cannot send a request twice)."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        target = parse(str(request.url))
        addresses = resolve(target.host, target.port)
        original = request.url
        for i, address in enumerate(addresses):
            if address != target.host:
                request.url = original.copy_with(host=address)
                if target.scheme == "https":
                    request.extensions = {**request.extensions, "sni_hostname": target.host}
            try:
                return super().handle_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if i == len(addresses) - 1:
                    raise
        raise AssertionError("resolve() returns at least one address")  # pragma: no cover


def safe_client(*, timeout: float) -> httpx.Client:
    """An httpx client for one delivery: safe transport, no redirects (a redirect could lead
    anywhere), no environment proxies. Use it as a context manager.

    A fresh client per delivery keeps connections made for one name from being reused for
    another name that shares an address."""
    return httpx.Client(
        transport=SafeTransport(verify=ssl_context(), trust_env=False),
        timeout=timeout,
        follow_redirects=False,
        headers={"User-Agent": "controlplane-alerts/1"},
    )
