"""A real deploy (API, Celery worker, moto) reported to a fake GitHub: the deployment never
waits for the git host, and the host sees the whole story in order."""

from __future__ import annotations

import pytest

from controlplane.choices import Role
from deployments.choices import DeploymentStatus
from deployments.models import GitHostConnection, GitHostPost
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.deploys import deploy, make_zip, upload, wait_finished
from tests.support.githost import FakeGitHost
from tests.support.processes import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def fake():
    server = FakeGitHost(github_token="ghp_e2e")
    yield server
    server.stop()


def test_a_deploy_is_posted_to_github_and_never_waits_for_it(team, api_for, aws, worker_process, fake):
    app = AppFactory(team=team, slug="shop", repo_url="git@github.com:acme/shop.git")
    for code in ("us-east-1", "eu-west-1"):
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="staging", branch="develop")
    GitHostConnection.objects.create(app=app, provider="github", api_url=fake.url, credential="ghp_e2e")
    client = api_for(team, role=Role.DEPLOYER)

    fake.hold.clear()  # GitHub hangs: every request waits
    pk = deploy(client, app, "staging", upload(client, app, make_zip()), sha="c" * 40)["id"]
    assert wait_finished(pk).status == DeploymentStatus.SUCCEEDED
    assert fake.accepted == []  # done while GitHub had answered nothing

    fake.hold.set()
    wait_for(lambda: "success" in fake.states("deployment"), timeout=120, message="the success status")
    wait_for(
        lambda: not GitHostPost.objects.filter(status="pending").exists(), timeout=30, message="the posts"
    )
    assert fake.problems == []
    assert fake.states("deployment") == ["queued", "in_progress", "success"]
    created = fake.accepted[0][2]
    assert created["environment"] == "staging" and created["production_environment"] is False
    finals = sorted(s for s in fake.states("commit") if s[1] != "pending")
    assert finals == [
        ("controlplane/staging/eu-west-1", "success"),
        ("controlplane/staging/us-east-1", "success"),
    ]
