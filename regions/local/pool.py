"""Warm worker processes running deployed versions: a pool per version, one request at a time per
worker, a cap on all of them together, idle ones reaped. Spawning a worker is one function,
:func:`spawn`, so how a worker is isolated is decided in one place."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from controlplane import sandbox

log = logging.getLogger("regions.local")

RUNTIMES = Path(__file__).resolve().parent / "runtimes"
PYTHON_BOOTSTRAP = RUNTIMES / "python_bootstrap.py"
NODE_BOOTSTRAP = RUNTIMES / "node_bootstrap.mjs"
START_TIMEOUT_S = 10.0
# Where interpreters are looked for, and a worker's PATH: the machine's own, not a version
# manager's shims that the control plane's shell may have first on its PATH.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


class UnknownRuntime(Exception):
    """No interpreter on this machine runs the version's runtime."""


@dataclass(frozen=True)
class FunctionSpec:
    """One published version, ready to run: its configuration and unpacked code."""

    region: str
    function_name: str
    version: str
    runtime: str
    handler: str
    memory_mb: int
    timeout_s: int
    code_dir: str
    function_arn: str
    code_sha256: str = ""
    env: dict[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def key(self) -> tuple[str, str, str, str]:
        # The digest too: a function deleted and made again numbers its versions from 1 again.
        return (self.region, self.function_name, self.version, self.code_sha256)


@dataclass
class Outcome:
    """How an invocation ended: ``ok`` (``value`` is the handler's result), ``error`` (``value`` is
    Lambda's error object), ``timeout`` or ``crash`` (``value`` says what happened)."""

    kind: str
    value: object = None
    cold: bool = False


_warned: set[str] = set()


def runtime_argv(runtime: str, runtimes: Path = RUNTIMES) -> list[str]:
    """The command that runs a worker of ``runtime`` with the bootstraps in ``runtimes``; raises
    UnknownRuntime."""
    if runtime.startswith("python3"):
        exact = shutil.which(runtime, path=SYSTEM_PATH)  # python3.12 for python3.12, when the machine has it
        python = exact or shutil.which("python3", path=SYSTEM_PATH)
        if not python:
            raise UnknownRuntime(f"no python3 interpreter on this machine for runtime {runtime}")
        if not exact and runtime not in _warned:
            _warned.add(runtime)
            log.warning("runtime %s: no %s on this machine, running it with %s", runtime, runtime, python)
        return [python, "-S", "-B", "-u", str(runtimes / PYTHON_BOOTSTRAP.name)]
    if runtime.startswith("nodejs"):
        node = shutil.which("node", path=SYSTEM_PATH)
        if not node:
            raise UnknownRuntime(f"no node on this machine for runtime {runtime}")
        return [node, str(runtimes / NODE_BOOTSTRAP.name)]
    raise UnknownRuntime(f"runtime {runtime!r} is not supported by the local regions (python3.*, nodejs*)")


@dataclass(frozen=True)
class Isolation:
    """How workers are started: in ``controlplane.sandbox`` (their own namespaces, nothing of the
    control plane visible or reachable but the AWS emulator's ``loopback_ports``, the function's
    memory as a limit) or, where bubblewrap is absent and the operator said so, as plain processes."""

    sandboxed: bool = True
    loopback_ports: tuple[int, ...] = ()
    runtimes: Path = RUNTIMES  # the bootstraps
    readonly: tuple[str, ...] = ()  # host folders the workers read (the bootstraps, the code cache)
    processes: int = 64


def spawn(
    argv: list[str], *, env: dict[str, str], cwd: str, memory_mb: int, isolation: Isolation
) -> subprocess.Popen | sandbox.SandboxProcess:
    """Start one worker process with pipes on stdin, stdout (frames) and stderr (its log).
    The only place a worker process is made."""
    if isolation.sandboxed:
        return sandbox.spawn(
            argv,
            cwd=cwd,
            env=env,
            readonly=isolation.readonly,
            network="off",
            loopback_ports=isolation.loopback_ports,
            # Lambda's memory setting is the limit of everything in the sandbox.
            limits=sandbox.Limits(memory_bytes=max(memory_mb, 128) << 20, processes=isolation.processes),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
    return subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        close_fds=True,
    )


class _Lines(asyncio.Protocol):
    """A worker's stderr, split into lines for the log sink."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit, self.pending = emit, b""

    def data_received(self, data: bytes) -> None:
        *lines, self.pending = (self.pending + data).split(b"\n")
        for line in lines:
            self.emit(line.decode("utf-8", "replace"))

    def eof_received(self):
        if self.pending:
            self.emit(self.pending.decode("utf-8", "replace"))
            self.pending = b""
        return None


class Worker:
    """One process running one version's handler."""

    def __init__(self, spec: FunctionSpec, proc: subprocess.Popen) -> None:
        self.spec, self.proc = spec, proc
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.WriteTransport | None = None
        self.last_used = time.monotonic()
        self.dead = False

    async def connect(self, emit: Callable[[str], None]) -> dict:
        """Wire the pipes into the loop and wait for the bootstrap's first frame."""
        loop = asyncio.get_running_loop()
        self.reader = asyncio.StreamReader(limit=2**26)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(self.reader), self.proc.stdout)
        self.writer, _ = await loop.connect_write_pipe(asyncio.Protocol, self.proc.stdin)
        await loop.connect_read_pipe(lambda: _Lines(emit), self.proc.stderr)
        return await asyncio.wait_for(self._read(), START_TIMEOUT_S)

    async def _read(self) -> dict:
        assert self.reader is not None
        (size,) = struct.unpack(">I", await self.reader.readexactly(4))
        return json.loads(await self.reader.readexactly(size))

    async def call(self, payload: bytes, timeout: float) -> dict:
        assert self.writer is not None
        self.writer.write(struct.pack(">I", len(payload)) + payload)
        async with asyncio.timeout(timeout):  # no task per call, unlike wait_for
            return await self._read()

    def kill(self) -> None:
        self.dead = True
        if self.proc.poll() is None:
            if isinstance(self.proc, subprocess.Popen):
                try:
                    os.killpg(self.proc.pid, 9)  # its session: whatever the handler started too
                except (ProcessLookupError, PermissionError):
                    self.proc.kill()
            else:
                self.proc.kill()  # a sandbox ends with everything in it
        if self.writer is not None:
            self.writer.close()

    def rss_kb(self) -> int:
        """Resident memory of the worker's process and all below it (a sandbox's init, the
        interpreter), in KiB."""
        total, pending = 0, [self.proc.pid]
        while pending:
            pid = pending.pop()
            try:
                with open(f"/proc/{pid}/status") as status:
                    total += next((int(x.split()[1]) for x in status if x.startswith("VmRSS:")), 0)
                for task in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{task}/children") as children:
                        pending.extend(int(c) for c in children.read().split())
            except (OSError, ValueError):
                continue
        return total


def worker_env(spec: FunctionSpec, *, aws_endpoint: str, runtimes: Path = RUNTIMES) -> dict[str, str]:
    """What a worker's process sees: the version's env vars, then Lambda's own (which a function
    cannot override), and nothing of this process's environment."""
    family = "python" if spec.runtime.startswith("python") else "nodejs"
    env = {str(k): str(v) for k, v in spec.env.items()}
    env.update(
        {
            "PATH": SYSTEM_PATH,
            "LANG": "C.UTF-8",
            "TZ": ":UTC",
            "HOME": "/tmp",  # noqa: S108 - as on Lambda, where /tmp is the only writable place
            "TMPDIR": "/tmp",  # noqa: S108
            "LAMBDA_TASK_ROOT": spec.code_dir,
            "LAMBDA_RUNTIME_DIR": str(runtimes),
            "_HANDLER": spec.handler,
            "AWS_REGION": spec.region,
            "AWS_DEFAULT_REGION": spec.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{spec.runtime}",
            "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
            "AWS_LAMBDA_FUNCTION_VERSION": spec.version,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_mb),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/[{spec.version}]{os.urandom(8).hex()}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            # Lambda hands a function its role's temporary keys; the local AWS takes any.
            "AWS_ACCESS_KEY_ID": "local-regions",
            "AWS_SECRET_ACCESS_KEY": "local-regions",
            "AWS_SESSION_TOKEN": "local-regions",
        }
    )
    if aws_endpoint:
        env["AWS_ENDPOINT_URL"] = aws_endpoint
    if family == "nodejs":
        env["NODE_PATH"] = spec.code_dir + "/node_modules"
    else:
        env["PYTHONPATH"] = spec.code_dir
    return env


class Pool:
    """Every warm worker of the local regions."""

    def __init__(
        self,
        *,
        max_workers: int,
        idle_s: float,
        aws_endpoint: str,
        emit: Callable[[FunctionSpec, str], None],
        isolation: Isolation,
        max_per_version: int = 4,
    ) -> None:
        self.max_workers, self.idle_s, self.aws_endpoint = max_workers, idle_s, aws_endpoint
        self.max_per_version = max_per_version
        self.emit, self.isolation = emit, isolation
        self.idle: dict[tuple, list[Worker]] = {}
        self.count = 0  # idle + busy + starting
        self.busy: dict[tuple, int] = {}  # per version: workers serving or starting
        self.freed = asyncio.Condition()
        self.waiting = 0

    async def _new_worker(self, spec: FunctionSpec) -> tuple[Worker, dict]:
        argv = runtime_argv(spec.runtime, self.isolation.runtimes)
        env = worker_env(spec, aws_endpoint=self.aws_endpoint, runtimes=self.isolation.runtimes)
        try:
            proc = spawn(argv, env=env, cwd=spec.code_dir, memory_mb=spec.memory_mb, isolation=self.isolation)
        except (OSError, sandbox.SandboxUnavailable) as exc:
            raise RuntimeError(f"the worker could not be started: {exc}") from None
        worker = Worker(spec, proc)
        started = time.perf_counter()
        try:
            first = await worker.connect(lambda line: self.emit(spec, line))
        except (asyncio.IncompleteReadError, TimeoutError, OSError, ValueError) as exc:
            worker.kill()
            raise RuntimeError(f"the worker did not start: {exc!r}") from None
        # As Lambda reports a cold start's init in its log.
        self.emit(spec, f"INIT_REPORT Init Duration: {(time.perf_counter() - started) * 1000:.2f} ms")
        return worker, first

    async def _take(self, spec: FunctionSpec) -> tuple[Worker | None, bool]:
        """An idle worker of ``spec`` (cold=False), or room for a new one (None, cold=True)."""
        while True:
            idle = self.idle.get(spec.key)
            while idle:
                worker = idle.pop()
                if worker.proc.poll() is None:
                    self.busy[spec.key] = self.busy.get(spec.key, 0) + 1
                    return worker, False
                self.count -= 1
            # A version has at most max_per_version workers; more requests wait for one of them
            # (Lambda's reserved concurrency): on a small machine more processes only cost memory.
            if self.count < self.max_workers and self.busy.get(spec.key, 0) < self.max_per_version:
                self.count += 1
                self.busy[spec.key] = self.busy.get(spec.key, 0) + 1
                return None, True
            if self.busy.get(spec.key, 0) >= self.max_per_version:
                await self._wait()
                continue
            victim = self._oldest_idle()
            if victim is not None:
                self.idle[victim.spec.key].remove(victim)
                victim.kill()
                self.count -= 1
                continue
            await self._wait()

    async def _wait(self) -> None:
        self.waiting += 1
        try:
            async with self.freed:
                await self.freed.wait()
        finally:
            self.waiting -= 1

    def _oldest_idle(self) -> Worker | None:
        workers = [w for ws in self.idle.values() for w in ws]
        return min(workers, key=lambda w: w.last_used) if workers else None

    async def _give_back(self, spec: FunctionSpec, worker: Worker | None) -> None:
        self.busy[spec.key] -= 1
        if worker is not None and not worker.dead and worker.proc.poll() is None:
            worker.last_used = time.monotonic()
            self.idle.setdefault(worker.spec.key, []).append(worker)
        else:
            self.count -= 1
        if self.waiting:
            async with self.freed:
                self.freed.notify_all()

    async def invoke(self, spec: FunctionSpec, payload: bytes, timeout: float) -> Outcome:
        """Run one request on a worker of ``spec``. A worker past ``timeout`` or one that died is
        killed and replaced by the next request."""
        worker, cold = await self._take(spec)
        try:
            if worker is None:
                try:
                    worker, first = await self._new_worker(spec)
                except UnknownRuntime:
                    raise
                except RuntimeError as exc:
                    return Outcome("crash", str(exc), cold=True)
            try:
                answer = await worker.call(payload, timeout)
            except asyncio.CancelledError:
                worker.kill()  # its answer would reach the next request
                raise
            except TimeoutError:
                worker.kill()
                self.emit(spec, f"Task timed out after {timeout:.2f} seconds")
                return Outcome("timeout", timeout, cold=cold)
            except (asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
                code = worker.proc.poll()
                worker.kill()
                self.emit(spec, f"Runtime.ExitError: the worker exited (code {code}) during the request")
                return Outcome("crash", repr(exc), cold=cold)
            if "error" in answer:
                return Outcome("error", answer["error"], cold=cold)
            return Outcome("ok", answer.get("result"), cold=cold)
        finally:
            await self._give_back(spec, worker)

    def reap(self) -> int:
        """Kill workers idle for longer than ``idle_s`` and those that died. Returns how many."""
        cutoff = time.monotonic() - self.idle_s
        reaped = 0
        for key, workers in list(self.idle.items()):
            keep = []
            for worker in workers:
                if worker.last_used < cutoff or worker.proc.poll() is not None:
                    worker.kill()
                    self.count -= 1
                    reaped += 1
                else:
                    keep.append(worker)
            if keep:
                self.idle[key] = keep
            else:
                del self.idle[key]
        return reaped

    def close(self) -> None:
        for workers in self.idle.values():
            for worker in workers:
                worker.kill()
        self.idle.clear()

    def workers(self) -> list[Worker]:
        return [w for ws in self.idle.values() for w in ws]
