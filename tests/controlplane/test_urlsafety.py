import socket

import httpx
import pytest
from django.test import override_settings

from controlplane import urlsafety
from controlplane.urlsafety import UnsafeURL


@override_settings(ALLOW_HTTP_URLS=False)
def test_plain_http_is_refused_unless_allowed():
    with pytest.raises(UnsafeURL, match="Only https"):
        urlsafety.check_url("http://93.184.216.34/hook")
    with override_settings(ALLOW_HTTP_URLS=True):
        assert urlsafety.check_url("http://93.184.216.34/hook").port == 80


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://localhost/hook",
        "https://10.1.2.3/hook",
        "https://172.16.0.5/hook",
        "https://192.168.1.10/hook",
        "https://169.254.10.10/hook",
        "https://[::1]/hook",
        "https://[fe80::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://224.0.0.1/hook",
        "https://0.0.0.0/hook",
        "https://100.64.0.1/hook",
    ],
)
@override_settings(ALLOW_PRIVATE_URLS=False)
def test_loopback_private_link_local_and_reserved_addresses_are_refused(url):
    with pytest.raises(UnsafeURL, match="is refused"):
        urlsafety.check_url(url)


@pytest.mark.parametrize("url", ["https://169.254.169.254/latest/meta-data/", "https://[fd00:ec2::254]/"])
def test_cloud_metadata_is_refused_even_when_private_addresses_are_allowed(url, settings):
    settings.ALLOW_PRIVATE_URLS = True
    with pytest.raises(UnsafeURL, match="metadata"):
        urlsafety.check_url(url)


@override_settings(ALLOW_PRIVATE_URLS=False)
def test_public_address_is_accepted():
    target = urlsafety.check_url("https://93.184.216.34:8443/hooks/x")
    assert (target.scheme, target.host, target.port) == ("https", "93.184.216.34", 8443)


@override_settings(ALLOW_PRIVATE_URLS=False)
def test_a_name_that_does_not_resolve_yet_can_be_saved_and_is_checked_at_delivery():
    assert urlsafety.check_url("https://hooks.example.invalid/x").host == "hooks.example.invalid"
    with pytest.raises(UnsafeURL, match="Cannot resolve"):
        urlsafety.resolve("hooks.example.invalid", 443)


@pytest.mark.parametrize("url", ["ftp://example.com/x", "https:///nohost", "https://example.com:99999/"])
def test_malformed_urls_are_refused(url):
    with pytest.raises(UnsafeURL):
        urlsafety.check_url(url)


def test_safe_client_refuses_loopback_at_connect_time_and_nothing_is_sent(http_server):
    receiver = http_server()
    with override_settings(ALLOW_PRIVATE_URLS=False), urlsafety.safe_client(timeout=5) as client:
        with pytest.raises(UnsafeURL):
            client.post(f"http://localhost:{receiver.port}/hook", content=b"{}")
    assert receiver.received() == []


def test_safe_client_connects_to_the_checked_address_and_keeps_the_host_name(http_server):
    receiver = http_server()
    with urlsafety.safe_client(timeout=5) as client:
        response = client.post(f"http://localhost:{receiver.port}/hook?x=1", content=b"{}")
    assert response.status_code == 200
    (request,) = receiver.received()
    assert request.headers["host"] == f"localhost:{receiver.port}"
    assert request.path == "/hook?x=1"


def test_safe_client_does_not_follow_redirects(http_server):
    target = http_server()
    redirector = http_server()
    redirector.respond(307, headers={"Location": target.url + "/elsewhere"})
    with urlsafety.safe_client(timeout=5) as client:
        response = client.post(redirector.url + "/hook", content=b"{}")
    assert response.status_code == 307
    assert target.received() == []


@pytest.mark.parametrize(
    ("address", "inner"),
    [
        ("64:ff9b::a00:1", "10.0.0.1"),  # NAT64, RFC 6052 well-known prefix
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("2002:a00:1::1", "10.0.0.1"),  # 6to4
        ("2002:c0a8:101::1", "192.168.1.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),  # IPv4-mapped
        ("::ffff:0:a00:1", "10.0.0.1"),  # IPv4-translated (SIIT)
    ],
)
@override_settings(ALLOW_PRIVATE_URLS=False)
def test_ipv6_wrapping_a_private_ipv4_address_is_refused(address, inner):
    with pytest.raises(UnsafeURL, match=f"leads to {inner}"):
        urlsafety.check_url(f"https://[{address}]/hook")


@pytest.mark.parametrize("address", ["64:ff9b::5db8:d822", "2002:5db8:d822::1"])
@override_settings(ALLOW_PRIVATE_URLS=False)
def test_nat64_and_6to4_of_a_public_ipv4_address_are_accepted(address):
    assert urlsafety.address_problem(address) is None


@pytest.mark.parametrize("address", ["64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::1", "::ffff:169.254.169.254"])
def test_metadata_behind_nat64_or_6to4_is_refused_even_when_private_is_allowed(address, settings):
    settings.ALLOW_PRIVATE_URLS = True
    assert urlsafety.address_problem(address) == "169.254.169.254 is a cloud metadata address."


class FakeDns:
    """``socket.getaddrinfo`` for one made-up name, answering from a script (the last answer
    repeats); every other name and every address literal goes to the real resolver."""

    def __init__(self, monkeypatch, name: str, *answers: list[str]):
        self.name, self.answers, self.asked = name, list(answers), 0
        real = socket.getaddrinfo

        def getaddrinfo(host, port, *args, **kwargs):
            if host != self.name:
                return real(host, port, *args, **kwargs)
            addresses = self.answers[min(self.asked, len(self.answers) - 1)]
            self.asked += 1
            return [
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port or 0)) for address in addresses
            ]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


@override_settings(ALLOW_PRIVATE_URLS=False)
def test_dns_rebinding_never_reaches_the_private_address(http_server, monkeypatch):
    receiver = http_server()  # what the name rebinds to: a private (loopback) service
    public = "93.184.216.34"
    dns = FakeDns(monkeypatch, "hooks.rebind.test", [public], [public], ["127.0.0.1"])
    connected: list[tuple] = []

    def create_connection(address, *args, **kwargs):
        connected.append(address)
        raise ConnectionRefusedError("no network in tests")  # nothing leaves this machine

    monkeypatch.setattr(socket, "create_connection", create_connection)
    url = f"http://hooks.rebind.test:{receiver.port}/hook"

    assert urlsafety.check_url(url).host == "hooks.rebind.test"  # saved: the name is public now
    # Delivery: the name is checked again and the connection goes to the address that passed,
    # not to whatever the name says a moment later.
    with urlsafety.safe_client(timeout=2) as client, pytest.raises(httpx.ConnectError):
        client.post(url, content=b"{}")
    assert connected == [(public, receiver.port)]
    # The next delivery sees the rebound answer and refuses before connecting.
    with urlsafety.safe_client(timeout=2) as client, pytest.raises(UnsafeURL, match="loopback"):
        client.post(url, content=b"{}")
    assert connected == [(public, receiver.port)]
    assert dns.asked == 3
    assert receiver.received() == []


def test_safe_client_tries_each_address_until_one_connects(http_server, monkeypatch):
    receiver = http_server()  # listens on 127.0.0.1 only: 127.0.0.2 refuses the connection
    FakeDns(monkeypatch, "hooks.two.test", ["127.0.0.2", "127.0.0.1"])
    with urlsafety.safe_client(timeout=5) as client:
        response = client.post(f"http://hooks.two.test:{receiver.port}/hook", content=b"{}")
    assert response.status_code == 200
    (request,) = receiver.received()
    assert request.headers["host"] == f"hooks.two.test:{receiver.port}"


def test_probe_tries_each_address_until_one_connects(http_server, monkeypatch):
    from regions.probes import check_url

    endpoint = http_server()
    endpoint.healthy()
    FakeDns(monkeypatch, "api.two.test", ["127.0.0.2", "127.0.0.1"])
    result = check_url(f"http://api.two.test:{endpoint.port}/health", timeout=5)
    assert result.ok, result.error
    (request,) = endpoint.received("GET")
    assert request.headers["host"] == f"api.two.test:{endpoint.port}"


@override_settings(ALLOW_PRIVATE_URLS=False)
def test_a_name_with_one_private_answer_among_public_ones_is_refused(monkeypatch):
    FakeDns(monkeypatch, "hooks.mixed.test", ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(UnsafeURL, match="10.0.0.7 is a private address"):
        urlsafety.resolve("hooks.mixed.test", 443)
