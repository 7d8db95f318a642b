"""The local regions' pure parts: the RTT table, fault requests, the proxy answer's mapping and
the zip checks."""

from __future__ import annotations

import io
import zipfile

import pytest

from regions.local import events, faults, rtt
from regions.local.code import UnsafeArchive, unpack


def test_latency_routing_prefers_the_regions_a_user_would_expect():
    assert rtt.nearest("eu-central-1", ["us-east-1", "eu-west-1", "ap-southeast-2"])[0] == "eu-west-1"
    assert rtt.nearest("ap-northeast-1", ["us-east-1", "eu-west-1", "ap-southeast-2"])[0] == "ap-southeast-2"
    assert rtt.nearest("sa-east-1", ["us-east-1", "us-west-2", "eu-west-1"])[0] == "us-east-1"
    table = rtt.table()
    assert all(table[a][a] == 0 for a in table)
    assert all(table[a][b] == table[b][a] > 0 for a in table for b in table if a != b)
    assert 60 <= rtt.rtt_ms("us-east-1", "eu-west-1") <= 90  # published medians: about 70 ms


@pytest.mark.parametrize(
    ("data", "why"),
    [
        ({"region": "eu-west-1", "mode": "explode"}, "mode must be one of"),
        ({"region": "mars-1", "mode": "down"}, "unknown region"),
        ({"region": "eu-west-1", "mode": "flaky", "percent": 150}, "percent must be"),
        ({"region": "eu-west-1", "mode": "slow", "ms": "soon"}, "must be numbers"),
        ({"region": "eu-west-1", "mode": "down", "stage": "production"}, "give app too"),
        ([], "JSON object"),
    ],
)
def test_a_fault_that_makes_no_sense_is_refused_with_the_reason(data, why):
    with pytest.raises(faults.BadFault, match=why):
        faults.parse(data, regions={"eu-west-1"})


def test_a_fault_narrowed_to_an_app_leaves_the_others_alone():
    active = faults.Faults()
    active.add(faults.parse({"region": "eu-west-1", "mode": "error", "app": "shop"}, regions={"eu-west-1"}))
    assert active.find(region="eu-west-1", function_name="acme-shop", stage="production")
    assert not active.find(region="eu-west-1", function_name="acme-web", stage="production")
    assert not active.region_down("eu-west-1")


@pytest.mark.parametrize(
    "answer",
    [
        "not a dict",
        {"statusCode": 200, "bogus": 1},
        {"statusCode": 700},
        {"statusCode": "abc"},
        {"statusCode": 200, "body": {"not": "a string"}},
        {"statusCode": 200, "body": "!!", "isBase64Encoded": True},
        {"statusCode": 200, "multiValueHeaders": {"a": "not a list"}},
    ],
)
def test_a_malformed_proxy_answer_is_refused(answer):
    assert events.proxy_response(answer) is None


def test_a_proxy_answer_maps_headers_and_base64_bodies():
    status, headers, body = events.proxy_response(
        {"statusCode": 302, "headers": {"Location": "/x", "A": "1"}, "multiValueHeaders": {"a": ["2", "3"]},
         "body": "aGk=", "isBase64Encoded": True}
    )  # fmt: skip
    assert (status, body) == (302, b"hi")
    assert headers == [("a", "2"), ("a", "3"), ("Location", "/x")]  # multi-value wins over single
    assert events.proxy_response({}) == (200, [], b"")


def _zip(name: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr(name, "x = 1")
    return buf.getvalue()


@pytest.mark.parametrize("name", ["../evil.py", "a/../../evil.py", "/etc/evil.py", "C:/evil.py"])
def test_zip_entries_outside_the_folder_are_refused_and_nothing_is_left(tmp_path, name):
    target = tmp_path / "cache" / "fn" / "1"
    with pytest.raises(UnsafeArchive):
        unpack(_zip(name), target)
    assert not target.exists()
    assert sorted(p.name for p in (tmp_path / "cache" / "fn").iterdir()) == []
    assert not (tmp_path / "evil.py").exists() and not (tmp_path / "cache" / "evil.py").exists()


def test_a_safe_zip_is_unpacked_readable_once(tmp_path):
    target = unpack(_zip("pkg/mod.py"), tmp_path / "v1")
    assert (target / "pkg" / "mod.py").read_text() == "x = 1"
    assert (target / "pkg" / "mod.py").stat().st_mode & 0o444 == 0o444
    assert unpack(b"not even a zip", target) == target  # already there: versions are immutable
    with pytest.raises(UnsafeArchive, match="not a zip"):
        unpack(b"not even a zip", tmp_path / "v2")
