"""A gunicorn config for benchmarks: each request's CPU time (of the thread that served it) and
wall time, one JSON line per request appended to ``$BENCH_REQUEST_LOG``. CPU time per request
holds on a machine that others load, where wall time does not.

    gunicorn -c bench/gunicorn_timing.py controlplane.wsgi:application ...
"""

from __future__ import annotations

import json
import os
import threading
import time

_local = threading.local()
_lock = threading.Lock()


def pre_request(worker, req) -> None:
    _local.began = (time.perf_counter(), time.thread_time())


def post_request(worker, req, environ, resp) -> None:
    began = getattr(_local, "began", None)
    path = os.environ.get("BENCH_REQUEST_LOG")
    if began is None or not path:
        return
    wall, cpu = time.perf_counter() - began[0], time.thread_time() - began[1]
    line = json.dumps(
        {"method": req.method, "path": req.path, "query": req.query, "status": resp.status_code,
         "wall_ms": round(wall * 1000, 2), "cpu_ms": round(cpu * 1000, 2), "pid": os.getpid()}
    )  # fmt: skip
    with _lock, open(path, "a") as out:
        out.write(line + "\n")
