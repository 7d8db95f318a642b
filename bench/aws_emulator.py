"""Fake AWS for the deploy benchmarks, in a process of its own: a moto server behind the proxy
that adds latency to every call. Real AWS is on other machines; running the emulator inside the
benchmark's process would charge its CPU (and its share of the GIL) to the control plane.

Prints one JSON line, ``{"moto": URL, "proxy": URL}``, then serves until stdin closes. The
proxy's added latency is the first argument, in milliseconds; ``GET <proxy>/__proxy/requests``
answers how many AWS calls went through it.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moto.server import ThreadedMotoServer  # noqa: E402

from tests.support.awsproxy import FaultyAwsProxy  # noqa: E402


def main() -> None:
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    delay_ms = float(sys.argv[1]) if len(sys.argv) > 1 else 50.0
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    proxy = FaultyAwsProxy(f"http://{host}:{port}").start()
    proxy.delay_s = delay_ms / 1000

    class Stats(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's naming
            body = json.dumps({"requests": proxy.requests}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    stats = ThreadingHTTPServer(("127.0.0.1", 0), Stats)
    threading.Thread(target=stats.serve_forever, daemon=True).start()
    print(
        json.dumps(
            {"moto": f"http://{host}:{port}", "proxy": proxy.url,
             "stats": f"http://127.0.0.1:{stats.server_address[1]}"}
        ),
        flush=True,
    )  # fmt: skip
    sys.stdin.read()  # until the benchmark closes our stdin (or exits)
    proxy.stop()
    moto.stop()


if __name__ == "__main__":
    main()
