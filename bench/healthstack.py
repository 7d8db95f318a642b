"""What the health benchmarks share: a private control plane (fresh database and data folder),
local endpoint servers in a separate process, and real Celery worker (and beat) processes.

Run from the repository root: ``python bench/probes.py``, ``python bench/alert_latency.py``. With
``DATABASE_URL`` and ``REDIS_URL`` set they use them (a throwaway database); otherwise SQLite and
the filesystem broker.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RUN = uuid.uuid4().hex[:8]
os.environ.setdefault("CONTROLPLANE_DATA_DIR", tempfile.mkdtemp(prefix="controlplane-bench-"))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["CONTROLPLANE_TEST_RUN"] = RUN
for key, value in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
    "LOG_LEVEL": "WARNING",
}.items():
    os.environ.setdefault(key, value)

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402

OK = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{"status": "ok"}'


def _serve(count: int, ports, ready) -> None:
    """``count`` minimal HTTP servers on loopback answering 200 to every request (in a process of
    their own, so the probing process has its core to itself)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(OK)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        servers = [await asyncio.start_server(answer, "127.0.0.1", 0, backlog=1024) for _ in range(count)]
        ports.extend([s.sockets[0].getsockname()[1] for s in servers])
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class EndpointServers:
    """``count`` local endpoint servers in a child process."""

    def __init__(self, count: int) -> None:
        manager = multiprocessing.Manager()
        self._manager = manager
        self._ports = manager.list()
        ready = manager.Event()
        self._proc = multiprocessing.Process(target=_serve, args=(count, self._ports, ready), daemon=True)
        self._proc.start()
        ready.wait(30)
        self.ports = list(self._ports)

    def stop(self) -> None:
        self._proc.terminate()
        self._proc.join(5)
        self._manager.shutdown()


def beat_process(env: dict[str, str]) -> subprocess.Popen:
    """``celery beat`` with the project's schedule, for the run's queue."""
    log = (Path(settings.DATA_DIR) / f"beat-{RUN}.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "controlplane", "beat", "--loglevel", "WARNING",
         "--schedule", str(Path(settings.DATA_DIR) / f"beat-{RUN}")],
        cwd=ROOT, env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
                       "CONTROLPLANE_TEST_WORKER": "1", **env},
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def database():
    """Create the throwaway database; returns what ``teardown`` needs."""
    from django.test.utils import setup_databases

    return setup_databases(verbosity=0, interactive=False)


def teardown(state) -> None:
    from django.test.utils import teardown_databases

    teardown_databases(state, verbosity=0)
