"""AWS CodeBuild for builds (``BUILD_BACKEND=codebuild``): the project, a build from a source zip in
S3, its status, its CloudWatch Logs lines, and its output zip back from S3."""

from __future__ import annotations

import json
from dataclasses import dataclass

from botocore.exceptions import ClientError

from .session import AwsError, aws_errors, client

DEFAULT_IMAGE = "aws/codebuild/standard:7.0"
COMPUTE_TYPE = "BUILD_GENERAL1_SMALL"
DONE_STATUSES = frozenset({"SUCCEEDED", "FAILED", "FAULT", "TIMED_OUT", "STOPPED"})


@dataclass(frozen=True)
class BuildState:
    """Where a build stands: ``status`` (``IN_PROGRESS``, ``SUCCEEDED``, ``FAILED``, ...), its
    current phase, and where its log lines go."""

    build_id: str
    status: str
    phase: str
    log_group: str
    log_stream: str

    @property
    def done(self) -> bool:
        return self.status in DONE_STATUSES


def buildspec(*, command: str, base_directory: str) -> str:
    """A buildspec (JSON, which CodeBuild reads as YAML) that runs ``command`` with bash and
    uploads every file under ``base_directory`` (``.``: the source root) as the artifact."""
    return json.dumps(
        {
            "version": 0.2,
            "env": {"shell": "bash"},
            "phases": {"build": {"commands": [command]}},
            "artifacts": {"files": ["**/*"], "base-directory": base_directory or ".", "discard-paths": "no"},
        }
    )


@aws_errors
def ensure_project(region: str, *, project: str, bucket: str, service_role: str, image: str) -> None:
    """Create the CodeBuild project ``project`` (S3 source and artifacts in ``bucket``, run as
    ``service_role``) unless it exists. Every build overrides its source, buildspec and artifacts."""
    codebuild = client("codebuild", region)
    if codebuild.batch_get_projects(names=[project]).get("projects"):
        return
    codebuild.create_project(
        name=project,
        description="controlplane builds: one build per deployed commit",
        source={"type": "S3", "location": f"{bucket}/sources/placeholder.zip"},
        artifacts={"type": "S3", "location": bucket, "packaging": "ZIP"},
        environment={
            "type": "LINUX_CONTAINER",
            "image": image or DEFAULT_IMAGE,
            "computeType": COMPUTE_TYPE,
            "privilegedMode": False,
        },
        serviceRole=service_role,
        logsConfig={"cloudWatchLogs": {"status": "ENABLED"}},
    )


@aws_errors
def start_build(
    region: str,
    *,
    project: str,
    source_bucket: str,
    source_key: str,
    spec: str,
    env: dict[str, str],
    artifact_bucket: str,
    artifact_path: str,
    artifact_name: str,
    timeout_minutes: int,
    image: str = "",
    service_role: str = "",
) -> BuildState:
    """Start a build of the zip at ``source_bucket/source_key`` with buildspec ``spec`` and
    ``env``; its output zip goes to ``artifact_bucket/artifact_path/artifact_name``."""
    kwargs: dict = {
        "projectName": project,
        "sourceTypeOverride": "S3",
        "sourceLocationOverride": f"{source_bucket}/{source_key}",
        "buildspecOverride": spec,
        "environmentVariablesOverride": [
            {"name": name, "value": value, "type": "PLAINTEXT"} for name, value in env.items()
        ],
        "artifactsOverride": {
            "type": "S3",
            "location": artifact_bucket,
            "path": artifact_path,
            "name": artifact_name,
            "namespaceType": "NONE",
            "packaging": "ZIP",
            "overrideArtifactName": False,
        },
        "timeoutInMinutesOverride": max(5, min(2160, timeout_minutes)),
        "privilegedModeOverride": False,
    }
    if image:
        kwargs["imageOverride"] = image
    if service_role:
        kwargs["serviceRoleOverride"] = service_role
    build = client("codebuild", region).start_build(**kwargs)["build"]
    return _state(build, project)


@aws_errors
def build_state(region: str, *, build_id: str) -> BuildState:
    """The build's current state. Raises AwsError when CodeBuild does not know it."""
    builds = client("codebuild", region).batch_get_builds(ids=[build_id]).get("builds") or []
    if not builds:
        raise AwsError("ResourceNotFoundException", f"CodeBuild has no build {build_id}.", region=region)
    return _state(builds[0], build_id.split(":", 1)[0])


@aws_errors
def stop_build(region: str, *, build_id: str) -> None:
    client("codebuild", region).stop_build(id=build_id)


@aws_errors
def log_lines(region: str, *, group: str, stream: str, token: str = "") -> tuple[list[str], str]:
    """The build's log lines after ``token`` (from the start when ""), and the token to continue
    from. No lines while CodeBuild has not created the stream yet."""
    kwargs: dict = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
    if token:
        kwargs["nextToken"] = token
    try:
        page = client("logs", region).get_log_events(**kwargs)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return [], token
        raise
    lines = [event.get("message", "").rstrip("\n") for event in page.get("events", [])]
    return lines, page.get("nextForwardToken") or token


@aws_errors
def download_file(region: str, *, bucket: str, key: str, path: str) -> None:
    """Copy the object at ``bucket/key`` to the file ``path``."""
    client("s3", region).download_file(bucket, key, str(path))


def _state(build: dict, project: str) -> BuildState:
    logs = build.get("logs") or {}
    build_id = build["id"]
    # CodeBuild's default names, used until it reports its own (it does once the build starts).
    group = logs.get("groupName") or f"/aws/codebuild/{project}"
    stream = logs.get("streamName") or build_id.split(":", 1)[-1]
    return BuildState(
        build_id=build_id,
        status=build.get("buildStatus", "IN_PROGRESS"),
        phase=build.get("currentPhase", ""),
        log_group=group,
        log_stream=stream,
    )
