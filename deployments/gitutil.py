"""Git plumbing shared by builds and webhooks: one canonical form for repository URLs, and running a
command with its output streamed line by line, secrets redacted and a hard deadline."""

from __future__ import annotations

import ipaddress
import os
import queue
import re
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from django.conf import settings

from controlplane import urlsafety

# ``user@host:owner/repo.git`` (scp-like ssh syntax: a colon before the first slash, no scheme).
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>(?!//).+)$")
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")
MAX_LINE = 4000  # longer lines are cut when streamed (a minified bundle printed by a build)
MAX_URL = 2048  # no git host serves a repository under a longer URL; App.repo_url holds 500
# What an app's repo_url may be: ``user@host:path`` (scp-like ssh) needs the user, and a host that
# cannot be read as an option or a path.
_SCP_REPO = re.compile(
    r"^(?P<user>[A-Za-z0-9._~+-]+)@(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.-]*)|\[[0-9A-Fa-f:.]+\]):(?P<path>[^:]+)$"
)
_HOST_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?$")
REPO_URL_HELP = "Use https://host/owner/repo.git, ssh://git@host/owner/repo.git or git@host:owner/repo.git."


def normalize_repo_url(url: str) -> str:
    """The repository a URL names, in one form, so its clone (https), ssh (``git@host:o/r.git``,
    ``ssh://``), git and web (html) URLs compare equal: ``host/owner/repo``, lowercased, without
    scheme, user, port, ``.git`` or trailing slashes. A ``file://`` URL or a local path becomes
    its absolute path. Returns "" for a blank URL and for anything that cannot name a repository
    (not a string, unparseable such as ``https://[x``, control characters, over ``MAX_URL``): it is
    fed unverified webhook payloads, so it never raises."""
    url = url.strip() if isinstance(url, str) else ""
    if not url or len(url) > MAX_URL or not url.isprintable():
        return ""
    scp = _SCP_LIKE.match(url) if "://" not in url else None
    if scp and not url.startswith("/"):
        host, path = scp.group("host"), scp.group("path")
    else:
        try:
            parts = urlsplit(url if "://" in url else f"file://{url}")
            host = (parts.hostname or "") if parts.scheme != "file" else ""
        except ValueError:  # an unclosed IPv6 bracket and the like
            return ""
        path = parts.path
    path = path.strip().rstrip("/")
    if path.endswith(".git"):
        path = path[: -len(".git")]
    path = "/" + path.strip("/")
    return f"{host}{path}".lower()


def repo_url_problem(url: str) -> str | None:
    """Why builds may not fetch ``url`` (an app's repo_url), or None when they may ("" too: no repo).

    Only ``https://``, ``ssh://`` and scp-like ``user@host:path`` name a repository: git reads
    ``ext::<command>`` (and other ``<helper>::`` forms) as a command to run, anything starting
    with ``-`` as an option, and ``file://`` or a path as a folder of the worker's own disk.
    ``http://`` carries credentials in clear: allowed only with ALLOW_HTTP_URLS, as for outgoing
    URLs; ``file://`` and absolute paths only with ALLOW_FILE_REPOS (local mirrors, tests). The host
    must not be a private, loopback or metadata address (controlplane.urlsafety; a name that does
    not resolve yet is accepted, as for webhook URLs)."""
    if not url:
        return None
    if len(url) > 500:
        return "The URL is longer than 500 characters."
    if url.startswith("-"):
        return "The URL starts with '-', which git would read as an option."
    helper_syntax = re.match(r"[A-Za-z0-9+.-]*::", url)  # how git itself spots <transport>::<address>
    if helper_syntax:
        helper = url.split("::", 1)[0][:40]
        return f"'{helper}::' makes git run a transport helper (ext:: runs a command). {REPO_URL_HELP}"
    if not url.isprintable() or any(c.isspace() for c in url):
        return "The URL holds spaces or control characters."
    scheme, sep, _rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]*", scheme):
        if url.startswith("/"):
            return (
                None
                if settings.ALLOW_FILE_REPOS
                else f"A local path is not a repository URL. {REPO_URL_HELP}"
            )
        scp = _SCP_REPO.match(url)
        if not scp:
            return f"Not a repository URL. {REPO_URL_HELP}"
        return _repo_host_problem(scp.group("host").strip("[]"), 22)
    scheme = scheme.lower()
    if scheme == "file":
        return (
            None if settings.ALLOW_FILE_REPOS else f"file:// URLs read the server's own disk. {REPO_URL_HELP}"
        )
    if scheme == "http" and not settings.ALLOW_HTTP_URLS:
        return f"http:// sends the repository's credentials in clear. {REPO_URL_HELP}"
    if scheme not in ("https", "ssh", "http"):
        return f"{scheme}:// is not allowed. {REPO_URL_HELP}"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return f"Not a valid URL. {REPO_URL_HELP}"
    host = parts.hostname or ""
    if not host:
        return "The URL has no host."
    if (parts.username or "").startswith("-"):
        return "The URL's user starts with '-', which ssh would read as an option."
    return _repo_host_problem(host, port or {"https": 443, "http": 80}.get(scheme, 22))


def _repo_host_problem(host: str, port: int) -> str | None:
    if not _HOST_NAME.match(host):
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return f"'{host[:100]}' is not a host name."
    try:
        urlsafety.resolve(host, port)
    except urlsafety.UnsafeURL as exc:
        if "Cannot resolve" not in exc.detail:
            return exc.detail
    return None


def repo_name(url: str) -> str:
    """The last path segment of a repository URL without ``.git`` (``"shop"`` for
    ``git@github.com:acme/shop.git``), lowercased: a cheap database prefilter for matching."""
    return normalize_repo_url(url).rsplit("/", 1)[-1]


class Redactor:
    """Replaces every given secret (and any ``scheme://user:password@`` in URLs) with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()):
        # Longest first, so a secret containing another is replaced whole.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return _URL_USERINFO.sub(r"\g<scheme>***@", text)


@dataclass
class CommandResult:
    """How a streamed command ended: its exit status (None when killed on timeout) and its last lines."""

    returncode: int | None
    timed_out: bool
    tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out


def run_streaming(
    args: list[str],
    *,
    cwd: str | os.PathLike,
    env: dict[str, str],
    timeout: float,
    on_line: Callable[[str], None],
    redact: Callable[[str], str] = lambda line: line,
    tail_lines: int = 20,
) -> CommandResult:
    """Run ``args`` in its own process group with stdout and stderr merged, passing each output line
    (redacted) to ``on_line`` as it comes. Past ``timeout`` seconds the whole group is killed. When
    the command exits, whatever it left running in the background is killed too, so a stray
    daemon can neither hold the output open nor outlive the build. Returns a CommandResult."""
    proc = subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    lines: queue.Queue[bytes | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(lambda: proc.stdout.readline(MAX_LINE), b""):
            lines.put(raw)
        lines.put(None)

    reader = threading.Thread(target=pump, name=f"output-{proc.pid}", daemon=True)
    reader.start()
    tail: deque[str] = deque(maxlen=tail_lines)
    deadline = time.monotonic() + timeout
    timed_out = exited = False
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            try:
                raw = lines.get(timeout=min(remaining, 0.2))
            except queue.Empty:
                if not exited and _has_exited(proc.pid):
                    exited = True
                    # The leader is a zombie until waited for, so its pid (the group id) cannot be reused.
                    _kill_group(proc.pid)
                continue
            if raw is None:
                break
            line = redact(raw.decode("utf-8", "replace").rstrip("\r\n"))
            tail.append(line)
            on_line(line)
        # The output can end before the command does (it closed stdout): wait for it, within the deadline.
        while not timed_out and not _has_exited(proc.pid):
            if time.monotonic() >= deadline:
                timed_out = True
            else:
                time.sleep(0.05)
    finally:
        # Also when ``on_line`` raised: nothing the command started outlives this call.
        _kill_group(proc.pid)
        returncode = proc.wait()
        reader.join(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()
    return CommandResult(returncode=None if timed_out else returncode, timed_out=timed_out, tail=list(tail))


def _has_exited(pid: int) -> bool:
    """True when the child has exited, without reaping it."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True
    return info is not None


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
