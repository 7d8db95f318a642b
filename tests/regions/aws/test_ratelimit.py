"""The shared buckets and markers: the reaper's "did I run lately" marker, and Redis going away
never failing the AWS call (or the reaper) that asked."""

from __future__ import annotations

import time
import uuid

import pytest

from regions.aws import ratelimit


@pytest.fixture
def fresh_key() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_touch_says_whether_the_marker_was_touched_within_its_ttl(fresh_key):
    assert ratelimit.touch(fresh_key, ttl=0.5) is False  # never touched
    assert ratelimit.touch(fresh_key, ttl=0.5) is True
    time.sleep(0.7)
    assert ratelimit.touch(fresh_key, ttl=0.5) is False  # a pause longer than its ttl
    assert ratelimit.touch(fresh_key, ttl=0.5) is True


def test_redis_unreachable_lets_calls_go_and_reads_markers_as_absent(settings, fresh_key, monkeypatch):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    monkeypatch.setattr(ratelimit, "_redis", None)
    started = time.monotonic()
    assert ratelimit.acquire(fresh_key, rate=0.001, burst=1) < 5  # no token to be had, no wait
    assert ratelimit.acquire(fresh_key, rate=0.001, burst=1) < 5
    assert time.monotonic() - started < 10
    assert ratelimit.once(fresh_key, ttl=60) is True  # the caller does the work itself
    assert ratelimit.touch(fresh_key, ttl=60) is False  # read as an outage: the reaper resends
    ratelimit.forget(fresh_key)  # no error
    monkeypatch.setattr(ratelimit, "_redis", None)
