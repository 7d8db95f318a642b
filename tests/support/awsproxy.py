"""A small HTTP proxy in front of the moto server that can add latency to every AWS call and
answer some Lambda calls with real-looking throttling errors, as AWS does under load.

Workers point ``AWS_ENDPOINT_URL`` at the proxy; tests and benchmarks turn faults on and off on
the proxy object and read what it did.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}


class FaultyAwsProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.delay_s = 0.0
        self.throttle_remaining = 0  # how many more Lambda calls to throttle
        self.throttle_match = "/versions"  # only calls whose path contains this (e.g. PublishVersion)
        self.throttled = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._client = httpx.Client(timeout=60, limits=httpx.Limits(max_connections=128))
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                proxy._count()
                if proxy.delay_s:
                    time.sleep(proxy.delay_s)
                if proxy._should_throttle(self.path):
                    payload = json.dumps({"Type": "User", "message": "Rate exceeded"}).encode()
                    self.send_response(429)
                    self.send_header("x-amzn-ErrorType", "TooManyRequestsException")
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                upstream = proxy._client.request(
                    self.command, proxy.upstream + self.path, headers=headers, content=body
                )
                data = upstream.content
                self.send_response(upstream.status_code)
                for key, value in upstream.headers.multi_items():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-encoding":
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def _count(self) -> None:
        with self._lock:
            self.requests += 1

    def _should_throttle(self, path: str) -> bool:
        if not path.startswith("/2015-03-31/functions") or self.throttle_match not in path:
            return False
        with self._lock:
            if self.throttle_remaining > 0:
                self.throttle_remaining -= 1
                self.throttled += 1
                return True
        return False

    def reset_faults(self) -> None:
        with self._lock:
            self.delay_s = 0.0
            self.throttle_remaining = 0
            self.throttled = 0
            self.requests = 0

    def start(self) -> FaultyAwsProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._client.close()
