"""BUILD_BACKEND=codebuild: the build leaves the worker for AWS CodeBuild, against moto.

moto's CodeBuild records builds but runs nothing: a build is "SUCCEEDED" the first time it is
read. ``FakeCodeBuild`` below does, when a build starts, what CodeBuild would: it reads the source
zip the request names from S3, runs the buildspec's commands with the request's variables, writes
the output lines to CloudWatch Logs (``/aws/codebuild/<project>``, stream = the build's uuid, as
CodeBuild names them) and puts the ``base-directory`` zipped where ``artifactsOverride`` says; a
failing command makes the build ``FAILED``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from moto.codebuild.models import CodeBuildBackend
from moto.codebuild.responses import CodeBuildResponse

from deployments import artifacts
from deployments.builds import BuildCancelled, BuildFailed, build_artifact
from regions.aws import session
from tests.factories import AppFactory
from tests.support.gitrepo import GitRepo

pytestmark = pytest.mark.django_db

REGION = "eu-west-1"
BUCKET = "cp-codebuild"
PROJECT = "controlplane-builds"
ROLE = "arn:aws:iam::123456789012:role/codebuild-builds"
HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'v1'}\n"


class FakeCodeBuild:
    """Runs each started build as CodeBuild would (see the module docstring)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.failed: set[str] = set()
        self.stopped: set[str] = set()
        self.endless = False  # builds stay IN_PROGRESS until stopped

    def run(self, params: dict, build_id: str) -> None:
        self.requests.append(params)
        s3, logs = boto3.client("s3", region_name=REGION), boto3.client("logs", region_name=REGION)
        bucket, key = params["sourceLocationOverride"].split("/", 1)
        spec = json.loads(params["buildspecOverride"])
        env = {v["name"]: v["value"] for v in params["environmentVariablesOverride"]}
        with tempfile.TemporaryDirectory() as work:
            source = zipfile.ZipFile(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
            source.extractall(work)
            lines, ok = [], True
            for command in spec["phases"]["build"]["commands"]:
                done = subprocess.run(
                    ["bash", "-c", command], cwd=work, env={"PATH": os.environ["PATH"], **env},
                    capture_output=True, text=True, check=False,
                )  # fmt: skip
                lines += (done.stdout + done.stderr).splitlines()
                ok = ok and done.returncode == 0
            group, stream = f"/aws/codebuild/{params['projectName']}", build_id.split(":", 1)[1]
            if group not in [g["logGroupName"] for g in logs.describe_log_groups()["logGroups"]]:
                logs.create_log_group(logGroupName=group)
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
            now = int(time.time() * 1000)
            events = [{"timestamp": now, "message": line} for line in lines or ["(no output)"]]
            logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
            if not ok:
                self.failed.add(build_id)
                return
            output = Path(work) / spec["artifacts"]["base-directory"]
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w") as zf:
                for path in sorted(output.rglob("*")):
                    if path.is_file():
                        zf.write(path, path.relative_to(output).as_posix())
            target = params["artifactsOverride"]
            s3.put_object(
                Bucket=target["location"], Key=f"{target['path']}/{target['name']}", Body=buffer.getvalue()
            )


@pytest.fixture
def codebuild(settings, monkeypatch):
    """moto in-process with FakeCodeBuild behind its CodeBuild API; settings for the backend."""
    settings.AWS_ENDPOINT_URL = ""
    settings.AWS_ENDPOINT_URLS = {}
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name)
    settings.BUILD_BACKEND = "codebuild"
    settings.CODEBUILD_PROJECT = PROJECT
    settings.CODEBUILD_BUCKET = BUCKET
    settings.CODEBUILD_REGION = REGION
    settings.CODEBUILD_ROLE_ARN = ROLE
    settings.CODEBUILD_POLL_INTERVAL = 0.05
    fake = FakeCodeBuild()
    original_start, original_get = CodeBuildResponse.start_build, CodeBuildBackend.batch_get_builds
    original_stop = CodeBuildBackend.stop_build

    def start_build(self):
        result = original_start(self)
        name = self._get_param("projectName")
        params = {
            key: self._get_param(key)
            for key in ("projectName", "sourceLocationOverride", "buildspecOverride",
                        "environmentVariablesOverride", "artifactsOverride", "serviceRoleOverride",
                        "timeoutInMinutesOverride", "privilegedModeOverride")
        }  # fmt: skip
        fake.run(params, self.codebuild_backend.build_history[name][-1])
        return result

    def batch_get_builds(self, ids):
        builds = original_get(self, ids)
        for build in builds:
            if build["id"] in fake.failed:
                build["buildStatus"] = "FAILED"
            elif fake.endless:
                build["buildStatus"] = "STOPPED" if build["id"] in fake.stopped else "IN_PROGRESS"
        return builds

    def stop_build(self, build_id):
        fake.stopped.add(build_id)
        return original_stop(self, build_id)

    monkeypatch.setattr(CodeBuildResponse, "start_build", start_build)
    monkeypatch.setattr(CodeBuildBackend, "batch_get_builds", batch_get_builds)
    monkeypatch.setattr(CodeBuildBackend, "stop_build", stop_build)
    with mock_aws():
        session.reset_clients()
        boto3.client("s3", region_name=REGION).create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        yield fake
    session.reset_clients()


@pytest.fixture
def app(team, tmp_path):
    repo = GitRepo(tmp_path / "git")
    app = AppFactory(team=team, slug="shop", repo_url=repo.url, runtime="python3.12", handler="app.handler")
    app.repo = repo
    return app


def test_a_build_runs_on_codebuild_and_its_output_becomes_the_artifact(app, codebuild):
    sha = app.repo.commit({"app.py": HANDLER, "README.md": "# shop\n"}, "Build me")
    app.build_command = (
        'mkdir -p dist && cp app.py dist/ && echo "built $CONTROLPLANE_COMMIT_SHORT_SHA" > dist/v.txt'
    )
    app.build_command += " && echo compiled-on-codebuild"
    app.build_output_dir = "dist"
    app.save()
    lines: list[str] = []

    artifact = build_artifact(app=app, sha=sha, emit=lambda level, line: lines.append(line))

    with zipfile.ZipFile(artifacts.artifact_path(artifact)) as zf:
        assert sorted(zf.namelist()) == ["app.py", "v.txt"]
        assert zf.read("v.txt") == f"built {sha[:7]}\n".encode()
    assert "compiled-on-codebuild" in lines  # streamed from CloudWatch Logs into the deployment log
    assert any(line.startswith("CodeBuild build controlplane-builds:") for line in lines)
    request = codebuild.requests[0]
    assert request["serviceRoleOverride"] == ROLE and request["privilegedModeOverride"] is False
    env = {v["name"]: v["value"] for v in request["environmentVariablesOverride"]}
    assert env["CONTROLPLANE_COMMIT_SHA"] == sha and env["CI"] == "true"
    assert not any(name.startswith("AWS_") for name in env)
    project = boto3.client("codebuild", region_name=REGION).batch_get_projects(names=[PROJECT])["projects"][0]
    assert project["serviceRole"] == ROLE  # made on first use, with the installation's role
    # The source (without .git) and the output were deleted from the bucket afterwards.
    assert boto3.client("s3", region_name=REGION).list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0


def test_a_failing_codebuild_build_fails_with_the_tail_of_its_log(app, codebuild):
    sha = app.repo.commit({"app.py": HANDLER}, "Broken")
    app.build_command = "echo step-one; echo 'error: tests failed' >&2; exit 2"
    app.save()

    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha=sha, emit=lambda level, line: None)

    assert "ended FAILED" in failure.value.detail
    assert "error: tests failed" in failure.value.detail


def test_codebuild_needs_its_project_and_bucket(app, codebuild, settings):
    settings.CODEBUILD_BUCKET = ""
    sha = app.repo.commit({"app.py": HANDLER}, "Code")
    app.build_command = "true"
    app.save()
    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha=sha, emit=lambda level, line: None)
    assert "needs CODEBUILD_PROJECT and CODEBUILD_BUCKET" in failure.value.detail


def test_a_codebuild_build_past_the_time_limit_is_stopped(app, codebuild, settings):
    settings.BUILD_TIMEOUT = 3
    codebuild.endless = True
    sha = app.repo.commit({"app.py": HANDLER}, "Slow")
    app.build_command = "echo started"
    app.save()

    started = time.monotonic()
    with pytest.raises(BuildFailed) as failure:
        build_artifact(app=app, sha=sha, emit=lambda level, line: None)

    assert time.monotonic() - started < 30
    assert "ran past the 3 s limit" in failure.value.detail and "was stopped" in failure.value.detail
    assert "started" in failure.value.detail  # the log's tail
    assert len(codebuild.stopped) == 1


def test_a_cancelled_deployment_stops_its_running_codebuild_build(app, codebuild):
    codebuild.endless = True
    sha = app.repo.commit({"app.py": HANDLER}, "Superseded")
    app.build_command = "echo started"
    app.save()
    cancel = threading.Event()

    def emit(level, line):
        if line.startswith("CodeBuild build"):  # it runs: a newer push supersedes it now
            cancel.set()

    with pytest.raises(BuildCancelled) as stopped:
        build_artifact(app=app, sha=sha, emit=emit, cancel=cancel)

    assert "cancelled or superseded" in stopped.value.detail and "was stopped" in stopped.value.detail
    assert len(codebuild.stopped) == 1  # StopBuild was called for it
    build_id = next(iter(codebuild.stopped))
    build = boto3.client("codebuild", region_name=REGION).batch_get_builds(ids=[build_id])["builds"][0]
    assert build["buildStatus"] == "STOPPED"
