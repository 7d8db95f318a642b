"""Local HTTP servers standing in for a stage's regional endpoints (moto serves no execute-api
URLs). One server answers for every region under ``/<region>/...``; a test can make a region's
health path fail."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from regions.catalog import commercial_regions


class _Server(ThreadingHTTPServer):
    # Every region's health check at once (a rollback's, a wave's) connects at once: socketserver's
    # backlog of 5 would drop the rest of the SYNs, each then retried by the client a second later.
    request_queue_size = 128


class RegionEndpoints:
    def __init__(self) -> None:
        self.failing: set[str] = set()
        self.hits: dict[str, int] = {}
        self._lock = threading.Lock()
        endpoints = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                region = self.path.strip("/").split("/")[0]
                with endpoints._lock:
                    endpoints.hits[region] = endpoints.hits.get(region, 0) + 1
                failing = region in endpoints.failing
                body = b"unhealthy" if failing else b'{"status": "ok"}'
                self.send_response(503 if failing else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def overrides(self) -> dict[str, str]:
        """``ENDPOINT_OVERRIDES``: every region's endpoint is a path on this server."""
        return {code: f"{self.url}/{code}" for code in commercial_regions()}

    def start(self) -> RegionEndpoints:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
