"""Real processes for tests: a moto server (fake AWS shared between processes) and a Celery
worker subprocess using the configured broker (filesystem on a fresh machine, Redis in CI)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from django.conf import settings

from .strict_aws import Rules, StrictAws, moto_app, serve

ROOT = Path(__file__).resolve().parents[2]


class MotoServer:
    """moto's server in a thread of the test process, on a free loopback port, behind the strict
    mode (``self.strict``: its rules, on with short delays; see :mod:`.strict_aws`)."""

    def __init__(self) -> None:
        self.strict = StrictAws(moto_app(), Rules.fast())

    def start(self) -> MotoServer:
        self._server, self.url = serve(self.strict)
        return self

    def reset(self) -> None:
        """Forget every AWS resource (between tests); the strict rules are back to their test
        defaults."""
        httpx.post(f"{self.url}/moto-api/reset", timeout=10).raise_for_status()
        self.strict.rules = Rules.fast()

    def stop(self) -> None:
        self._server.shutdown()


class WorkerProcess:
    """``celery worker`` in a subprocess, reading the test run's queue and test database."""

    def __init__(
        self, *, env: dict[str, str] | None = None, concurrency: int = 8, name: str = "w1", queue: str = ""
    ):
        self.extra_env = env or {}
        # Its own queue keeps another worker of the session from answering in its place.
        self.queue = queue or settings.CELERY_TASK_DEFAULT_QUEUE
        self.concurrency = concurrency
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.log_path = Path(settings.DATA_DIR) / f"worker-{name}.log"

    def start(self, *, wait: bool = True) -> WorkerProcess:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "CONTROLPLANE_TEST_WORKER": "1",
            "PYTHONUNBUFFERED": "1",
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "controlplane", "worker",
                "--loglevel", "INFO", "--pool", "threads", "--concurrency", str(self.concurrency),
                "--queues", self.queue, "--hostname", f"{self.name}@%h",
                "--without-gossip", "--without-mingle", "--without-heartbeat",
            ],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self, timeout: float = 60) -> dict:
        """Send ``workers.ping`` through the broker and wait for this worker's answer."""
        from workers.tasks import ping

        result = ping.apply_async(queue=self.queue)
        try:
            return result.get(timeout=timeout)
        except Exception as exc:
            raise RuntimeError(f"worker did not answer: {exc}\n{self.log()}") from exc

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:] if self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: the worker dies mid-task with no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(predicate, *, timeout: float = 30, interval: float = 0.05, message: str = "condition"):
    """Poll ``predicate`` until it returns something truthy; fail with ``message`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)
