"""Builds from git: fetch one exact commit, run the app's build command in a clean environment,
zip the output deterministically and store it as an artifact.

The same git tree is built once per app and build recipe (build command, output folder, runtime): a
later deploy of a commit with an identical tree (a merge commit, a revert, a re-push) reuses the
artifact unless the recipe changed since. A built zip names its tree and recipe in its archive
comment (see ``build_comment``), so an artifact says what it was built from.

The whole build, fetch included, has ``settings.BUILD_TIMEOUT`` seconds. The fetch runs on the
worker, outside any sandbox: the app's git credential reaches git through ``GIT_ASKPASS`` (or an
ssh key file) only, is never on a command line, and is deleted before the build command starts.

The build command runs where ``settings.BUILD_BACKEND`` says:

- ``"sandbox"`` (the default): on the worker, in ``controlplane.sandbox`` (bubblewrap): its own
  namespaces and unprivileged uid, only the checkout (at ``/build``) writable, a throwaway home and
  ``/tmp``, nothing of the control plane visible, limits on time, CPU, memory, processes and disk,
  and network (``App.build_network``) off or through a proxy to public addresses only.
- ``"codebuild"``: in AWS CodeBuild (``codebuild.py``), away from the worker altogether.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import threading
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from controlplane import sandbox
from controlplane.errors import DomainError
from regions.aws.session import AwsError

from . import artifacts, codebuild
from .choices import ArtifactSource, EventLevel
from .gitutil import CommandResult, Redactor, repo_url_problem, run_streaming
from .models import App, Artifact

Emit = Callable[[str, str], None]

SHA_RE = re.compile(r"^[0-9a-fA-F]{7,64}$")
# Zip entries carry this date, so the same files always make the same bytes (zip's epoch: 1980).
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
MAX_LOGGED_LINES = 5000
REUSE_CANDIDATES = 10  # artifacts of one tree looked at for one with the current recipe
TAIL_LINES = 20
# Exit statuses of a shell whose command a per-process limit killed (128 + the signal).
EXIT_HINTS = {
    128 + 24: " (a process ran past the CPU time limit)",
    128 + 25: " (a file grew past the size limit: BUILD_DISK_MB)",
}
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
CHECKOUT = "/build"  # where the checkout is, inside the sandbox
DEFAULT_GIT_USERNAME = "x-access-token"  # GitHub's name for token auth; GitLab accepts any name
ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  [Uu]sername*) printf '%s\\n' "$CONTROLPLANE_GIT_USERNAME" ;;
  *) printf '%s\\n' "$CONTROLPLANE_GIT_PASSWORD" ;;
esac
"""


def git_protocols() -> str:
    """The transports git may use (GIT_ALLOW_PROTOCOL, also for submodules): never ext:: or fd::,
    which run commands; http and file only where repo_url may name them."""
    allowed = ["https", "ssh"]
    if settings.ALLOW_HTTP_URLS:
        allowed.append("http")
    if settings.ALLOW_FILE_REPOS:
        allowed.append("file")
    return ":".join(allowed)


def build_recipe(app: App) -> str:
    """A sha256 over what, besides the git tree, decides what a build produces: the build
    command, the folder zipped and the runtime. Two builds reuse each other only when it matches."""
    recipe = {
        "build_command": app.build_command or "",
        "build_output_dir": (app.build_output_dir or "").strip().strip("/"),
        "runtime": app.runtime,
    }
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()


def build_comment(*, tree: str, recipe: str) -> bytes:
    """The archive comment of a built zip: the tree and the recipe it was built with. Lambda
    ignores it; it makes the zip's bytes (and so the artifact) differ per recipe."""
    return f"controlplane build tree={tree} recipe={recipe}".encode()


def reusable_artifact(*, app: App, tree: str) -> Artifact | None:
    """The newest stored artifact of ``app`` built from ``tree`` with the app's current recipe,
    or None. Artifacts built before recipes were recorded (no comment) are never reused."""
    if not tree:
        return None
    wanted = build_comment(tree=tree, recipe=build_recipe(app))
    candidates = Artifact.objects.filter(app=app, tree_sha=tree).order_by("-created_at", "-id")
    for candidate in candidates[:REUSE_CANDIDATES]:
        try:
            if not artifacts.is_stored(candidate):
                continue
            with zipfile.ZipFile(artifacts.artifact_path(candidate)) as archive:
                if archive.comment == wanted:
                    return candidate
        except (artifacts.ArtifactUnavailable, AwsError, OSError, zipfile.BadZipFile):
            continue  # cannot tell: building again is always safe
    return None


class BuildFailed(DomainError):
    """Fetching or building the commit failed; ``detail`` ends with the last lines of output."""

    code = "build_failed"
    status_code = 422


class BuildCancelled(BuildFailed):
    """The deployment was cancelled or superseded while it built: the build was stopped."""

    code = "build_cancelled"
    status_code = 409


def build_artifact(*, app: App, sha: str, emit: Emit, cancel: threading.Event | None = None) -> Artifact:
    """The artifact of ``app`` at git commit ``sha`` (full or abbreviated): reused when this app
    already built the same git tree, else fetched, built and stored (``source="build"``).

    ``emit(level, line)`` receives every log line (git's and the build command's output, redacted).
    Raises BuildFailed with the tail of the output when the fetch, the build command or the zip fails;
    BuildCancelled once ``cancel`` is set (a running build command is killed, a CodeBuild build
    stopped).
    """
    sha = (sha or "").strip()
    if not SHA_RE.match(sha):
        raise BuildFailed(f"'{sha[:80]}' is not a git commit sha.")
    if not app.repo_url:
        raise BuildFailed("The app has no repo_url to build from.")
    problem = repo_url_problem(app.repo_url)
    if problem:
        # Saving refuses such a URL; one stored before that rule (or written past the services) is
        # refused here, before git ever sees it.
        raise BuildFailed(f"The app's repo_url is refused: {problem}")
    if settings.BUILD_BACKEND not in ("sandbox", "codebuild"):
        raise BuildFailed(
            f"BUILD_BACKEND is '{settings.BUILD_BACKEND}': it must be 'sandbox' or 'codebuild'."
        )
    # A folder the sandbox's uid can reach (the data folder may not be, and must stay out of sight).
    workdir = sandbox.workdir(f"build-{app.slug}-{sha[:12]}-", root=settings.SANDBOX_DIR or None)
    try:
        return _Build(app=app, sha=sha.lower(), emit=emit, workdir=workdir, cancel=cancel).run()
    except (OSError, AwsError) as err:
        # No git or bash on the worker, a full disk, the artifact bucket refusing: fail the build
        # visibly rather than leave the deployment to the reaper.
        emit(EventLevel.ERROR, f"The build could not run: {err}")
        raise BuildFailed(f"The build could not run: {err}")
    finally:
        _remove_tree(workdir)


class _Build:
    def __init__(self, *, app: App, sha: str, emit: Emit, workdir: Path, cancel: threading.Event | None):
        self.app = app
        self.cancel = cancel or threading.Event()
        self.sha = sha
        self._emit = emit
        self.logged = 0
        self.workdir = workdir
        self.src = workdir / "src"
        self.home = workdir / "home"  # git's, on the worker; the build gets a home of its own
        self.secrets_dir = workdir / "git-auth"
        for folder in (self.home, self.secrets_dir):
            folder.mkdir(mode=0o700)
        self.deadline = time.monotonic() + settings.BUILD_TIMEOUT
        credential = (app.git_credential or "").strip()
        self.redact = Redactor([credential, *credential.split(":", 1), *credential.splitlines()])
        self.git_env = self._git_env(credential)

    # --- logging -----------------------------------------------------------------------------------
    def log(self, level: str, line: str) -> None:
        self.logged += 1
        if self.logged < MAX_LOGGED_LINES:
            self._emit(level, self.redact(line))
        elif self.logged == MAX_LOGGED_LINES:
            self._emit(
                EventLevel.WARNING,
                f"The output is longer than {MAX_LOGGED_LINES} lines; the rest is not logged.",
            )

    def check_cancelled(self) -> None:
        """Raises BuildCancelled once the deployment was cancelled or superseded."""
        if self.cancel.is_set():
            raise BuildCancelled("The build was stopped: the deployment was cancelled or superseded.")

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    # --- git ---------------------------------------------------------------------------------------
    def _git_env(self, credential: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", DEFAULT_PATH),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_ALLOW_PROTOCOL": git_protocols(),
        }
        ssh = [
            "ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={self.home / 'known_hosts'}",
        ]  # fmt: skip
        if "PRIVATE KEY-----" in credential:
            key = self.secrets_dir / "deploy_key"
            key.write_text(credential.replace("\r\n", "\n").rstrip("\n") + "\n")
            key.chmod(0o600)
            ssh += ["-i", str(key), "-o", "IdentitiesOnly=yes"]
        elif credential:
            username, _, password = credential.rpartition(":")
            askpass = self.secrets_dir / "askpass"
            askpass.write_text(ASKPASS_SCRIPT)
            askpass.chmod(0o700)
            env.update(
                GIT_ASKPASS=str(askpass),
                CONTROLPLANE_GIT_USERNAME=username or DEFAULT_GIT_USERNAME,
                CONTROLPLANE_GIT_PASSWORD=password,
            )
        env["GIT_SSH_COMMAND"] = " ".join(ssh)
        return env

    def git(self, *args: str, what: str) -> CommandResult:
        """Run git with its output streamed to the log; raises BuildFailed (``what`` failed)."""
        result = self.try_git(*args)
        if not result.ok:
            self.fail(f"{what} failed" + (" (timed out)" if result.timed_out else ""), result.tail)
        return result

    def try_git(self, *args: str) -> CommandResult:
        if self.remaining() <= 0:
            self.fail(f"The build ran past the {settings.BUILD_TIMEOUT} s limit", [])
        return run_streaming(
            ["git", *args],
            cwd=self.workdir,
            env=self.git_env,
            timeout=self.remaining(),
            on_line=lambda line: self.log(EventLevel.INFO, line),
            redact=self.redact,
            tail_lines=TAIL_LINES,
        )

    def git_output(self, *args: str) -> str | None:
        """git's stdout for a quick local query (rev-parse, log), or None when it fails."""
        try:
            done = subprocess.run(
                ["git", "-C", str(self.src), *args],
                env=self.git_env,
                capture_output=True,
                timeout=max(1.0, min(60.0, self.remaining())),
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
        return done.stdout.decode("utf-8", "replace").strip() if done.returncode == 0 else None

    def fail(self, message: str, tail: list[str]) -> None:
        detail = self.redact(message + ("." if not message.endswith(".") else ""))
        if tail:
            detail += " Last output:\n" + "\n".join(tail)
        self._emit(EventLevel.ERROR, detail)
        raise BuildFailed(detail)

    def fetch(self) -> str:
        """Fetch the commit into ``src`` and check it out; returns its full sha."""
        url = self.app.repo_url
        self.log(EventLevel.INFO, f"Fetching {url} at {self.sha}.")
        self.git("init", "-q", str(self.src), what="git init")
        self.git("-C", str(self.src), "remote", "add", "origin", url, what="Setting the remote")
        fetched = False
        if len(self.sha) in (40, 64):
            fetched = self.try_git("-C", str(self.src), "fetch", "-q", "--no-tags", "--depth", "1",
                                   "origin", self.sha).ok  # fmt: skip
            if not fetched:
                self.log(
                    EventLevel.INFO,
                    "The server does not hand out single commits by sha; fetching all its branches.",
                )
        if not fetched:
            self.git("-C", str(self.src), "fetch", "-q", "--tags", "origin",
                     "+refs/heads/*:refs/remotes/origin/*", what="git fetch")  # fmt: skip
        full = self.git_output(
            "rev-parse", "--verify", "--quiet", "--end-of-options", f"{self.sha}^{{commit}}"
        )
        if not full:
            self.fail(f"Commit {self.sha} is not in {url}", [])
        self.git("-C", str(self.src), "-c", "advice.detachedHead=false", "checkout", "-q", "--detach",
                 full, "--", what="git checkout")  # fmt: skip
        return full

    # --- the build -----------------------------------------------------------------------------
    def run(self) -> Artifact:
        commit = self.fetch()
        tree = self.git_output("rev-parse", f"{commit}^{{tree}}") or ""
        built = reusable_artifact(app=self.app, tree=tree)
        if built is not None:
            self.log(
                EventLevel.INFO,
                f"Commit {commit[:12]} has tree {tree[:12]}, built before with the same build command, "
                f"output folder and runtime as artifact {built.sha256[:12]}: reusing it, no build.",
            )
            built.reused = True
            return built
        if tree and Artifact.objects.filter(app=self.app, tree_sha=tree).exists():
            self.log(
                EventLevel.INFO,
                f"Tree {tree[:12]} was built before with another build command, output folder or "
                "runtime: building it again.",
            )
        # Nothing the build runs may read the git credential.
        _remove_tree(self.secrets_dir)
        self.check_cancelled()
        if self.app.build_command and settings.BUILD_BACKEND == "codebuild":
            output = self.run_on_codebuild(commit, tree)
        else:
            if self.app.build_command:
                self.run_build_command(commit, tree)
            output = self.output_dir()
        archive = self.workdir / "artifact.zip"
        count, unzipped = zip_tree(
            output, archive, comment=build_comment(tree=tree, recipe=build_recipe(self.app))
        )
        try:
            with archive.open("rb") as fileobj:
                artifact = artifacts.store_artifact(
                    app=self.app, fileobj=fileobj, source=ArtifactSource.BUILD, tree_sha=tree
                )
        except DomainError as err:
            self.fail(f"The built zip was refused: {err.detail}", [])
        self.log(
            EventLevel.INFO,
            f"Zipped {count} files ({unzipped / artifacts.MB:.1f} MB unzipped) from "
            f"{self.app.build_output_dir or 'the repository root'}: artifact {artifact.sha256[:12]}"
            + (" (the same bytes were stored before)." if artifact.deduplicated else "."),
        )
        artifact.reused = False
        return artifact

    def build_env(self, commit: str, tree: str) -> dict[str, str]:
        """The build command's whole environment: nothing of the control plane's own (no keys,
        database URL or AWS credentials), only a path, a home, a locale and the commit. (The sandbox
        adds the proxy variables when the build has network access.)"""
        subject = self.git_output("log", "-1", "--format=%s", commit) or ""
        author = self.git_output("log", "-1", "--format=%an <%ae>", commit) or ""
        toolchains = [
            f"{p.rstrip('/')}/bin" for p in settings.SANDBOX_READONLY_PATHS if os.path.isdir(f"{p}/bin")
        ]
        return {
            "PATH": ":".join([*toolchains, DEFAULT_PATH]),
            "HOME": sandbox.INSIDE_HOME,
            "LANG": "C.UTF-8",
            "CI": "true",
            "CONTROLPLANE_APP": self.app.slug,
            "CONTROLPLANE_TEAM": self.app.team.slug,
            "CONTROLPLANE_REPO_URL": self.redact(self.app.repo_url),
            "CONTROLPLANE_COMMIT_SHA": commit,
            "CONTROLPLANE_COMMIT_SHORT_SHA": commit[:7],
            "CONTROLPLANE_COMMIT_TREE": tree,
            "CONTROLPLANE_COMMIT_MESSAGE": subject,
            "CONTROLPLANE_COMMIT_AUTHOR": author,
        }

    def limits(self) -> sandbox.Limits:
        return sandbox.Limits(
            wall_seconds=self.remaining(),
            cpu_seconds=settings.BUILD_CPU_SECONDS,
            memory_bytes=settings.BUILD_MEMORY_MB << 20,
            processes=settings.BUILD_PROCESSES,
            disk_bytes=settings.BUILD_DISK_MB << 20,
        )

    def run_build_command(self, commit: str, tree: str) -> None:
        """Run the build command in the sandbox, on the checkout; raises BuildFailed."""
        command = self.app.build_command
        self.log(EventLevel.INFO, f"$ {command}")
        if self.remaining() <= 0:
            self.fail(f"The build ran past the {settings.BUILD_TIMEOUT} s limit", [])
        network = "public" if self.app.build_network else "off"
        self.log(
            EventLevel.INFO,
            "In the build sandbox: network "
            + ("through its proxy, public addresses only." if self.app.build_network else "off."),
        )
        started = time.monotonic()
        try:
            result = sandbox.run(
                ["bash", "-c", command],
                cwd=CHECKOUT,
                env=self.build_env(commit, tree),
                writable=[(self.src, CHECKOUT)],
                network=network,
                limits=self.limits(),
                extra_readonly=settings.SANDBOX_READONLY_PATHS,
                public_networks=settings.SANDBOX_TREAT_AS_PUBLIC,
                root=settings.SANDBOX_DIR or None,
                on_line=lambda line: self.log(EventLevel.INFO, line),
                tail_lines=TAIL_LINES,
                cancel=self.cancel,
            )
        except sandbox.SandboxUnavailable as err:
            self.fail(
                f"The build sandbox cannot run on this worker: {err} (or set BUILD_BACKEND=codebuild)", []
            )
        tail = [self.redact(line) for line in result.tail]
        for refused in dict.fromkeys(result.refused):
            self.log(EventLevel.WARNING, f"The sandbox refused a connection to {refused}")
        if result.stopped_by == "cancelled":
            raise BuildCancelled(
                "The build was stopped: the deployment was cancelled or superseded "
                f"(after {time.monotonic() - started:.1f} s)."
            )
        if result.stopped_by == "wall_seconds":
            self.fail(f"The build ran past the {settings.BUILD_TIMEOUT} s limit and was stopped", tail)
        if result.stopped:
            self.fail(f"The build was stopped: it {result.stopped}", tail)
        if result.returncode != 0:
            hint = EXIT_HINTS.get(result.returncode, "")
            self.fail(f"The build command exited with status {result.returncode}{hint}", tail)
        self.log(
            EventLevel.INFO,
            f"Build command finished in {time.monotonic() - started:.1f} s "
            f"({result.usage.cpu_seconds:.1f} s CPU, {result.usage.max_memory_bytes / artifacts.MB:.0f} MB "
            "memory at most).",
        )

    def run_on_codebuild(self, commit: str, tree: str) -> Path:
        """Build on CodeBuild; returns the folder of its output. Raises BuildFailed."""
        relative = (self.app.build_output_dir or "").strip().strip("/")
        if relative and ".." in Path(relative).parts:
            self.fail(f"build_output_dir '{relative}' is outside the repository", [])
        self.log(EventLevel.INFO, f"$ {self.app.build_command}")
        try:
            return codebuild.run_build(
                app=self.app, commit=commit, src=self.src, workdir=self.workdir,
                env=self.build_env(commit, tree), output_dir=relative, deadline=self.deadline,
                log=self.log, tail_lines=TAIL_LINES, cancel=self.cancel,
            )  # fmt: skip
        except codebuild.CodeBuildCancelled as err:
            raise BuildCancelled(f"The build was stopped: {err.message}.")
        except codebuild.CodeBuildFailed as err:
            self.fail(err.message, [self.redact(line) for line in err.tail])
        raise AssertionError("fail() raises")  # pragma: no cover

    def output_dir(self) -> Path:
        """The folder to zip: ``build_output_dir`` inside the checkout, or the checkout itself."""
        relative = (self.app.build_output_dir or "").strip()
        if not relative:
            return self.src
        root = self.src.resolve()
        output = (root / relative).resolve()
        if output != root and root not in output.parents:
            self.fail(f"build_output_dir '{relative}' is outside the repository", [])
        if not output.is_dir():
            self.fail(f"build_output_dir '{relative}' does not exist after the build", [])
        return output


def zip_tree(root: Path, destination: Path, *, comment: bytes = b"") -> tuple[int, int]:
    """Zip the files under ``root`` (not ``.git``) into ``destination``, deterministically: entries
    sorted by path, one fixed date, modes reduced to 644/755, symlinks kept as links, then the
    archive ``comment``. The same files and comment always give the same bytes. Returns (number of
    entries, unzipped bytes).

    Raises BuildFailed when the files are over Lambda's unzipped limit (checked before zipping)."""
    entries: list[tuple[str, Path]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames[:] = [d for d in dirnames if d != ".git"]
        here = Path(dirpath)
        for name in [*dirnames, *filenames]:
            path = here / name
            if path.is_symlink():
                entries.append((path.relative_to(root).as_posix(), path))
            elif path.is_file() and name != ".git":
                entries.append((path.relative_to(root).as_posix(), path))
                total += path.stat().st_size
        if total > artifacts.MAX_UNZIPPED_BYTES:
            raise BuildFailed(
                f"The build output is over Lambda's limit of {artifacts.MAX_UNZIPPED_BYTES // artifacts.MB} "
                "MB unzipped."
            )
    entries.sort()
    with zipfile.ZipFile(destination, "w") as archive:
        archive.comment = comment
        for name, path in entries:
            info = zipfile.ZipInfo(name, date_time=ZIP_DATE)
            info.create_system = 3  # unix, so the mode bits below are honoured
            if path.is_symlink():
                info.external_attr = (stat.S_IFLNK | 0o777) << 16
                info.compress_type = zipfile.ZIP_STORED
                archive.writestr(info, os.readlink(path))
                continue
            executable = path.stat().st_mode & stat.S_IXUSR
            info.external_attr = (stat.S_IFREG | (0o755 if executable else 0o644)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with path.open("rb") as src, archive.open(info, "w") as dst:
                shutil.copyfileobj(src, dst, artifacts.CHUNK)
    return len(entries), total


def _remove_tree(path: Path) -> None:
    """Delete ``path`` even when a build left read-only folders in it."""

    def make_writable(func, target, _exc_info):
        try:
            os.chmod(os.path.dirname(target), 0o700)
            os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    if path.exists():
        shutil.rmtree(path, onerror=make_writable)
