"""Fake AWS for the deploy benchmarks, in a process of its own: moto's server application, served
twice from one process (one state): as is, and with latency added to every call. Real AWS is on
other machines; running the emulator inside the benchmark's process would charge its CPU (and
its share of the GIL) to the control plane. The latency is added inside the server, not by a
forwarding proxy, so the emulator spends its CPU on answering calls, as little of it as moto
allows.

    python bench/aws_emulator.py [DELAY_MS] [strict] [--model JSON]

Prints one JSON line, ``{"moto": URL, "proxy": URL, "stats": URL}`` ("proxy" is the URL with
the latency), then serves until stdin closes. ``GET <stats>`` answers how many AWS calls the
latency URL served, and how many of each operation per region (``{"requests": n, "calls":
{"region service:Operation": n}}``); ``GET <stats>?since=T&wait=S`` also the first call that
arrived at or after ``T`` (a ``time.time()``), waiting up to ``S`` seconds for one.

- ``DELAY_MS`` alone: a fixed latency on every call (the older, flat model).
- ``--model JSON``: the model of bench/aws_model.py (``Model.to_json()``): round trip by region
  from the home region, service time per operation, and Lambda's settling (the strict mode's
  ``lambda_states`` rule with the model's windows; also its IAM propagation, Route 53
  ``PriorRequestNotComplete`` and ACM validation rules; the per-account API Gateway and Route 53
  rate quotas stay off, see the model's docstring). A model with ``flat_ms`` is the flat model.
- ``strict``: every strict rule of tests/support/strict_aws.py with its default delays (under
  ``--model``: with the model's Lambda windows). ``GET <proxy>/_strict/stats`` then answers the
  calls per operation and the refusals per rule.
"""

from __future__ import annotations

import argparse
import collections
import io
import json
import logging
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aws_model import Model, operation_of  # noqa: E402
from moto.moto_server.threaded_moto_server import MotoRequestHandler  # noqa: E402
from moto.server import DomainDispatcherApplication, create_backend_app  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

from tests.support.strict_aws import _SCOPE, Rules, StrictAws  # noqa: E402


class Latency:
    """WSGI middleware: every AWS call takes what the model says (a thread per connection, so
    waiting calls never hold each other up). Half the round trip passes before the inner app
    sees the call and half after; the service time runs alongside the inner app's own work."""

    def __init__(self, app, model: Model) -> None:
        self.app, self.model = app, model
        self.requests = 0
        self.calls: Counter = Counter()  # "region service:Operation" -> n
        # (time.time() of its arrival, "region service:Operation") of each call, for first_since
        self.arrivals: collections.deque[tuple[float, str]] = collections.deque(maxlen=100_000)
        self._arrived = threading.Condition()
        self.applied: dict[str, float] = {}  # "region service:Operation" -> when AWS last handled one
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if scope is None:  # (moto's own API, the strict mode's control URLs)
            return self.app(environ, start_response)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        region, service = scope.group(1), scope.group(2)
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        operation = operation_of(
            service, environ.get("REQUEST_METHOD", "GET"), unquote(environ.get("PATH_INFO", "")),
            parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True), headers, body,
        )  # fmt: skip
        rtt, service_s = self.model.latency_s(region, operation)
        with self._lock:
            self.requests += 1
            self.calls[f"{region} {operation}"] += 1
        with self._arrived:
            self.arrivals.append((time.time(), f"{region} {operation}"))
            self._arrived.notify_all()
        time.sleep(rtt / 2)
        started = time.monotonic()
        result = self.app(environ, start_response)
        try:
            payload = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        with self._lock:
            self.applied[f"{region} {operation}"] = time.time()
        time.sleep(max(0.0, service_s - (time.monotonic() - started)) + rtt / 2)
        return [payload]

    def first_since(self, since: float, wait_s: float) -> dict | None:
        """The first call that arrived at or after ``since`` (a ``time.time()``), waiting up to
        ``wait_s`` for one: ``{"at": its arrival, "call": "region service:Operation"}`` or None."""
        deadline = time.monotonic() + wait_s
        with self._arrived:
            while True:
                found = next(((at, call) for at, call in self.arrivals if at >= since), None)
                left = deadline - time.monotonic()
                if found is not None or left <= 0:
                    return {"at": found[0], "call": found[1]} if found else None
                self._arrived.wait(left)

    def stats(self) -> dict:
        with self._lock:
            return {"requests": self.requests, "calls": dict(self.calls), "applied": dict(self.applied)}


def serve(app) -> str:
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}"


def rules_for(model: Model, *, strict: bool) -> Rules:
    """The strict mode's rules under ``model``."""
    rules = Rules()
    if model.flat_ms is not None and not strict:
        for name in ("acm_validation", "apigw_domain_needs_issued", "lambda_states", "iam_propagation",
                     "route53_rate", "route53_pending", "apigw_limits"):  # fmt: skip
            setattr(rules, name, False)
        return rules
    if model.flat_ms is None:
        rules.lambda_pending_s, rules.lambda_update_s = model.pending_s, model.update_s
        rules.lambda_jitter = model.settle_jitter
        if not strict:  # (see bench/aws_model.py: per-account quotas, not the control plane's speed)
            rules.apigw_limits = rules.route53_rate = False
    return rules


def build(model: Model, *, strict: bool):
    """(moto's app, the app with the model in front)."""
    moto = DomainDispatcherApplication(create_backend_app)
    if model.flat_ms is not None and not strict:
        return moto, Latency(moto, model)  # (no strict layer at all: the older flat emulator)
    return moto, Latency(StrictAws(moto, rules_for(model, strict=strict)), model)


def switch(latency: Latency, model: Model, *, strict: bool) -> None:
    """Play ``model`` from now on (the AWS state is kept)."""
    inner = latency.app
    if isinstance(inner, StrictAws):
        inner.rules = rules_for(model, strict=strict)
    latency.model = model


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    parser = argparse.ArgumentParser()
    parser.add_argument("delay_ms", nargs="?", type=float, default=50.0)
    parser.add_argument("mode", nargs="?", choices=["strict"], default=None)
    parser.add_argument("--model", help="bench/aws_model.py Model as JSON (instead of DELAY_MS)")
    args = parser.parse_args()
    model = Model.from_json(args.model) if args.model else Model(flat_ms=args.delay_ms)
    strict = args.mode == "strict"
    moto, latency = build(model, strict=strict)

    class Stats(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            query = parse_qs(urlparse(self.path).query)
            answer = latency.stats()
            if "since" in query:  # ?since=T[&wait=S]: the first call at or after T (long poll)
                answer["first"] = latency.first_since(
                    float(query["since"][0]), float(query.get("wait", ["0"])[0])
                )
            body = json.dumps(answer).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):  # noqa: N802
            # POST {Model as JSON}: play another model from now on (same AWS state).
            length = int(self.headers.get("Content-Length") or 0)
            switch(latency, Model.from_json(self.rfile.read(length)), strict=strict)
            self.do_GET()

        def log_message(self, *args):
            pass

    stats = ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    threading.Thread(target=stats.serve_forever, daemon=True).start()
    urls = {
        "moto": serve(moto),
        "proxy": serve(latency),
        "stats": f"http://127.0.0.1:{stats.server_address[1]}",
    }
    print(json.dumps(urls), flush=True)
    sys.stdin.read()  # until the benchmark closes our stdin (or exits)


if __name__ == "__main__":
    main()
