"""Token buckets shared by every worker of an installation, for AWS quotas that hold per account
across regions (Route 53's five requests a second for the whole account:
https://repost.aws/knowledge-center/route-53-avoid-throttling-errors).

:func:`acquire` blocks until the bucket has a token. The bucket lives where every worker sees it:

- in Redis when ``REDIS_URL`` is set (one Lua script reads, refills and takes atomically, so
  workers on many machines share one rate);
- else in a small file in the data folder, under an exclusive ``flock`` (the embedded defaults
  run every process on one machine; no server to install). A database row would do too, but
  would take a write lock on SQLite that the deploy's own writes queue behind.

:func:`once` is a marker with an expiry in the same place: the first caller of a key gets True
(one region writes a record every region needs); :func:`touch` refreshes a marker and says
whether it was still there (the reaper notices that it did not run for a while, or that Redis
lost its data).

Redis being unreachable never fails the caller: a bucket lets the call go (AWS's own throttling
and the call's retries take over), a marker reads as absent.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
import time
from pathlib import Path

from django.conf import settings

_LUA = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 't') or ARGV[2])
local stamp = tonumber(redis.call('HGET', KEYS[1], 's') or ARGV[3])
local now = tonumber(ARGV[3])
tokens = math.min(tonumber(ARGV[2]), tokens + math.max(0, now - stamp) * tonumber(ARGV[1]))
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / tonumber(ARGV[1]) end
redis.call('HSET', KEYS[1], 't', tokens, 's', now)
redis.call('EXPIRE', KEYS[1], 3600)
return tostring(wait)
"""
_redis = None
_redis_lock = threading.Lock()
log = logging.getLogger("controlplane.ratelimit")


def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.RedisError, OSError)


def _client():
    global _redis
    with _redis_lock:
        if _redis is None:
            import redis

            _redis = redis.Redis.from_url(settings.REDIS_URL)
        return _redis


def _path(name: str) -> Path:
    folder = Path(settings.DATA_DIR) / "ratelimit"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (name.replace("/", "_").replace(":", "_") + ".json")


def _take_file(key: str, rate: float, burst: float) -> float:
    """Take a token from the file bucket: 0 when taken, else the seconds to wait before trying."""
    path = _path(key)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            raw = handle.read()
            state = json.loads(raw) if raw else {}
            now = time.time()
            tokens = min(burst, state.get("t", burst) + max(0.0, now - state.get("s", now)) * rate)
            wait = 0.0
            if tokens >= 1:
                tokens -= 1
            else:
                wait = (1 - tokens) / rate
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"t": tokens, "s": now}))
            handle.flush()
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
    return wait


def _take(key: str, rate: float, burst: float) -> float:
    if getattr(settings, "REDIS_URL", ""):
        try:
            return float(_client().eval(_LUA, 1, f"controlplane:bucket:{key}", rate, burst, time.time()))
        except _redis_errors() as exc:
            log.warning("rate limit %s: Redis unreachable (%s); going ahead without a token", key, exc)
            return 0.0
    return _take_file(key, rate, burst)


def acquire(key: str, *, rate: float, burst: float, timeout: float = 120.0) -> float:
    """Wait for a token of bucket ``key`` (``rate`` a second, up to ``burst`` saved); returns the
    seconds waited. Past ``timeout`` it goes ahead anyway (AWS then throttles, and the call's own
    retries take over)."""
    if rate <= 0:
        return 0.0
    started = time.monotonic()
    while True:
        wait = _take(key, rate, max(1.0, burst))
        if wait <= 0 or time.monotonic() - started > timeout:
            return time.monotonic() - started
        time.sleep(min(wait, 1.0))


def once(key: str, *, ttl: float) -> bool:
    """True for the first caller of ``key`` within ``ttl`` seconds, False for the others."""
    if getattr(settings, "REDIS_URL", ""):
        try:
            return bool(_client().set(f"controlplane:once:{key}", "1", nx=True, px=int(ttl * 1000)))
        except _redis_errors() as exc:
            log.warning("marker %s: Redis unreachable (%s); taking it", key, exc)
            return True
    path = _path(f"once-{key}")
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            raw = handle.read()
            now = time.time()
            if raw and float(raw) > now:
                return False
            handle.seek(0)
            handle.truncate()
            handle.write(str(now + ttl))
            return True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def forget(key: str) -> None:
    """Drop a :func:`once` marker (its holder failed; the next caller tries again)."""
    if getattr(settings, "REDIS_URL", ""):
        try:
            _client().delete(f"controlplane:once:{key}")
        except _redis_errors() as exc:
            log.warning("marker %s: Redis unreachable (%s); it expires by itself", key, exc)
        return
    try:
        os.unlink(_path(f"once-{key}"))
    except FileNotFoundError:
        pass


def touch(key: str, *, ttl: float) -> bool:
    """Set marker ``key`` to expire ``ttl`` seconds from now; returns whether it was still set
    (touched within its previous ``ttl``). False the first time, after a pause longer than
    ``ttl``, and when Redis restarted without its data or cannot be reached."""
    if getattr(settings, "REDIS_URL", ""):
        try:
            return _client().set(f"controlplane:seen:{key}", "1", px=int(ttl * 1000), get=True) is not None
        except _redis_errors() as exc:
            log.warning("marker %s: Redis unreachable (%s)", key, exc)
            return False
    path = _path(f"seen-{key}")
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            handle.seek(0)
            raw = handle.read()
            now = time.time()
            handle.seek(0)
            handle.truncate()
            handle.write(str(now + ttl))
            return bool(raw) and float(raw) > now
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
