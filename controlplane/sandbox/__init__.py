"""Run untrusted code (a team's build command, a deployed Lambda function run locally) in a sandbox
that cannot see or reach the control plane. Linux only, with bubblewrap (``bwrap``) and util-linux's
``prlimit``; ``missing()`` says what a host lacks.

What a sandboxed process gets
-----------------------------
- **Its own namespaces**: user, PID, mount, IPC, UTS, network and (where the kernel allows)
  cgroup. It runs as uid/gid 65534 (``sandbox``) inside; no process of the control plane is
  visible (``/proc`` is the sandbox's own), it can create no further user namespaces, and it
  cannot gain privileges (no-new-privs: setuid binaries do nothing).
- **An empty starting environment**: ``bwrap`` itself is executed with an empty environment, so
  the sandbox's init carries nothing of the worker's; the command gets exactly ``env`` (plus the
  proxy variables below when it has network access). Values travel to ``bwrap`` through a
  memory file (``--args``), never on a command line another host user could read.
- **A read-only view of the system**: ``/usr`` (and the ``/bin``, ``/lib*`` links into it), from
  ``/etc`` only what programs need to run and reach TLS hosts (certificates, the dynamic linker's
  cache, ``alternatives``, locale and time zone data; see ``ETC_READONLY``) plus a generated
  ``passwd``, ``group``, ``hosts`` and ``nsswitch.conf``; ``extra_readonly`` system folders
  (toolchains in ``/opt``). Nothing else: no data folder, no project, no home of the worker, no
  ``/etc`` secrets (``shadow``, ``pip.conf``, ``npmrc``, ``gitconfig``, ...), no ``/sys``.
- **Writable**: the ``writable`` paths the caller gives, a throwaway ``HOME`` (``/home/sandbox``)
  and ``/tmp`` (folders of the sandbox's own private directory, deleted at the end), and a small
  ``/dev/shm``.
- **Limits** (``Limits``): wall time, CPU time (summed over every process), memory (resident
  memory summed over every process), processes (tasks: processes and threads), disk (bytes written
  into the writable paths, home and ``/tmp``, summed). A watchdog thread reads the sandbox's
  processes from ``/proc`` every ``POLL_INTERVAL`` s and stops the whole sandbox the moment one is
  exceeded, recording the reason (``SandboxProcess.stopped``). Per-process rlimits set inside the
  sandbox (``prlimit``: NPROC, CPU, DATA, FSIZE, NOFILE, no core files) hold a runaway between
  two readings: a fork bomb cannot get past ``processes`` plus a margin even for a moment.
  RLIMIT_NPROC is counted per user *namespace* since Linux 5.14, so each sandbox has its own
  count, and when the worker runs as root every sandbox also runs as a uid of its own on the host
  (``UID_BASE`` and up, never 0, which the kernel would exempt).
- **The end kills everything**: stopping the sandbox kills its PID namespace's init, which takes
  every process in it; ``--die-with-parent`` does the same if the worker dies.

Network (``network=``)
----------------------
``"off"``: loopback only, inside the sandbox's own network namespace. ``"public"``: outbound to
public addresses only, through an HTTP(S) proxy. The sandbox still has its own, empty network
namespace; before its command starts (bwrap waits on ``--block-fd``), a small helper process of
the worker (``nshelper.py``) opens a listening socket on the sandbox's 127.0.0.1:3128, set as
``HTTP_PROXY``/``HTTPS_PROXY``/``http_proxy``/``https_proxy``, and the worker serves it
(``relay.py``): it resolves the name, refuses loopback, link-local, private, reserved and cloud
metadata addresses (the checks of ``controlplane.urlsafety``), and connects only to an address it
checked. Nothing runs in the sandbox for the network, and nothing there can change this.

Why a proxy rather than a user-mode stack (slirp4netns, pasta): those forward to any address the
host can reach, including its private network, the host's own non-loopback addresses (where a
database listening on 0.0.0.0 answers) and 169.254.169.254; they have no destination filter, so
one would need firewall rules inside the namespace on top. The proxy makes "public only" a check
on every connection, in code we test, with DNS resolved outside (no resolver in the sandbox to
trick) and immune to DNS rebinding. The cost: only clients that honour the proxy variables reach
the network (npm, pip, yarn, curl, wget, git over https, Go, cargo do; raw sockets, ssh and
``git://`` do not).

``loopback_ports``: host ``127.0.0.1`` ports the sandbox may reach, listened on at the same port on
the sandbox's 127.0.0.1 (e.g. the local AWS emulator for Lambda code: ``AWS_ENDPOINT_URL=
http://127.0.0.1:5000`` works inside as outside). Any other loopback port, the web server, the
database and the broker included, stays unreachable. With ``network="off"`` the proxy port still
answers, refusing every destination.

``public_networks``: CIDRs the relay treats as public (metadata addresses stay refused). For tests
only (a loopback address such as 127.0.0.2 standing in for the internet); never set it in
production.

API (stable)
------------
``missing() -> list[str]``
    What this host lacks to run sandboxes (empty when nothing): each item says what to install or
    allow. Cached; ``missing(refresh=True)`` tries again.
``check() -> None``
    Raises ``SandboxUnavailable`` (its message joins ``missing()``) when a sandbox cannot run.
``spawn(argv, *, cwd, env, readonly=(), writable=(), network="off", loopback_ports=(),
limits=Limits(), stdin=DEVNULL, stdout=PIPE, stderr=STDOUT, extra_readonly=(),
public_networks=(), root=None, on_refused=None) -> SandboxProcess``
    Start ``argv`` (resolved inside the sandbox, with ``env["PATH"]``) in a sandbox. ``cwd`` is a
    path inside. ``readonly`` and ``writable`` are host paths mounted at the same path inside, or
    ``(host_path, inside_path)`` pairs; a writable path is given to the sandbox's uid. Host paths
    must be searchable by the sandbox's uid: when the worker runs as root, keep them under
    ``workdir()`` (folders there are). ``stdin``/``stdout``/``stderr`` are as for ``Popen``.
    ``on_refused(message)`` hears of each refused connection. Raises ``SandboxUnavailable``.
``SandboxProcess``
    Popen-like: ``pid`` (of ``bwrap``), ``stdin``, ``stdout``, ``stderr``, ``returncode``,
    ``poll()``, ``wait(timeout=None)`` (raises ``subprocess.TimeoutExpired``), ``kill()`` and
    ``terminate()`` (both end the whole sandbox), use as a context manager (killed and cleaned up
    on exit). Also ``stopped`` (None, or why the sandbox was stopped: "ran past its 600 s wall time
    limit", ...), ``stopped_by`` (the ``Limits`` field that stopped it, e.g. "memory_bytes"),
    ``refused`` (refused connections) and ``usage`` (``Usage``: cpu_seconds,
    max_memory_bytes, max_tasks, disk_bytes). ``returncode`` is the command's exit status, or
    ``-9`` when the sandbox was stopped or killed.
``run(argv, *, on_line, tail_lines=20, **spawn_kwargs) -> RunResult``
    ``spawn`` with stdout and stderr merged and streamed line by line to ``on_line``; waits for
    the end. ``RunResult``: returncode, stopped, stopped_by, tail, usage, refused.
``workdir(prefix, root=None) -> Path``
    A fresh private folder the sandbox can mount (under ``root``, default ``default_root()``).
``Limits(wall_seconds, cpu_seconds, memory_bytes, processes, disk_bytes, open_files)``
    Each ``None`` for no limit, except ``open_files``.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pwd
import random
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .relay import Relay, parse_networks

__all__ = [
    "Limits",
    "RunResult",
    "SandboxProcess",
    "SandboxUnavailable",
    "Usage",
    "check",
    "default_root",
    "missing",
    "run",
    "spawn",
    "workdir",
]

INSIDE_UID = 65534
INSIDE_HOME = "/home/sandbox"
PROXY_PORT = 3128
UID_BASE = 1_000_000  # when the worker is root, each sandbox runs as a uid from here
UID_SPAN = 1 << 20
POLL_INTERVAL = 0.1
DISK_POLL_MIN = 1.0  # the disk walk runs at most this often (and less when it is slow)
TASK_MARGIN = 16  # the RLIMIT_NPROC backstop sits this far above the watchdog's limit
SHM_BYTES = 64 << 20
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# From /etc, only what programs need to start, find certificates and format dates. Never shadow,
# the worker's passwd (names of service accounts), pip.conf, npmrc or gitconfig (may hold tokens).
ETC_READONLY = (
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/ca-certificates.conf",
    "/etc/ssl",
    "/etc/pki",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/locale.alias",
    "/etc/mime.types",
    "/etc/protocols",
    "/etc/services",
    "/etc/os-release",
    "/etc/debian_version",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/inputrc",
)
GENERATED_ETC = {
    "passwd": f"root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:{INSIDE_UID}:{INSIDE_UID}:sandbox:"
    f"{INSIDE_HOME}:/bin/sh\n",
    "group": f"root:x:0:\nsandbox:x:{INSIDE_UID}:\n",
    "hosts": "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
    "hostname": "sandbox\n",
    "nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\nservices: files\n",
    # No resolver: names are resolved by the proxy outside.
    "resolv.conf": "# no DNS in the sandbox: HTTP(S)_PROXY resolves names\n",
}

Mount = str | os.PathLike | tuple[str | os.PathLike, str]


class SandboxUnavailable(Exception):
    """This host cannot run a sandbox (or this one could not start); the message says why."""


@dataclass(frozen=True)
class Limits:
    """What a sandbox may use; ``None`` is no limit. See the module docstring."""

    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    memory_bytes: int | None = None
    processes: int | None = None
    disk_bytes: int | None = None
    open_files: int = 4096


@dataclass
class Usage:
    """What a sandbox used: CPU seconds (every process), the most resident memory and tasks seen
    at once, and the bytes in its writable folders at the last reading."""

    cpu_seconds: float = 0.0
    max_memory_bytes: int = 0
    max_tasks: int = 0
    disk_bytes: int = 0


@dataclass
class RunResult:
    returncode: int
    stopped: str | None
    stopped_by: str | None = None
    tail: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    refused: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.stopped is None


# --- the host --------------------------------------------------------------------------------------
def default_root() -> Path:
    """Where sandboxes keep their private folders: a folder of this uid under ``/var/tmp`` (disk,
    not memory, on most systems) or the temp folder."""
    var_tmp = "/var/tmp"  # noqa: S108 - a private, per-uid folder is made inside it
    base = Path(var_tmp) if os.access(var_tmp, os.W_OK | os.X_OK) else Path(tempfile.gettempdir())
    return base / f"controlplane-sandbox-{os.getuid()}"


def _ensure_root(root: Path | None) -> Path:
    root = Path(root) if root is not None else default_root()
    root.mkdir(parents=True, exist_ok=True)
    # Searchable, not listable: a sandbox's uid must reach its own folder, and sees no other.
    os.chmod(root, 0o711)  # noqa: S103
    return root


def workdir(prefix: str = "sandbox-", root: str | os.PathLike | None = None) -> Path:
    """A new folder under ``root`` whose contents a sandbox can mount: mode 700, or when the
    worker is root 711 (searchable, not listable), since sandboxes then run as uids of their own."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=_ensure_root(Path(root) if root else None)))
    if os.getuid() == 0:
        os.chmod(path, 0o711)  # noqa: S103
    return path


def _which(name: str) -> str | None:
    return shutil.which(name, path=DEFAULT_PATH)


@functools.lru_cache(maxsize=1)
def _missing_cached() -> tuple[str, ...]:
    problems = []
    bwrap, prlimit = _which("bwrap"), _which("prlimit")
    if not bwrap:
        problems.append(
            "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap` (Debian/Ubuntu), "
            "`dnf install bubblewrap` (Fedora), `apk add bubblewrap` (Alpine)."
        )
    if not prlimit or (os.getuid() == 0 and not _which("setpriv")):
        problems.append("prlimit or setpriv (util-linux) is not installed: `apt-get install util-linux`.")
    if bwrap and prlimit:
        try:
            result = run(["true"], cwd="/", env={"PATH": DEFAULT_PATH}, limits=Limits(wall_seconds=30),
                         on_line=lambda line: None, _checked=True)  # fmt: skip
            if not result.ok:
                raise SandboxUnavailable("\n".join(result.tail) or f"exit status {result.returncode}")
        except (SandboxUnavailable, OSError) as exc:
            problems.append(
                f"bubblewrap cannot create a sandbox here ({str(exc).strip()}): it needs unprivileged "
                "user namespaces (sysctl kernel.unprivileged_userns_clone=1 where that exists, "
                "user.max_user_namespaces > 0, on Ubuntu 23.10 and later "
                "kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for bwrap, "
                "and in a container a seccomp and AppArmor profile "
                "that allow them, e.g. docker's `security_opt: [seccomp:unconfined, apparmor:unconfined]`)."
            )
    return tuple(problems)


def missing(*, refresh: bool = False) -> list[str]:
    """What this host lacks to run sandboxes, one sentence each with what to do; [] when nothing."""
    if refresh:
        _missing_cached.cache_clear()
    return list(_missing_cached())


def check() -> None:
    """Raise SandboxUnavailable when this host cannot run sandboxes."""
    problems = missing()
    if problems:
        raise SandboxUnavailable(" ".join(problems))


# --- spawning ----------------------------------------------------------------------------------------
HELPER = Path(__file__).with_name("nshelper.py")


class _NamespaceHelper:
    """The worker's ``nshelper.py`` process (started on first use, again if it died), which opens
    listening sockets inside a sandbox's network namespace. One request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._channel: socket.socket | None = None
        self._owner = 0  # the pid that started it: a forked worker (prefork pool) starts its own

    def _start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            self._proc = subprocess.Popen(
                [sys.executable, "-S", "-I", str(HELPER), str(theirs.fileno())],
                env={}, cwd="/", stdin=subprocess.DEVNULL, pass_fds=(theirs.fileno(),),
            )  # fmt: skip
        self._channel = ours
        self._owner = os.getpid()

    def listeners(self, pid: int, ports: list[int]) -> list[socket.socket]:
        """Listening sockets on 127.0.0.1:<port> in the network namespace of host process ``pid``.
        Raises SandboxUnavailable."""
        with self._lock:
            for attempt in range(2):
                if self._proc is None or self._owner != os.getpid() or self._proc.poll() is not None:
                    self._start()
                assert self._channel is not None
                try:
                    self._channel.send(" ".join(map(str, [pid, *ports])).encode())
                    message, fds, _, _ = socket.recv_fds(self._channel, 4096, len(ports))
                except OSError:
                    self._proc = None  # it died: start another once
                    if attempt:
                        raise SandboxUnavailable("The sandbox's network helper stopped.") from None
                    continue
                made = [socket.socket(fileno=fd) for fd in fds]
                if message != b"ok" or len(made) != len(ports):
                    for sock in made:
                        sock.close()
                    raise SandboxUnavailable(
                        f"The sandbox's network could not be set up: {message.decode(errors='replace')}"
                    )
                return made
        raise AssertionError("unreachable")  # pragma: no cover


_NS_HELPER = _NamespaceHelper()


_uids_in_use: set[int] = set()
_uids_lock = threading.Lock()


def _allocate_uid() -> int:
    """The host uid a sandbox runs as: the worker's own, or when root a free one of its own."""
    if os.getuid() != 0:
        return os.getuid()
    with _uids_lock:
        while True:
            uid = UID_BASE + random.randrange(UID_SPAN)
            if uid in _uids_in_use:
                continue
            try:
                pwd.getpwuid(uid)
                continue  # a real account: never share it
            except KeyError:
                _uids_in_use.add(uid)
                return uid


def _release_uid(uid: int) -> None:
    with _uids_lock:
        _uids_in_use.discard(uid)


def _chown_tree(path: Path, uid: int) -> None:
    os.lchown(path, uid, uid)
    if path.is_dir() and not path.is_symlink():
        for dirpath, dirnames, filenames in os.walk(path):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), uid, uid)


def _mounts(values: Iterable[Mount]) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        if isinstance(value, tuple):
            host, inside = value
        else:
            host = inside = value
        host, inside = os.path.abspath(os.fspath(host)), os.fspath(inside)
        if not inside.startswith("/"):
            raise ValueError(f"A sandbox mount point must be absolute: {inside!r}")
        pairs.append((host, inside))
    return pairs


def _system_args(extra_readonly: Iterable[str]) -> list[str]:
    args = ["--ro-bind", "/usr", "/usr"]
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            args += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            args += ["--ro-bind", link, link]
    for path in ETC_READONLY:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    for path in extra_readonly:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    return args


def spawn(
    argv: Sequence[str],
    *,
    cwd: str = "/",
    env: Mapping[str, str],
    readonly: Iterable[Mount] = (),
    writable: Iterable[Mount] = (),
    network: str = "off",
    loopback_ports: Iterable[int] = (),
    limits: Limits = Limits(),
    stdin=subprocess.DEVNULL,
    stdout=subprocess.PIPE,
    stderr=subprocess.STDOUT,
    extra_readonly: Iterable[str] = (),
    public_networks: Iterable[str] = (),
    root: str | os.PathLike | None = None,
    on_refused: Callable[[str], None] | None = None,
    _checked: bool = False,
) -> SandboxProcess:
    """Start ``argv`` in a new sandbox; see the module docstring. Raises SandboxUnavailable."""
    if network not in ("off", "public"):
        raise ValueError(f"network must be 'off' or 'public', not {network!r}")
    if not argv:
        raise ValueError("argv is empty")
    if not _checked:
        check()
    bwrap, prlimit = _which("bwrap"), _which("prlimit")
    if not bwrap or not prlimit:
        raise SandboxUnavailable("bubblewrap or prlimit is not installed.")
    ports = sorted({int(p) for p in loopback_ports})
    readonly_pairs, writable_pairs = _mounts(readonly), _mounts(writable)
    networks = parse_networks(public_networks)
    uid = _allocate_uid()
    private = workdir("run-", root)
    try:
        return SandboxProcess._start(
            bwrap=bwrap, prlimit=prlimit, argv=list(argv), cwd=cwd, env=dict(env),
            readonly=readonly_pairs, writable=writable_pairs, network=network, ports=ports,
            limits=limits, stdin=stdin, stdout=stdout, stderr=stderr,
            extra_readonly=list(extra_readonly), networks=networks, uid=uid, private=private,
            on_refused=on_refused,
        )  # fmt: skip
    except BaseException:
        _release_uid(uid)
        _remove(private)
        raise


class SandboxProcess:
    """A running sandbox; see the module docstring. Create it with ``spawn``."""

    pid: int
    stdin = stdout = stderr = None

    @classmethod
    def _start(cls, *, bwrap, prlimit, argv, cwd, env, readonly, writable, network, ports, limits,
               stdin, stdout, stderr, extra_readonly, networks, uid, private, on_refused):  # fmt: skip
        self = cls()
        self.args = argv
        self.limits = limits
        self.stopped: str | None = None
        self.stopped_by: str | None = None
        self.usage = Usage()
        self.returncode: int | None = None
        self._uid = uid
        self._private = Path(private)
        self._relay: Relay | None = None
        self._init_pid: int | None = None
        self._init_pidfd: int | None = None
        self._done = threading.Event()
        self._stop_lock = threading.Lock()
        self._writable_hosts = [Path(host) for host, _ in writable]

        home, tmp, etc = private / "home", private / "tmp", private / "etc"
        for folder in (home, tmp, etc):
            folder.mkdir(mode=0o700)
        for name, text in GENERATED_ETC.items():
            (etc / name).write_text(text)
        if os.getuid() == 0:
            _chown_tree(private, uid)
            for host, _ in writable:
                _chown_tree(Path(host), uid)

        args = [
            "--unshare-all", "--unshare-user", "--unshare-cgroup-try",
            "--uid", str(INSIDE_UID), "--gid", str(INSIDE_UID), "--hostname", "sandbox",
            "--die-with-parent", "--new-session", "--disable-userns",
            *_system_args(extra_readonly),
        ]  # fmt: skip
        for name in GENERATED_ETC:
            args += ["--ro-bind", str(etc / name), f"/etc/{name}"]
        # Paths inside the sandbox, not the host's shared temp folders.
        args += ["--proc", "/proc", "--dev", "/dev", "--size", str(SHM_BYTES), "--tmpfs", "/dev/shm"]  # noqa: S108
        args += ["--bind", str(home), INSIDE_HOME, "--bind", str(tmp), "/tmp"]  # noqa: S108
        for host, inside in readonly:
            args += ["--ro-bind", host, inside]
        for host, inside in writable:
            args += ["--bind", host, inside]
        env = dict(env)
        env.setdefault("PATH", DEFAULT_PATH)
        env.setdefault("HOME", INSIDE_HOME)
        command = list(argv)
        networked = network == "public" or bool(ports)
        proxy_port = PROXY_PORT if PROXY_PORT not in ports else max(ports) + 1
        if network == "public":
            proxy = f"http://127.0.0.1:{proxy_port}"
            for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
                env[name] = proxy
            env["NO_PROXY"] = env["no_proxy"] = "localhost,127.0.0.1"
        command = [prlimit, *_rlimit_args(limits), "--", *command]
        for name, value in env.items():
            args += ["--setenv", name, value]
        # The root bwrap builds is a tmpfs: read-only after the last mount, or files written beside
        # the mounts would take the host's memory, outside the disk limit.
        args += ["--remount-ro", "/", "--chdir", cwd]
        self._launch(bwrap, args, command, stdin, stdout, stderr, networked)
        threading.Thread(target=self._reap, name=f"sandbox-wait-{self.pid}", daemon=True).start()
        threading.Thread(target=self._watch, name=f"sandbox-watch-{self.pid}", daemon=True).start()
        if networked:
            try:
                if not self._init_pid:
                    raise SandboxUnavailable("bwrap did not start.")
                listeners = _NS_HELPER.listeners(self._init_pid, [proxy_port, *ports])
                self._relay = Relay(
                    zip(listeners, [None, *ports], strict=True),
                    proxy=network == "public",
                    public_networks=networks,
                    on_refused=on_refused,
                )
                os.write(self._release, b"go")  # the command starts now, its network ready
            except BaseException:
                self._stop(None)
                self.wait()
                raise
            finally:
                os.close(self._release)
        return self

    def _launch(self, bwrap, args, command, stdin, stdout, stderr, block: bool) -> None:
        args_fd = os.memfd_create("bwrap-args", os.MFD_CLOEXEC)
        info_r, info_w = os.pipe()
        passed = [args_fd, info_w]
        if block:
            # bwrap sets the sandbox up, then waits for a byte here before it runs the command.
            block_r, self._release = os.pipe()
            args = [*args, "--block-fd", str(block_r)]
            passed.append(block_r)
        try:
            os.write(args_fd, b"\0".join(a.encode() for a in args) + b"\0")
            os.lseek(args_fd, 0, os.SEEK_SET)
            # As root, bwrap starts as the sandbox's own uid through setpriv: Popen(user=...) would
            # fork the whole worker (100+ ms for a big process) where a plain Popen uses vfork.
            drop = [
                _which("setpriv") or "setpriv",
                f"--reuid={self._uid}",
                f"--regid={self._uid}",
                "--clear-groups",
                "--",
            ]
            # bwrap reads options from --args but wants the command on its own command line.
            self._popen = subprocess.Popen(
                [*(drop if os.getuid() == 0 else []), bwrap, "--args", str(args_fd), "--info-fd", str(info_w),
                 "--", *command],
                env={},  # bwrap and the sandbox's init start with an empty environment
                cwd="/",
                stdin=stdin,
                stdout=stdout,
                stderr=stderr,
                pass_fds=tuple(passed),
                start_new_session=True,
            )  # fmt: skip
        except BaseException:
            if block:
                os.close(self._release)
            raise
        finally:
            for fd in passed:
                os.close(fd)
        self.pid = self._popen.pid
        self.stdin, self.stdout, self.stderr = self._popen.stdin, self._popen.stdout, self._popen.stderr
        self._started = time.monotonic()
        self._init_pid = _read_child_pid(info_r)
        # A pidfd signals the sandbox's init and never a process that reused its pid.
        self._init_pidfd = None
        if self._init_pid:
            with contextlib.suppress(OSError):
                self._init_pidfd = os.pidfd_open(self._init_pid)

    # --- Popen-like -----------------------------------------------------------------------------
    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode  # type: ignore[return-value]

    def kill(self) -> None:
        """End the whole sandbox now (every process in it)."""
        self._stop(None)

    def cancel(self, reason: str = "was cancelled") -> None:
        """End the whole sandbox now, recorded as stopped by a cancel (``stopped_by`` "cancelled")."""
        self._stop(reason, "cancelled")

    terminate = kill

    @property
    def refused(self) -> list[str]:
        return list(self._relay.refused) if self._relay else []

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
        self.wait()
        for stream in (self.stdin, self.stdout, self.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    # --- internals -----------------------------------------------------------------------------
    def _stop(self, reason: str | None, limit: str | None = None) -> None:
        with self._stop_lock:
            if self._done.is_set():
                return
            if reason and self.stopped is None:
                self.stopped, self.stopped_by = reason, limit
            if self._init_pidfd is not None:
                with contextlib.suppress(OSError):
                    signal.pidfd_send_signal(self._init_pidfd, signal.SIGKILL)
            # bwrap itself: not reaped before _done is set, so its pid is still its own.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(self.pid, signal.SIGKILL)

    def _reap(self) -> None:
        status = 0
        try:
            _, status, rusage = os.wait4(self.pid, 0)
            self.usage.cpu_seconds = max(self.usage.cpu_seconds, rusage.ru_utime + rusage.ru_stime)
        except ChildProcessError:
            pass
        code = os.waitstatus_to_exitcode(status)
        with self._stop_lock:
            self.returncode = -signal.SIGKILL if self.stopped else code
            self._popen.returncode = self.returncode
            if self._relay is not None:
                self._relay.close()
            if self._init_pidfd is not None:
                os.close(self._init_pidfd)
                self._init_pidfd = None
            _release_uid(self._uid)
            _remove(self._private)
            self._done.set()

    def _watch(self) -> None:
        limits = self.limits
        namespace = _pid_namespace(self._init_pid) if self._init_pid else None
        next_disk = 0.0
        disk_interval = DISK_POLL_MIN
        while not self._done.wait(POLL_INTERVAL):
            now = time.monotonic()
            if limits.wall_seconds is not None and now - self._started > limits.wall_seconds:
                self._stop(f"ran past its {limits.wall_seconds:.0f} s wall time limit", "wall_seconds")
                continue
            if namespace is None:
                continue
            cpu, memory, tasks = _namespace_usage(namespace, self._uid)
            usage = self.usage
            usage.cpu_seconds = max(usage.cpu_seconds, cpu)
            usage.max_memory_bytes = max(usage.max_memory_bytes, memory)
            usage.max_tasks = max(usage.max_tasks, tasks)
            if limits.processes is not None and tasks >= limits.processes:
                self._stop(
                    f"reached its limit of {limits.processes} processes and threads (a fork bomb?)",
                    "processes",
                )
            elif limits.memory_bytes is not None and memory > limits.memory_bytes:
                self._stop(f"used more than its {limits.memory_bytes >> 20} MB memory limit", "memory_bytes")
            elif limits.cpu_seconds is not None and cpu > limits.cpu_seconds:
                self._stop(f"used more than its {limits.cpu_seconds:g} s CPU time limit", "cpu_seconds")
            elif limits.disk_bytes is not None and now >= next_disk:
                started = time.monotonic()
                folders = [*self._writable_hosts, self._private / "home", self._private / "tmp"]
                usage.disk_bytes = sum(_disk_usage(folder) for folder in folders)
                # A big tree costs a walk: walk less often, at most ~5 % of the time.
                disk_interval = max(DISK_POLL_MIN, 20 * (time.monotonic() - started))
                next_disk = time.monotonic() + disk_interval
                if usage.disk_bytes > limits.disk_bytes:
                    self._stop(f"wrote more than its {limits.disk_bytes >> 20} MB disk limit", "disk_bytes")


def _rlimit_args(limits: Limits) -> list[str]:
    args = [f"--nofile={limits.open_files}", "--core=0"]
    if limits.processes is not None:
        args.append(f"--nproc={limits.processes + TASK_MARGIN}")
    if limits.cpu_seconds is not None:
        args.append(f"--cpu={int(limits.cpu_seconds) + 5}")
    if limits.memory_bytes is not None:
        # Per process, above the summed limit the watchdog enforces: a backstop between readings.
        args.append(f"--data={limits.memory_bytes * 2}")
    if limits.disk_bytes is not None:
        args.append(f"--fsize={limits.disk_bytes}")
    return args


def _read_child_pid(fd: int) -> int | None:
    """The host pid of the sandbox's init, from bwrap's --info-fd; None if bwrap failed first."""
    data = b""
    deadline = time.monotonic() + 30
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    try:
        return int(json.loads(data)["child-pid"])
    except (ValueError, KeyError, TypeError):
        return None


def _pid_namespace(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/pid")
    except OSError:
        return None


def _namespace_usage(namespace: str, uid: int) -> tuple[float, int, int]:
    """CPU seconds (with reaped children's), resident bytes and tasks of the processes in the PID
    namespace ``namespace`` (all of which run as host ``uid``)."""
    cpu = 0.0
    memory = tasks = 0
    try:
        entries = os.scandir("/proc")
    except OSError:
        return cpu, memory, tasks
    with entries:
        for entry in entries:
            if not entry.name.isdigit():
                continue
            try:
                if entry.stat().st_uid != uid or os.readlink(f"/proc/{entry.name}/ns/pid") != namespace:
                    continue
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            cpu += sum(int(x) for x in fields[11:15]) / TICKS
            tasks += int(fields[17])
            memory += int(fields[21]) * PAGE
    return cpu, memory, tasks


def _disk_usage(path: Path) -> int:
    total = 0
    stack = [str(path)]
    while stack:
        try:
            entries = os.scandir(stack.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        total += entry.stat(follow_symlinks=False).st_blocks * 512
                except OSError:
                    continue
    return total


def _remove(path: Path) -> None:
    def make_writable(func, target, _exc_info):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)

    if os.path.lexists(path):
        shutil.rmtree(path, onerror=make_writable)


# --- running to the end ------------------------------------------------------------------------------
MAX_LINE = 4000


def run(
    argv: Sequence[str],
    *,
    on_line: Callable[[str], None],
    tail_lines: int = 20,
    cancel: threading.Event | None = None,
    **spawn_kwargs,
) -> RunResult:
    """Run ``argv`` in a sandbox to its end, streaming its merged output to ``on_line`` line by
    line (lines over ``MAX_LINE`` bytes are cut). Once ``cancel`` is set, every process of the
    sandbox is killed (within ``POLL_INTERVAL``; ``stopped_by`` is "cancelled"). Returns a
    RunResult; raises SandboxUnavailable."""
    spawn_kwargs.setdefault("stdin", subprocess.DEVNULL)
    proc = spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **spawn_kwargs)
    tail: deque[str] = deque(maxlen=tail_lines)
    if cancel is not None:

        def watch_cancel() -> None:
            while proc.poll() is None:
                if cancel.wait(POLL_INTERVAL):
                    proc.cancel()
                    return

        threading.Thread(target=watch_cancel, name=f"sandbox-cancel-{proc.pid}", daemon=True).start()
    with proc:
        assert proc.stdout is not None
        try:
            for raw in iter(lambda: proc.stdout.readline(MAX_LINE), b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                tail.append(line)
                on_line(line)
        except BaseException:
            proc.kill()
            raise
        # The output ends when the sandbox does: its init takes every process with it.
        proc.wait()
    return RunResult(
        returncode=proc.returncode if proc.returncode is not None else -signal.SIGKILL,
        stopped=proc.stopped,
        stopped_by=proc.stopped_by,
        tail=list(tail),
        usage=proc.usage,
        refused=proc.refused,
    )
