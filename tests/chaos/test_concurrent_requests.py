"""Identical requests at once: idempotent POSTs with one key and pushes of one commit with
different delivery ids. Real threads, each with its own database connection, send real requests
at the same instant; what is recorded is counted after (and printed)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client

from controlplane.choices import Role
from deployments.models import Artifact, Deployment, Release, WebhookDelivery
from tests.deployments.test_releases_config_promote import ship
from tests.factories import AppFactory, AppRegionFactory, EnvVarFactory, RegionFactory, StageFactory
from tests.support.deploys import boto, make_zip, upload, wait_finished
from tests.support.gitrepo import GitRepo, body_of, github_headers, github_push
from tests.support.processes import wait_for

REGIONS = ["us-east-1", "eu-west-1"]
HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'v1'}\n"


def at_once(n: int, send):
    """``send(i)`` from ``n`` threads released together; their answers in order."""
    barrier = threading.Barrier(n)

    def one(i):
        try:
            barrier.wait()
            return send(i)
        finally:
            connection.close()  # this thread's own connection

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(one, range(n)))


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_posts_with_one_idempotency_key_make_one_release_and_one_deployment(team, api_for):
    app = AppFactory(team=team, slug="shop")
    for code in REGIONS:
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production")
    EnvVarFactory(app=app, key="DB_PASSWORD", value="s3cr3t", secret=True)
    client = api_for(team, role=Role.DEPLOYER)
    artifact = upload(client, app, make_zip())
    body = {"stage": "production", "artifact": artifact, "commit": {"sha": "a" * 40, "branch": "main"}}

    def post(i):
        response = client.post(
            "/api/v1/apps/shop/deployments/", body, format="json", HTTP_IDEMPOTENCY_KEY="ci-run-42"
        )
        return response.status_code, response.json()

    answers = at_once(10, post)

    deployments, releases = Deployment.objects.filter(app=app), Release.objects.filter(app=app)
    print(
        f"\n10 concurrent idempotent POSTs: {deployments.count()} deployment(s), "
        f"{releases.count()} release(s)"
    )
    assert [status for status, _ in answers] == [202] * 10, answers
    assert {body["id"] for _, body in answers} == {deployments.get().pk}
    (release,) = releases  # one release, so one encrypted env snapshot
    assert release.number == 1 and deployments.get().release_id == release.pk
    # No number was used up: the next deploy is release #2.
    after = client.post(
        "/api/v1/apps/shop/deployments/", {**body, "commit": {"sha": "b" * 40}}, format="json"
    )
    assert after.status_code == 202, after.json()
    assert sorted(releases.values_list("number", flat=True)) == [1, 2]


@pytest.mark.django_db(transaction=True)
def test_ten_concurrent_config_deploys_with_one_key_make_one_release(team, api_for):
    app = AppFactory(team=team, slug="shop")
    AppRegionFactory(app=app, region=RegionFactory(code="us-east-1"))
    stage = StageFactory(app=app, name="production")
    client = api_for(team, role=Role.DEPLOYER)
    # The stage runs release #1 (recorded as the engine records a finished deploy).
    art = Artifact.objects.create(app=app, sha256="a" * 64, size=100)
    ship(app, "production", art=art, regions=["us-east-1"])

    def post(i):
        response = client.post(
            "/api/v1/apps/shop/deployments/", {"stage": "production", "kind": "config"}, format="json",
            HTTP_IDEMPOTENCY_KEY="env-change-7",
        )  # fmt: skip
        return response.status_code, response.json().get("id")

    answers = at_once(10, post)

    made = Release.objects.filter(stage=stage).count() - 1
    print(f"\n10 concurrent config deploys, one key: {made} release(s)")
    assert [status for status, _ in answers] == [202] * 10, answers
    assert len({pk for _, pk in answers}) == 1
    assert sorted(Release.objects.filter(stage=stage).values_list("number", flat=True)) == [1, 2]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_pushes_of_one_commit_run_one_deployment(team, tmp_path, aws, worker_process):
    repo = GitRepo(tmp_path / "git")
    app = AppFactory(team=team, slug="shop", repo_url=repo.url, runtime="python3.12", handler="app.handler")
    for code in REGIONS:
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production", branch="main")
    sha = repo.commit({"app.py": HANDLER}, "Ship v1")
    body = body_of(github_push(repo, after=sha))

    def push(i):
        response = Client().post(
            "/api/v1/hooks/github/", data=body, content_type="application/json",
            headers=github_headers(app.webhook_secret, body, delivery=f"delivery-{i}"),
        )  # fmt: skip
        return response.status_code, response.json()

    answers = at_once(20, push)

    assert [status for status, _ in answers] == [202] * 20, answers
    ids = {body["deployments"][0]["deployment"] for _, body in answers}
    deployment = Deployment.objects.get(app=app)
    assert ids == {deployment.pk}
    assert WebhookDelivery.objects.count() == 20  # every delivery is recorded, each names it
    assert set(WebhookDelivery.objects.values_list("deployments", flat=True)) == {deployment.pk}

    finished = wait_finished(deployment.pk, timeout=120)
    # The worker's last write is the "finish" log line: the test database is not flushed under it.
    wait_for(lambda: finished.events.filter(step="finish").exists(), message="the finish line")
    assert finished.status == "succeeded", finished.error
    versions = {
        code: [
            v["Version"]
            for v in boto("lambda", code, aws).list_versions_by_function(FunctionName=app.function_name)[
                "Versions"
            ]
            if v["Version"] != "$LATEST"
        ]
        for code in REGIONS
    }
    print(
        f"\n20 concurrent pushes of one commit: {Deployment.objects.filter(app=app).count()} deployment(s), "
        f"{Release.objects.filter(app=app).count()} release(s), Lambda versions {versions}"
    )
    assert Deployment.objects.filter(app=app).count() == 1
    assert Release.objects.filter(app=app).count() == 1
    assert versions == {code: ["1"] for code in REGIONS}
