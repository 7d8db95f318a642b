"""A git push reaches the webhook, a real Celery worker builds that exact commit from a real git
repository and deploys it to a moto server; the zip in each region's bucket is checked with boto3."""

from __future__ import annotations

import base64
import io
import zipfile

import boto3
import pytest
from django.test import Client

from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.gitrepo import GitRepo, body_of, github_headers, github_push, gitlab_headers, gitlab_push
from tests.support.processes import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

REGIONS = ["us-east-1", "eu-west-1"]
HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': '%s'}\n"
TERMINAL = [s for s in DeploymentStatus if s not in (DeploymentStatus.QUEUED, DeploymentStatus.RUNNING)]


def wait_finished(pk: int, timeout: float = 120) -> Deployment:
    def done():
        d = Deployment.objects.get(pk=pk)
        # The worker's last write is the "finish" log line, after the status: wait for it too, so
        # the test database is not flushed under a worker still writing.
        finished = d.status in TERMINAL and d.finished_at and d.events.filter(step="finish").exists()
        return d if finished else None

    try:
        return wait_for(done, timeout=timeout, message=f"deployment {pk} to finish")
    except AssertionError:
        log = "\n".join(f"{e.seq} {e.step} {e.message}" for e in Deployment.objects.get(pk=pk).events.all())
        raise AssertionError(f"deployment {pk} did not finish; log:\n{log}") from None


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "git")


@pytest.fixture
def app(team, repo, aws):
    app = AppFactory(team=team, slug="shop", repo_url=repo.url, runtime="python3.12", handler="app.handler")
    for code in REGIONS:
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production", branch="main")
    return app


def push(app, repo, sha: str, before: str = "0" * 40):
    body = body_of(github_push(repo, after=sha, before=before))
    response = Client().post(
        "/api/v1/hooks/github/", data=body, content_type="application/json",
        headers=github_headers(app.webhook_secret, body),
    )  # fmt: skip
    assert response.status_code == 202, response.json()
    return response.json()["deployments"][0]["deployment"]


def test_a_push_is_built_by_the_worker_and_each_region_gets_the_zip_of_that_exact_commit(
    app, repo, aws, worker_process
):
    shipped = repo.commit({"app.py": HANDLER % "v1", "lib/prices.py": "TAX = 0.2\n"}, "Add prices")
    # A later commit exists on the branch by the time the worker fetches: it must not leak in.
    repo.commit({"app.py": HANDLER % "v2", "lib/prices.py": None, "lib/new.py": "X = 1\n"}, "Later")

    deployment = wait_finished(push(app, repo, shipped))

    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    artifact = deployment.release.artifact
    assert artifact.source == "build" and artifact.tree_sha == repo.tree(shipped)
    assert deployment.release.commit_sha == shipped
    build_lines = list(deployment.events.filter(step="build").values_list("message", flat=True))
    assert any(f"at {shipped}" in line for line in build_lines)
    expected = repo.files_at(shipped)
    for code in REGIONS:
        s3 = boto3.client("s3", region_name=code, endpoint_url=aws.url)
        bucket = app.placements.get(region__code=code).region.bucket
        body = s3.get_object(Bucket=bucket, Key=artifact.storage_key)["Body"].read()
        with zipfile.ZipFile(io.BytesIO(body)) as zf:
            assert {i.filename: zf.read(i) for i in zf.infolist()} == expected, code
        lam = boto3.client("lambda", region_name=code, endpoint_url=aws.url)
        alias = lam.get_alias(FunctionName=app.function_name, Name="production")
        live = lam.get_function_configuration(
            FunctionName=app.function_name, Qualifier=alias["FunctionVersion"]
        )
        assert live["CodeSha256"] == base64.b64encode(bytes.fromhex(artifact.sha256)).decode(), code


def test_a_failing_build_fails_the_deployment_with_the_tail_of_its_output(app, repo, aws, worker_process):
    app.build_command = "echo compiling; echo 'SyntaxError: unexpected token' >&2; exit 2"
    app.save()
    sha = repo.commit({"app.py": HANDLER % "broken"}, "Broken")

    deployment = wait_finished(push(app, repo, sha))

    assert deployment.status == DeploymentStatus.FAILED
    assert "exited with status 2" in deployment.error and "SyntaxError: unexpected token" in deployment.error
    assert deployment.release is None
    assert set(deployment.regions.values_list("status", flat=True)) == {"skipped"}
    assert deployment.events.filter(step="build", message="compiling").exists()


def test_a_gitlab_push_builds_that_commit_and_shows_its_metadata(app, repo, aws, worker_process):
    first = repo.commit({"app.py": HANDLER % "v1"}, "First")
    shipped = repo.commit({"app.py": HANDLER % "v2", "lib/tax.py": "RATE = 7\n"}, "Add tax rate")
    body = body_of(gitlab_push(repo, after=shipped, before=first, commits=[shipped]))
    answer = Client().post(
        "/api/v1/hooks/gitlab/", data=body, content_type="application/json",
        headers=gitlab_headers(app.webhook_secret),
    )  # fmt: skip
    assert answer.status_code == 202, answer.json()

    deployment = wait_finished(answer.json()["deployments"][0]["deployment"])

    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    assert (deployment.commit_sha, deployment.commit_message) == (shipped, "Add tax rate")
    assert deployment.triggered_by.startswith("webhook:gitlab") and deployment.commit_count == 1
    assert deployment.compare_url.startswith("https://gitlab.example.com/acme/shop/-/compare/")
    artifact = deployment.release.artifact
    s3 = boto3.client("s3", region_name=REGIONS[0], endpoint_url=aws.url)
    bucket = app.placements.get(region__code=REGIONS[0]).region.bucket
    zipped = s3.get_object(Bucket=bucket, Key=artifact.storage_key)["Body"].read()
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        assert {i.filename: zf.read(i) for i in zf.infolist()} == repo.files_at(shipped)
