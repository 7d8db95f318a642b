"""The CodeBuild build backend (``BUILD_BACKEND=codebuild``): a build that scales past one machine
and never runs on a worker.

The worker fetches the commit as for a local build (the git credential never leaves it), zips the
checkout without ``.git`` into ``s3://CODEBUILD_BUCKET/sources/...``, and starts a build of the
installation's project (``CODEBUILD_PROJECT`` in ``CODEBUILD_REGION``; created on first use when
``CODEBUILD_ROLE_ARN`` is set, with ``CODEBUILD_IMAGE`` or CodeBuild's standard image) with the
app's build command as the buildspec and the same ``CI``/``CONTROLPLANE_*`` variables a local build
gets. While it runs, its CloudWatch Logs lines stream into the deployment log; when it succeeds, its
output zip (the ``build_output_dir``) is read back from ``s3://CODEBUILD_BUCKET/outputs/...``,
unpacked and zipped again the deterministic way a local build's output is. Both objects are
deleted afterwards. Past the build's deadline the CodeBuild build is stopped.
"""

from __future__ import annotations

import math
import os
import secrets
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable
from pathlib import Path

from django.conf import settings

from regions.aws import codebuild, s3
from regions.aws.session import AwsError

from . import artifacts
from .choices import EventLevel

OUTPUT_NAME = "output.zip"


class CodeBuildFailed(Exception):
    """The CodeBuild build could not start, failed or ran out of time: ``message`` and the last
    lines of its log (``tail``)."""

    def __init__(self, message: str, tail: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.tail = tail or []


def run_build(
    *,
    app,
    commit: str,
    src: Path,
    workdir: Path,
    env: dict[str, str],
    output_dir: str,
    deadline: float,
    log: Callable[[str, str], None],
    tail_lines: int = 20,
    cancel: threading.Event | None = None,
) -> Path:
    """Build the checkout ``src`` of ``app`` at ``commit`` on CodeBuild; returns the folder (under
    ``workdir``) holding the build's ``output_dir`` files. Raises CodeBuildFailed or AwsError."""
    project, bucket, region = settings.CODEBUILD_PROJECT, settings.CODEBUILD_BUCKET, settings.CODEBUILD_REGION
    if not project or not bucket:
        raise CodeBuildFailed("BUILD_BACKEND=codebuild needs CODEBUILD_PROJECT and CODEBUILD_BUCKET")
    if settings.CODEBUILD_ROLE_ARN:
        codebuild.ensure_project(
            region, project=project, bucket=bucket, service_role=settings.CODEBUILD_ROLE_ARN,
            image=settings.CODEBUILD_IMAGE,
        )  # fmt: skip
    if not app.build_network:
        log(EventLevel.WARNING, "build_network is off, but a CodeBuild build has the network of its project.")
    name = f"{app.team.slug}/{app.slug}/{commit}-{secrets.token_hex(4)}"
    source_key = f"sources/{name}.zip"
    output_path = f"outputs/{name}"
    source_zip = workdir / "source.zip"
    _zip_checkout(src, source_zip)
    s3.upload_file(region, bucket, source_key, str(source_zip))
    try:
        state = codebuild.start_build(
            region,
            project=project,
            source_bucket=bucket,
            source_key=source_key,
            spec=codebuild.buildspec(command=app.build_command, base_directory=output_dir),
            env=env,
            artifact_bucket=bucket,
            artifact_path=output_path,
            artifact_name=OUTPUT_NAME,
            timeout_minutes=math.ceil(max(0.0, deadline - time.monotonic()) / 60),
            image=settings.CODEBUILD_IMAGE,
            service_role=settings.CODEBUILD_ROLE_ARN,
        )
        log(EventLevel.INFO, f"CodeBuild build {state.build_id} started in {region}.")
        state, tail = _follow(
            region, state, deadline=deadline, log=log, tail_lines=tail_lines,
            cancel=cancel or threading.Event(),
        )  # fmt: skip
        if state.status != "SUCCEEDED":
            raise CodeBuildFailed(f"The CodeBuild build {state.build_id} ended {state.status}", tail)
        archive = workdir / OUTPUT_NAME
        try:
            codebuild.download_file(
                region, bucket=bucket, key=f"{output_path}/{OUTPUT_NAME}", path=str(archive)
            )
        except AwsError as err:
            raise CodeBuildFailed(f"The CodeBuild build's output could not be read back: {err}", tail)
        return _unpack(archive, workdir / "codebuild-output")
    finally:
        for key in (source_key, f"{output_path}/{OUTPUT_NAME}"):
            try:
                s3.delete_object(region, bucket, key)
            except AwsError:
                pass  # a leftover object costs little; the bucket's lifecycle rule may expire it


class CodeBuildCancelled(CodeBuildFailed):
    """The deployment was cancelled or superseded: the CodeBuild build was stopped."""


def _follow(region, state, *, deadline: float, log, tail_lines: int, cancel: threading.Event):
    """Poll the build until it ends, streaming its log lines; returns its last state and tail.
    Once ``cancel`` is set the build is stopped (StopBuild) and CodeBuildCancelled raised."""
    token = ""
    tail: deque[str] = deque(maxlen=tail_lines)

    def drain() -> None:
        nonlocal token
        while True:
            lines, next_token = codebuild.log_lines(
                region, group=state.log_group, stream=state.log_stream, token=token
            )
            for line in lines:
                tail.append(line)
                log(EventLevel.INFO, line)
            if not lines or next_token == token:
                token = next_token
                return
            token = next_token

    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            codebuild.stop_build(region, build_id=state.build_id)
            drain()
            raise CodeBuildFailed(
                f"The build ran past the {settings.BUILD_TIMEOUT} s limit; CodeBuild build "
                f"{state.build_id} was stopped",
                list(tail),
            )
        if cancel.wait(min(settings.CODEBUILD_POLL_INTERVAL, remaining)):
            codebuild.stop_build(region, build_id=state.build_id)
            drain()
            raise CodeBuildCancelled(
                f"The deployment was cancelled or superseded; CodeBuild build {state.build_id} was stopped",
                list(tail),
            )
        state = codebuild.build_state(region, build_id=state.build_id)
        drain()
        if state.done:
            return state, list(tail)


def _zip_checkout(src: Path, destination: Path) -> None:
    with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
        for dirpath, dirnames, filenames in os.walk(src):
            dirnames[:] = [d for d in dirnames if d != ".git"]
            for name in filenames:
                path = Path(dirpath) / name
                if path.is_file() or path.is_symlink():
                    archive.write(path, path.relative_to(src).as_posix())


def _unpack(archive: Path, destination: Path) -> Path:
    try:
        # Counted by inflating, not from the headers: a build output that under-declares its sizes
        # would otherwise be unpacked here beyond the limit.
        artifacts.inspect_zip(archive)
    except (artifacts.ArtifactTooLarge, artifacts.InvalidArtifact, artifacts.UnsafeArtifact) as err:
        raise CodeBuildFailed(f"The CodeBuild build's output was refused: {err.detail}")
    try:
        with zipfile.ZipFile(archive) as zf:
            destination.mkdir()
            for info in zf.infolist():
                # extract() drops absolute paths and ".." parts, and returns where the file went.
                path = zf.extract(info, destination)
                mode = (info.external_attr >> 16) & 0o777
                if mode and not info.is_dir():
                    os.chmod(path, mode | 0o600)
    except zipfile.BadZipFile as err:
        raise CodeBuildFailed(f"The CodeBuild build's output is not a zip: {err}")
    return destination
