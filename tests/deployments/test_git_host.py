"""Deployments reported to GitHub and GitLab, against a local fake API that checks paths, auth
and version headers and bodies against the providers' documented shapes. The engine's hooks are
called as the engine calls them; the posting is run as the worker's task runs it."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings as django_settings
from django.utils import timezone

from deployments import scm_status
from deployments.choices import DeploymentStatus, GitHostPostStatus, RegionStatus
from deployments.git_host import post_pending, requeue_stale
from deployments.models import Deployment, GitHostConnection, GitHostPost, RegionDeployment
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.githost import FakeGitHost
from tests.support.processes import wait_for

TOKEN = "ghp_test_token"
SHA_1, SHA_2 = "a" * 40, "b" * 40


@pytest.fixture(scope="module")
def app_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def fake(app_key):
    server = FakeGitHost(github_token=TOKEN, gitlab_token="glpat-test", app_public_key=app_key.public_key(),
                         app_id="12345")  # fmt: skip
    yield server
    server.stop()


@pytest.fixture
def settings_fast(settings):
    settings.NOTIFY_RETRY_DELAYS = [0.01]
    settings.NOTIFY_MAX_ATTEMPTS = 3
    return settings


def make_app(team, fake, *, repo="https://github.com/acme/shop", provider="github", **conn):
    app = AppFactory(team=team, slug="shop", repo_url=repo)
    for code in ("us-east-1", "eu-west-1"):
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production", domain="shop.example.com")
    api = fake.url + ("/api/v4" if provider == "gitlab" else "")
    credential = conn.pop("credential", TOKEN if provider == "github" else "glpat-test")
    GitHostConnection.objects.create(app=app, provider=provider, api_url=api, credential=credential, **conn)
    return app


def new_deployment(app, sha: str) -> Deployment:
    stage = app.stages.get(name="production")
    d = Deployment.objects.create(
        app=app, stage=stage, commit_sha=sha, commit_branch="main", triggered_by="token:ci"
    )
    for placement in app.placements.select_related("region"):
        RegionDeployment.objects.create(deployment=d, region=placement.region)
    return d


def run(d: Deployment, outcome: dict[str, str], *, error: str = "") -> None:
    """The engine's calls for ``d``, each followed by the worker's posting: created, started,
    each region's end (``outcome``: region → status), the end."""
    scm_status.deployment_changed(d.pk, "queued")
    post_pending(d.pk)
    Deployment.objects.filter(pk=d.pk).update(status=DeploymentStatus.RUNNING, started_at=timezone.now())
    scm_status.deployment_changed(d.pk, "in_progress")
    post_pending(d.pk)
    for rd in d.regions.select_related("region"):
        status = outcome[rd.region.code]
        RegionDeployment.objects.filter(pk=rd.pk).update(
            status=status,
            version="1" if status != "skipped" else "",
            error="" if status == "succeeded" else error,
        )
        scm_status.region_finished(rd.pk)
        post_pending(d.pk)
    statuses = set(outcome.values())
    final = (
        DeploymentStatus.SUCCEEDED
        if statuses == {"succeeded"}
        else DeploymentStatus.ROLLED_BACK
        if "rolled_back" in statuses
        else DeploymentStatus.FAILED
    )
    Deployment.objects.filter(pk=d.pk).update(status=final, finished_at=timezone.now())
    scm_status.deployment_changed(d.pk, "finished")
    for pk in GitHostPost.objects.filter(status="pending").values_list("deployment_id", flat=True).distinct():
        post_pending(pk)


def test_github_gets_a_deployment_with_statuses_and_a_commit_status_per_region(db, team, fake):
    app = make_app(team, fake)
    first = new_deployment(app, SHA_1)
    run(first, {"us-east-1": "succeeded", "eu-west-1": "succeeded"})
    assert fake.problems == []
    method, path, created = fake.accepted[0]
    assert (method, path) == ("POST", "/repos/acme/shop/deployments")
    assert created["ref"] == SHA_1 and created["environment"] == "production"
    assert created["production_environment"] is True and created["transient_environment"] is False
    assert fake.states("deployment") == ["queued", "in_progress", "success"]
    assert fake.states("commit") == [
        ("controlplane/production/eu-west-1", "pending"),
        ("controlplane/production/us-east-1", "pending"),
        ("controlplane/production/eu-west-1", "success"),
        ("controlplane/production/us-east-1", "success"),
    ]
    success = [b for _, p, b in fake.accepted if p.endswith("/statuses") and b["state"] == "success"][0]
    assert success["environment_url"] == "https://shop.example.com"
    assert success["log_url"] == f"{django_settings.SITE_URL}/deployments/{first.pk}/"
    assert success["description"] == "Succeeded: 2 succeeded"

    second = new_deployment(app, SHA_2)
    run(second, {"us-east-1": "succeeded", "eu-west-1": "succeeded"})
    assert fake.problems == []
    assert fake.states("deployment")[3:] == ["queued", "in_progress", "success", "inactive"]
    first_id, second_id = sorted(fake.github_deployments)
    inactive = [p for _, p, b in fake.accepted if p.endswith("/statuses") and b.get("state") == "inactive"]
    assert inactive == [f"/repos/acme/shop/deployments/{first_id}/statuses"]  # the one it replaced
    assert set(GitHostPost.objects.values_list("status", flat=True)) == {GitHostPostStatus.SENT}
    # The engine may report a transition twice (a resumed job): it is posted once.
    scm_status.deployment_changed(second.pk, "finished")
    assert not GitHostPost.objects.filter(status="pending").exists()


def test_a_rollback_by_policy_is_a_failure_on_github_with_the_region_reasons(db, team, fake):
    app = make_app(team, fake)
    d = new_deployment(app, SHA_1)
    run(d, {"us-east-1": "rolled_back", "eu-west-1": "failed"}, error="Health check failed after 5 tries")
    assert fake.problems == []
    assert fake.states("deployment") == ["queued", "in_progress", "failure"]
    finals = {b["context"]: (b["state"], b["description"]) for _, p, b in fake.accepted if b.get("context")}
    assert finals["controlplane/production/us-east-1"] == (
        "failure",
        "Rolled back in us-east-1: Health check failed after 5 tries",
    )
    assert finals["controlplane/production/eu-west-1"][0] == "failure"


def test_a_host_error_is_retried_with_an_attempt_log_and_never_reaches_the_deployment(
    db, team, fake, settings_fast
):
    app = make_app(team, fake)
    d = new_deployment(app, SHA_1)
    scm_status.deployment_changed(d.pk, "queued")
    fake.fail_next = [502]
    delay = post_pending(d.pk)
    assert delay == 0.01
    row = GitHostPost.objects.get(deployment=d, key="deployment:queued")
    assert (row.status, row.attempts, row.response_code) == ("pending", 1, 502)
    # Once due, the worker's retry posts it, then the rest in order.
    wait_for(lambda: post_pending(d.pk) is None, timeout=5, message="the retry")
    row.refresh_from_db()
    assert row.status == "sent"
    assert [(a.number, a.status, a.response_code) for a in row.attempt_log.all()] == [
        (1, "pending", 502), (2, "sent", 201),
    ]  # fmt: skip
    assert fake.states("deployment") == ["queued"] and len(fake.states("commit")) == 2

    fake.fail_next = [503, 503, 503]
    scm_status.deployment_changed(d.pk, "in_progress")
    wait_for(lambda: post_pending(d.pk) is None, timeout=5, message="the retries")
    row = GitHostPost.objects.get(deployment=d, key="deployment:in_progress")
    assert row.status == "failed" and row.error.startswith("Gave up after 3 attempts: HTTP 503")
    d.refresh_from_db()
    assert d.status == DeploymentStatus.QUEUED and d.error == ""  # the deployment never hears of it


def test_a_refused_credential_disables_the_connection_and_says_why(db, team, fake):
    app = make_app(team, fake, credential="ghp_revoked")
    d = new_deployment(app, SHA_1)
    scm_status.deployment_changed(d.pk, "queued")
    assert post_pending(d.pk) is None
    conn = GitHostConnection.objects.get(app=app)
    assert not conn.enabled and "HTTP 401" in conn.disabled_reason
    rows = list(GitHostPost.objects.filter(deployment=d).order_by("pk"))
    assert rows[0].status == "failed" and rows[0].response_code == 401
    assert {r.status for r in rows[1:]} == {"failed"}
    assert all("connection disabled" in r.error for r in rows[1:])
    assert len(fake.accepted) == 0
    # Nothing more is recorded while it is off.
    scm_status.deployment_changed(d.pk, "in_progress")
    assert not GitHostPost.objects.filter(key="deployment:in_progress").exists()


def test_gitlab_gets_commit_statuses_and_the_environments_deployment(db, team, fake):
    app = make_app(team, fake, repo="https://gitlab.example.com/acme/shop.git", provider="gitlab")
    first = new_deployment(app, SHA_1)
    run(first, {"us-east-1": "succeeded", "eu-west-1": "failed"}, error="AccessDenied")
    second = new_deployment(app, SHA_2)
    run(second, {"us-east-1": "succeeded", "eu-west-1": "succeeded"})
    assert fake.problems == []
    project = "/api/v4/projects/acme/shop"  # (decoded; the fake checks it came URL-encoded)
    calls = [(m, p.removeprefix(project), b.get("status") or b.get("state")) for m, p, b in fake.accepted]
    d1 = next(p.rsplit("/", 1)[-1] for m, p, s in calls if m == "PUT")
    assert calls[:8] == [
        ("POST", "/deployments", "created"),
        ("POST", f"/statuses/{SHA_1}", "pending"),
        ("POST", f"/statuses/{SHA_1}", "pending"),
        ("PUT", f"/deployments/{d1}", "running"),
        ("POST", f"/statuses/{SHA_1}", "failed"),
        ("POST", f"/statuses/{SHA_1}", "success"),
        ("PUT", f"/deployments/{d1}", "failed"),
        ("POST", "/deployments", "created"),
    ]
    names = [b["name"] for m, p, b in fake.accepted if "/statuses/" in p]
    assert names[:2] == ["controlplane/production/eu-west-1", "controlplane/production/us-east-1"]
    assert all(b["ref"] == "main" for m, p, b in fake.accepted if "/statuses/" in p)
    # GitLab marks the replaced deployment itself: that row is skipped, not failed.
    assert GitHostPost.objects.filter(status="failed").count() == 0


def test_a_github_app_installation_posts_with_its_installation_token(db, team, fake, app_key):
    pem = app_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    fake.github_token = ""  # only the installation's token is accepted
    app = make_app(team, fake, credential=pem, github_app_id="12345", installation_id="678")
    d = new_deployment(app, SHA_1)
    run(d, {"us-east-1": "succeeded", "eu-west-1": "succeeded"})
    assert fake.problems == []
    assert fake.states("deployment") == ["queued", "in_progress", "success"]
    assert GitHostPost.objects.exclude(status="sent").count() == 0


def test_a_private_api_address_is_refused_when_private_urls_are_not_allowed(db, team, fake, settings):
    settings.ALLOW_PRIVATE_URLS = False
    app = make_app(team, fake)
    d = new_deployment(app, SHA_1)
    scm_status.deployment_changed(d.pk, "queued")
    post_pending(d.pk)
    row = GitHostPost.objects.get(deployment=d, key="deployment:queued")
    assert row.status == "failed" and "loopback" in row.error
    assert fake.accepted == [] and fake.problems == []


def test_lost_tasks_are_sent_again_by_the_sweeper(
    db, team, fake, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(scm_status.current_app, "send_task", lambda name, args: sent.append((name, args)))
    app = make_app(team, fake)
    d = new_deployment(app, SHA_1)
    scm_status.deployment_changed(d.pk, "queued")
    GitHostPost.objects.update(created_at=timezone.now() - timezone.timedelta(minutes=5))
    with django_capture_on_commit_callbacks(execute=True):
        assert requeue_stale() == 1
    assert sent == [("workers.post_git_host_updates", [d.pk])]
    assert RegionStatus.QUEUED in d.regions.values_list("status", flat=True)


def test_admins_connect_an_app_to_its_git_host_and_the_credential_never_comes_back(api_for, team, other_team):
    from controlplane.choices import Role
    from controlplane.models import AuditEntry

    AppFactory(team=team, slug="shop", repo_url="https://github.com/acme/shop")
    admin = api_for(team, role=Role.ADMIN)
    path = "/api/v1/apps/shop/git-host/"
    assert admin.get(path).status_code == 404
    missing = admin.put(path, {"provider": "github"}, format="json")
    assert missing.status_code == 400 and "credential" in missing.json()["fields"]
    put = admin.put(path, {"provider": "github", "credential": "ghp_secret_value"}, format="json")
    assert put.status_code == 200, put.json()
    assert put.json()["credential_set"] is True and "ghp_secret_value" not in put.content.decode()
    assert GitHostConnection.objects.get().credential == "ghp_secret_value"

    GitHostConnection.objects.update(enabled=False, disabled_reason="HTTP 401")
    again = admin.put(path, {"enabled": True}, format="json")  # the stored credential is kept
    assert (again.json()["enabled"], again.json()["disabled_reason"]) == (True, "")
    assert "ghp_secret_value" not in str(list(AuditEntry.objects.values_list("changes", flat=True)))

    viewer = api_for(team, role=Role.VIEWER)
    assert viewer.get(path).json()["provider"] == "github"
    assert viewer.put(path, {"enabled": False}, format="json").status_code == 403
    assert api_for(other_team, role=Role.ADMIN).get(path).status_code == 404
    half_app = admin.put(path, {"github_app_id": "12"}, format="json")
    assert half_app.status_code == 400
    assert admin.delete(path).status_code == 204 and not GitHostConnection.objects.exists()
