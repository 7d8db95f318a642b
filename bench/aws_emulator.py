"""Fake AWS for the deploy benchmarks, in a process of its own: moto's server application, served
twice from one process (one state): as is, and with a fixed latency added to every call. Real
AWS is on other machines; running the emulator inside the benchmark's process would charge its
CPU (and its share of the GIL) to the control plane. The latency is added inside the server,
not by a forwarding proxy, so the emulator spends its CPU on answering calls, as little of it
as moto allows.

Prints one JSON line, ``{"moto": URL, "proxy": URL, "stats": URL}`` ("proxy" is the URL with
the latency), then serves until stdin closes. The added latency is the first argument, in
milliseconds; ``GET <stats>`` answers how many AWS calls the latency URL served, and
``GET <stats>?since=T&wait=S`` also the first call that arrived at or after ``T`` (a
``time.time()``), waiting up to ``S`` seconds for one. A second
argument ``strict`` puts the strict mode (tests/support/strict_aws.py, default delays) behind
the latency URL: ``GET <proxy>/_strict/stats`` then answers the calls per operation and the
refusals per rule.
"""

from __future__ import annotations

import collections
import json
import logging
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moto.moto_server.threaded_moto_server import MotoRequestHandler  # noqa: E402
from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from tests.support.strict_aws import StrictAws  # noqa: E402


class Delayed:
    """WSGI middleware: every request waits ``delay_s`` before moto answers it (a thread per
    connection, so waiting requests do not hold each other up). Each request's arrival time
    (``time.time()``, the machine's clock, as the benchmark's processes read it) is kept, with
    what it called, for ``first_since``."""

    def __init__(self, app, delay_s: float) -> None:
        self.app, self.delay_s = app, delay_s
        self.requests = 0
        self.arrivals: collections.deque[tuple[float, str]] = collections.deque(maxlen=100_000)
        self._arrived = threading.Condition()

    def __call__(self, environ, start_response):
        at = time.time()
        call = (
            environ.get("HTTP_X_AMZ_TARGET") or f"{environ['REQUEST_METHOD']} {environ.get('PATH_INFO', '')}"
        )
        with self._arrived:
            self.requests += 1
            self.arrivals.append((at, call[:200]))
            self._arrived.notify_all()
        time.sleep(self.delay_s)
        return self.app(environ, start_response)

    def first_since(self, since: float, wait_s: float) -> dict | None:
        """The first call that arrived at or after ``since`` (waiting up to ``wait_s`` for one)."""
        deadline = time.monotonic() + wait_s
        with self._arrived:
            while True:
                found = next(((at, call) for at, call in self.arrivals if at >= since), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return {"at": found[0], "call": found[1]} if found else None
                self._arrived.wait(left)


def serve(app) -> str:
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    delay_ms = float(sys.argv[1]) if len(sys.argv) > 1 else 50.0
    moto = DomainDispatcherApplication(create_backend_app)
    strict = len(sys.argv) > 2 and sys.argv[2] == "strict"
    delayed = Delayed(StrictAws(moto) if strict else moto, delay_ms / 1000)

    class Stats(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            query = parse_qs(urlparse(self.path).query)
            answer = {"requests": delayed.requests}
            if "since" in query:  # ?since=T[&wait=S]: the first call at or after T (long poll)
                answer["first"] = delayed.first_since(
                    float(query["since"][0]), float(query.get("wait", ["0"])[0])
                )
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    stats = ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    threading.Thread(target=stats.serve_forever, daemon=True).start()
    urls = {
        "moto": serve(moto),
        "proxy": serve(delayed),
        "stats": f"http://127.0.0.1:{stats.server_address[1]}",
    }
    print(json.dumps(urls), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin (or exits)


if __name__ == "__main__":
    main()
