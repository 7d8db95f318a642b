"""A local HTTP server answering every GET with one fixed body: a stand-in for a site or a service
that a sandboxed process tries to reach."""

from __future__ import annotations

import http.server
import threading


class TextServer:
    """Serves ``body`` on ``host`` (a free port) until ``close()``; ``url`` is its base URL."""

    def __init__(self, host: str, body: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((host, 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://{host}:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
