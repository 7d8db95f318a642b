"""The REST API over httpx, with every failure turned into a CliError with the right exit code."""

from __future__ import annotations

import functools
import ssl
import sys
import time
from typing import Any

# httpx's package imports its own command-line tool when click, pygments and rich are installed
# (as they are on many CI images): tens of milliseconds of start-up this command never uses. Its
# package falls back to a stub when that import fails, which this makes it do.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

import httpx  # noqa: E402

from . import __version__, exits  # noqa: E402
from .exits import CliError  # noqa: E402

# Reads are retried across a short blip (a web server restarting behind a load balancer);
# writes are not, except the deployment create which carries an Idempotency-Key.
READ_RETRY_S = 10.0


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().splitlines()
        return text[0][:200] if text else response.reason_phrase
    if isinstance(body, dict):
        code, detail = body.get("code", ""), body.get("detail", "")
        if code and detail:
            return f"{detail} ({code})"
        return str(detail or code or body)[:300]
    return str(body)[:300]


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The verifying TLS context (loading the CA bundle takes tens of ms: made once, and by
    ``deploy`` on a thread while it zips)."""
    return httpx.create_ssl_context()


class Api:
    """A session with one control plane. ``base_url`` is the installation's URL (without /api/v1)."""

    def __init__(self, base_url: str, token: str, *, team: str = "", timeout: float = 30.0, verbose=False):
        self.base_url = base_url.rstrip("/")
        self.team = team
        self.verbose = verbose
        self.client = httpx.Client(
            base_url=f"{self.base_url}/api/v1",
            headers={
                "Authorization": f"Bearer {token}",
                "User-Agent": f"controlplane-cli/{__version__}",
                "Accept": "application/json",
            },
            timeout=timeout,
            follow_redirects=False,
            # Plain http (loopback, a private network) needs no TLS context at all.
            verify=tls_context() if self.base_url.startswith("https://") else False,
        )

    def close(self) -> None:
        self.client.close()

    def request(self, method: str, path: str, *, retry: bool | None = None, **kwargs: Any) -> Any:
        """The decoded JSON answer of a 2xx (None for 204). Raises CliError: 2 for 401, 5 for any
        other 4xx, 6 for a connection failure, a timeout or a 5xx."""
        if self.team:
            kwargs["params"] = {**(kwargs.get("params") or {}), "team": self.team}
        retry = method == "GET" if retry is None else retry
        deadline = time.monotonic() + (READ_RETRY_S if retry else 0)
        delay = 0.2
        while True:
            try:
                began = time.perf_counter()
                response = self.client.request(method, path, **kwargs)
                if self.verbose:
                    took = (time.perf_counter() - began) * 1000
                    print(
                        f"controlplane: {method} {path} {response.status_code} {took:.0f} ms", file=sys.stderr
                    )
            except httpx.TimeoutException:
                error = CliError(
                    exits.UNREACHABLE, f"{self.base_url} did not answer in time ({method} {path})."
                )
            except httpx.TransportError as exc:
                error = CliError(
                    exits.UNREACHABLE, f"cannot reach {self.base_url}: {exc or type(exc).__name__}"
                )
            else:
                if response.status_code < 400:
                    return None if response.status_code == 204 or not response.content else response.json()
                if response.status_code >= 500:
                    error = CliError(
                        exits.UNREACHABLE,
                        f"the control plane answered {response.status_code} to {method} {path}: "
                        f"{_detail(response)}",
                    )
                elif response.status_code == 401:
                    raise CliError(
                        exits.USAGE, f"not authenticated: {_detail(response)}; check CONTROLPLANE_TOKEN"
                    )
                else:
                    raise CliError(exits.REFUSED, f"refused ({response.status_code}): {_detail(response)}")
            if time.monotonic() + delay > deadline:
                raise error
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def pages(self, path: str, params: dict | None = None) -> list[dict]:
        """Every result of a paginated list (follows ``next``)."""
        results: list[dict] = []
        body = self.get(path, params={**(params or {}), "limit": 200})
        while True:
            results.extend(body.get("results", []))
            nxt = body.get("next")
            if not nxt:
                return results
            body = self.get(httpx.URL(nxt).raw_path.decode().removeprefix("/api/v1"))


def exchange_oidc(base_url: str, *, id_token: str, app: str, team: str = "", timeout: float = 30.0) -> dict:
    """POST the CI provider's ID token to ``/api/v1/auth/oidc/``; returns the answer (``token``,
    ``expires_at``, ...). Raises CliError (5 when no trust policy matches, 2 when the token is
    refused as invalid, 6 when unreachable)."""
    body = {"token": id_token, "app": app}
    if team:
        body["team"] = team
    try:
        response = httpx.post(
            f"{base_url.rstrip('/')}/api/v1/auth/oidc/",
            json=body,
            timeout=timeout,
            headers={"User-Agent": f"controlplane-cli/{__version__}"},
        )
    except httpx.TransportError as exc:
        raise CliError(exits.UNREACHABLE, f"cannot reach {base_url}: {exc or type(exc).__name__}")
    if response.status_code >= 500:
        raise CliError(exits.UNREACHABLE, f"the OIDC exchange answered {response.status_code}")
    if response.status_code == 401:
        raise CliError(exits.USAGE, f"the OIDC token was refused: {_detail(response)}")
    if response.status_code >= 400:
        raise CliError(exits.REFUSED, f"the OIDC exchange was refused: {_detail(response)}")
    return response.json()
