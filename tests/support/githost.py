"""A fake GitHub and GitLab API on loopback that checks every request against the providers'
documented shapes (paths, auth and version headers, body fields and their values) and records
what it accepted. A request that breaks the documented shape gets 422 and lands in ``problems``."""

from __future__ import annotations

import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import jwt

SHA = re.compile(r"^[0-9a-f]{40}$")
GITHUB_DEPLOYMENT_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
GITHUB_COMMIT_STATES = {"error", "failure", "pending", "success"}
GITLAB_COMMIT_STATES = {"pending", "running", "success", "failed", "canceled", "skipped"}
GITLAB_DEPLOYMENT_STATES = {"created", "running", "success", "failed", "canceled"}


class FakeGitHost:
    def __init__(
        self, *, github_token: str = "", gitlab_token: str = "", app_public_key=None, app_id: str = ""
    ):
        self.github_token = github_token
        self.gitlab_token = gitlab_token
        self.app_public_key = app_public_key  # a GitHub App's, to check its JWT
        self.app_id = app_id
        self.installation_token = "ghs_installation_token_1"
        self.accepted: list[tuple[str, str, dict]] = []  # (method, path, body)
        self.github_deployments: dict[int, str] = {}  # id → environment
        self.problems: list[str] = []
        self.fail_next: list[int] = []  # answer these status codes to the next requests
        self.hold = threading.Event()  # cleared: every request waits until it is set
        self.hold.set()
        self._ids = itertools.count(1001)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _answer(self, code: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                fake.hold.wait(timeout=30)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = None
                with fake._lock:
                    if fake.fail_next:
                        self._answer(fake.fail_next.pop(0), {"message": "injected failure"})
                        return
                code, answer, problem = fake.check(self.command, self.path, dict(self.headers), body)
                with fake._lock:
                    if problem:
                        fake.problems.append(f"{self.command} {self.path}: {problem}")
                    elif code < 300:
                        fake.accepted.append((self.command, unquote(self.path), body))
                self._answer(code, answer)

            do_POST = do_PUT = do_GET = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.hold.set()
        self._server.shutdown()

    # --- The documented shapes ------------------------------------------------------------

    def check(self, method: str, path: str, headers: dict, body) -> tuple[int, dict, str]:
        headers = {k.lower(): v for k, v in headers.items()}
        if not headers.get("user-agent"):
            return 403, {"message": "User-Agent required"}, "no User-Agent (GitHub refuses those)"
        if body is None:
            return 400, {"message": "Problems parsing JSON"}, "body is not JSON"
        if path.startswith("/api/v4/"):
            return self._gitlab(method, path, headers, body)
        return self._github(method, path, headers, body)

    def _github(self, method, path, headers, body):
        if headers.get("accept") != "application/vnd.github+json":
            return 415, {}, f"Accept is {headers.get('accept')!r}"
        if headers.get("x-github-api-version") != "2022-11-28":
            return 400, {}, f"X-GitHub-Api-Version is {headers.get('x-github-api-version')!r}"
        auth = headers.get("authorization", "")
        m = re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)
        if m and method == "POST":
            try:
                claims = jwt.decode(auth.removeprefix("Bearer "), self.app_public_key, algorithms=["RS256"])
            except jwt.PyJWTError as exc:
                return 401, {"message": "Bad credentials"}, f"App JWT: {exc}"
            if str(claims.get("iss")) != self.app_id or claims["exp"] - claims["iat"] > 600:
                return 401, {"message": "Bad credentials"}, f"App JWT claims {claims}"
            return 201, {"token": self.installation_token, "expires_at": "2099-01-01T00:00:00Z"}, ""
        wanted = {self.github_token, self.installation_token} - {""}
        if auth.removeprefix("Bearer ") not in wanted or not auth.startswith("Bearer "):
            return 401, {"message": "Bad credentials"}, ""
        m = re.fullmatch(r"/repos/([\w.-]+)/([\w.-]+)/deployments", path)
        if m and method == "POST":
            problem = self._fields(body, {"ref": str, "environment": str, "production_environment": bool,
                                          "transient_environment": bool, "required_contexts": list,
                                          "auto_merge": bool, "task": str, "description": str})  # fmt: skip
            if not problem and body["transient_environment"] is not False:
                problem = "transient_environment must be false"
            if not problem and body["production_environment"] != (body["environment"] == "production"):
                problem = "production_environment must be true for production only"
            if problem:
                return 422, {"message": problem}, problem
            new_id = next(self._ids)
            self.github_deployments[new_id] = body["environment"]
            return 201, {"id": new_id, "ref": body["ref"], "environment": body["environment"]}, ""
        m = re.fullmatch(r"/repos/([\w.-]+)/([\w.-]+)/deployments/(\d+)/statuses", path)
        if m and method == "POST":
            created = int(m.group(3)) in self.github_deployments
            shape = {"state": str, "description": str, "environment_url": str, "log_url": str,
                     "environment": str, "auto_inactive": bool}  # fmt: skip
            problem = self._fields(body, shape)
            if not problem and body["state"] not in GITHUB_DEPLOYMENT_STATES:
                problem = f"state {body['state']!r}"
            if not problem and len(body["description"]) > 140:
                problem = "description over 140 characters"
            if not problem and not created:
                return 404, {"message": "Not Found"}, f"deployment {m.group(3)} was never created"
            return (422, {"message": problem}, problem) if problem else (201, {"id": next(self._ids)}, "")
        m = re.fullmatch(r"/repos/([\w.-]+)/([\w.-]+)/statuses/([0-9a-f]+)", path)
        if m and method == "POST":
            problem = self._fields(
                body, {"state": str, "target_url": str, "description": str, "context": str}
            )
            if not problem and body["state"] not in GITHUB_COMMIT_STATES:
                problem = f"state {body['state']!r}"
            if not problem and not SHA.match(m.group(3)):
                problem = "not a full sha"
            if not problem and len(body["description"]) > 140:
                problem = "description over 140 characters"
            return (422, {"message": problem}, problem) if problem else (201, {"id": next(self._ids)}, "")
        return 404, {"message": "Not Found"}, f"no such GitHub endpoint {method} {path}"

    def _gitlab(self, method, path, headers, body):
        if headers.get("private-token") != self.gitlab_token:
            return 401, {"message": "401 Unauthorized"}, ""
        m = re.fullmatch(r"/api/v4/projects/([^/]+)/statuses/([0-9a-f]+)", path)
        if m and method == "POST":
            problem = self._fields(body, {"state": str, "name": str, "target_url": str, "description": str})
            if not problem and "%2F" not in m.group(1):
                problem = "the project path must be URL-encoded"
            if not problem and body["state"] not in GITLAB_COMMIT_STATES:
                problem = f"state {body['state']!r}"
            return (400, {"message": problem}, problem) if problem else (201, {"id": next(self._ids)}, "")
        m = re.fullmatch(r"/api/v4/projects/([^/]+)/deployments", path)
        if m and method == "POST":
            problem = self._fields(
                body, {"environment": str, "sha": str, "ref": str, "tag": bool, "status": str}
            )
            if not problem and body["status"] not in GITLAB_DEPLOYMENT_STATES:
                problem = f"status {body['status']!r}"
            return (400, {"message": problem}, problem) if problem else (201, {"id": next(self._ids)}, "")
        m = re.fullmatch(r"/api/v4/projects/([^/]+)/deployments/(\d+)", path)
        if m and method == "PUT":
            problem = self._fields(body, {"status": str})
            if not problem and body["status"] not in GITLAB_DEPLOYMENT_STATES:
                problem = f"status {body['status']!r}"
            return (400, {"message": problem}, problem) if problem else (200, {"id": int(m.group(2))}, "")
        return 404, {"message": "404 Not Found"}, f"no such GitLab endpoint {method} {path}"

    @staticmethod
    def _fields(body: dict, types: dict) -> str:
        for name, kind in types.items():
            if name not in body:
                return f"missing {name}"
            if not isinstance(body[name], kind):
                return f"{name} is not a {kind.__name__}"
        return ""

    # --- Reading what arrived -------------------------------------------------------------

    def states(self, kind: str) -> list:
        """What was posted, in order: ``deployment`` → GitHub deployment status states,
        ``commit`` → (context, state) of commit statuses."""
        if kind == "deployment":
            return [
                b["state"] for m, p, b in self.accepted if p.endswith("/statuses") and "/deployments/" in p
            ]
        return [
            (b["context"], b["state"])
            for m, p, b in self.accepted
            if re.search(r"/statuses/[0-9a-f]{40}$", p)
        ]
