"""Following a deployment to its end: per-region progress on a terminal, timestamped lines
otherwise, JSON for machines."""

from __future__ import annotations

import json
import sys
import time
from typing import TYPE_CHECKING, TextIO

from . import exits
from .exits import CliError

if TYPE_CHECKING:
    from .api import Api

# The log is read with a long-poll: the server answers as soon as there is a new line or the
# deployment finished, or after WAIT_S with nothing new (well under the HTTP client's timeout and
# the idle timeouts of proxies). A server that answers at once instead (one from before the
# long-poll) is read again after POLL_S, as it always was.
WAIT_S = 20.0
POLL_S = 0.1
REGIONS_EVERY_S = 0.5  # how often a terminal's region table is refreshed
MARKS = {
    "queued": "·", "running": "▸", "succeeded": "✓", "failed": "✗",
    "rolled_back": "↺", "cancelled": "-", "skipped": "-",
}  # fmt: skip


def event_line(event: dict) -> str:
    where = event.get("region") or "-"
    step = f"{event['step']}: " if event.get("step") else ""
    took = f" ({event['duration_ms']} ms)" if event.get("duration_ms") is not None else ""
    return f"{event.get('created_at', '')} [{where}] {step}{event.get('message', '')}{took}"


def result(deployment: dict, base_url: str) -> dict:
    return {
        "deployment": deployment["id"],
        "kind": deployment.get("kind"),
        "app": deployment.get("app"),
        "stage": deployment.get("stage"),
        "status": deployment["status"],
        "exit_code": exits.for_deployment(deployment),
        "url": f"{base_url}/deployments/{deployment['id']}/",
        "release": (deployment.get("release") or {}).get("number"),
        "commit": (deployment.get("commit") or {}).get("sha", ""),
        "error": deployment.get("error", ""),
        "regions": [
            {k: r.get(k) for k in ("region", "status", "version", "previous_version", "error", "error_code")}
            for r in deployment.get("regions", [])
        ],
    }


class Renderer:
    """Plain lines (not a terminal): each log line with its time and region, then a summary."""

    wants_regions = False

    def __init__(self, out: TextIO = sys.stdout):
        self.out = out

    def start(self, deployment: dict, base_url: str) -> None:
        self.out.write(
            f"deployment {deployment['id']} of {deployment.get('app')} {deployment.get('stage')}: "
            f"{base_url}/deployments/{deployment['id']}/\n"
        )
        self.out.flush()

    def event(self, event: dict) -> None:
        self.out.write(event_line(event) + "\n")
        self.out.flush()

    def regions(self, deployment: dict) -> None:
        pass

    def finish(self, deployment: dict, base_url: str) -> None:
        for r in deployment.get("regions", []):
            version = f" version {r['version']}" if r.get("version") else ""
            error = f": {r['error'].splitlines()[0]}" if r.get("error") else ""
            self.out.write(f"  {r['region']}: {r['status']}{version}{error}\n")
        self.out.write(f"deployment {deployment['id']} {deployment['status'].replace('_', ' ')}\n")
        self.out.flush()


class TerminalRenderer(Renderer):
    """Log lines scroll; below them a table of regions is redrawn in place."""

    wants_regions = True

    def __init__(self, out: TextIO = sys.stdout):
        super().__init__(out)
        self.drawn = 0
        self.table: list[str] = []

    def _erase(self) -> None:
        if self.drawn:
            self.out.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _draw(self) -> None:
        for line in self.table:
            self.out.write(line + "\n")
        self.drawn = len(self.table)
        self.out.flush()

    def event(self, event: dict) -> None:
        self._erase()
        self.out.write(event_line(event) + "\n")
        self._draw()

    def regions(self, deployment: dict) -> None:
        self._erase()
        self.table = [
            f"  {MARKS.get(r['status'], '?')} {r['region']:<16} {r['status']:<12} "
            f"{r.get('step') or '':<10} {('v' + r['version']) if r.get('version') else ''}"
            for r in deployment.get("regions", [])
        ]
        self._draw()

    def finish(self, deployment: dict, base_url: str) -> None:
        self.regions(deployment)
        self.drawn = 0
        self.out.write(f"deployment {deployment['id']} {deployment['status'].replace('_', ' ')}\n")
        self.out.flush()


class JsonRenderer(Renderer):
    """``--json``: one object at the end; with ``lines`` (``--follow``) a JSON line per log line
    first, then the result as the last line."""

    def __init__(self, out: TextIO = sys.stdout, *, lines: bool = False):
        super().__init__(out)
        self.lines = lines

    def start(self, deployment: dict, base_url: str) -> None:
        pass

    def event(self, event: dict) -> None:
        if self.lines:
            self.out.write(json.dumps({"type": "event", **event}) + "\n")
            self.out.flush()

    def finish(self, deployment: dict, base_url: str) -> None:
        body = result(deployment, base_url)
        if self.lines:
            body = {"type": "result", **body}
        self.out.write(json.dumps(body) + "\n")
        self.out.flush()


def follow(
    api: Api,
    deployment_id: int,
    renderer: Renderer,
    *,
    timeout: float | None,
    after: int = 0,
    cancel_on_interrupt: bool = False,
) -> dict:
    """Show the deployment's log from ``after`` until it finishes; returns its final state.
    Raises CliError(TIMED_OUT) past ``timeout`` seconds and CliError(INTERRUPTED) on Ctrl-C (the
    deployment goes on, unless ``cancel_on_interrupt``)."""
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        last_regions = 0.0
        while True:
            wait = WAIT_S
            if renderer.wants_regions:
                wait = min(wait, max(0.0, last_regions + REGIONS_EVERY_S - time.monotonic()))
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - time.monotonic()))
            asked = time.monotonic()
            page = api.get(
                f"/deployments/{deployment_id}/events/",
                params={"after": after, "limit": 1000, "wait": f"{wait:.2f}"},
            )
            for event in page["results"]:
                renderer.event(event)
            after = page["last_seq"]
            if page["finished"] and len(page["results"]) < 1000:
                closed = bool(page["results"]) and page["results"][-1].get("step") == "finish"
                if not closed:
                    # The closing line may be written just after the status: one more read drains it.
                    tail = api.get(f"/deployments/{deployment_id}/events/", params={"after": after})
                    for event in tail["results"]:
                        renderer.event(event)
                return api.get(f"/deployments/{deployment_id}/")
            now = time.monotonic()
            if renderer.wants_regions and now - last_regions >= REGIONS_EVERY_S:
                renderer.regions(api.get(f"/deployments/{deployment_id}/"))
                last_regions = now
            if deadline is not None and now >= deadline:
                raise CliError(
                    exits.TIMED_OUT,
                    f"timed out waiting for deployment {deployment_id}; it goes on "
                    f"(controlplane logs {deployment_id} --follow)",
                )
            if not page["results"] and now - asked < min(wait, POLL_S):
                time.sleep(POLL_S)  # answered at once with nothing new: a server that does not wait
    except KeyboardInterrupt:
        raise interrupted(api, deployment_id, cancel=cancel_on_interrupt)


def interrupted(api: Api, deployment_id: int, *, cancel: bool) -> CliError:
    """What Ctrl-C while following ends in: following stops and the deployment goes on, or, with
    ``cancel`` (``--cancel-on-interrupt``), it is cancelled first."""
    if cancel:
        try:
            api.post(f"/deployments/{deployment_id}/cancel/")
        except CliError as exc:
            return CliError(
                exits.INTERRUPTED, f"interrupted; cancelling deployment {deployment_id} failed: {exc.message}"
            )
        return CliError(exits.INTERRUPTED, f"interrupted; deployment {deployment_id} cancelled")
    return CliError(
        exits.INTERRUPTED,
        f"stopped following; deployment {deployment_id} goes on (controlplane logs {deployment_id} --follow)",
    )
