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
