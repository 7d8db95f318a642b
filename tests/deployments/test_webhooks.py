"""Git-push webhooks from GitHub and GitLab: verified, deduplicated, mapped to stages, never a 500."""

from __future__ import annotations

import json
import threading
import uuid
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client

from controlplane.choices import Role
from deployments.choices import DeploymentStatus
from deployments.models import Deployment, WebhookDelivery
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.gitrepo import (
    ZERO_SHA,
    GitRepo,
    body_of,
    github_headers,
    github_ping,
    github_push,
    gitlab_headers,
    gitlab_push,
)

pytestmark = pytest.mark.django_db

GITHUB = "/api/v1/hooks/github/"
GITLAB = "/api/v1/hooks/gitlab/"
HANDLER = "def handler(event, context):\n    return {'statusCode': 200}\n"


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "git")


@pytest.fixture
def app(team, repo):
    app = AppFactory(team=team, slug="shop", repo_url=repo.url)
    AppRegionFactory(app=app, region=RegionFactory(code="us-east-1"))
    StageFactory(app=app, name="production", branch="main")
    StageFactory(app=app, name="staging", branch="develop")
    return app


@pytest.fixture
def commits(repo):
    first = repo.commit({"app.py": HANDLER}, "First commit")
    second = repo.commit({"app.py": HANDLER + "# faster\n"}, "Make checkout faster\n\nLonger body.")
    return first, second


def post_github(payload: dict, secret: str, *, event: str = "push", delivery: str | None = None, **headers):
    body = body_of(payload)
    all_headers = {**github_headers(secret, body, event=event, delivery=delivery), **headers}
    return Client().post(GITHUB, data=body, content_type="application/json", headers=all_headers)


def post_gitlab(payload: dict, token: str, *, event: str = "Push Hook", uuid_: str | None = None):
    return Client().post(
        GITLAB, data=body_of(payload), content_type="application/json",
        headers=gitlab_headers(token, event=event, uuid_=uuid_),
    )  # fmt: skip


# --- GitHub: the happy path ---------------------------------------------------------------------


def test_a_signed_push_creates_one_deployment_with_the_commit_metadata(app, repo, commits, api_for, team):
    first, second = commits
    payload = github_push(repo, after=second, before=first, commits=[second])

    response = post_github(payload, app.webhook_secret)

    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["code"] == "accepted" and body["outcome"] == "accepted"
    [item] = body["deployments"]
    assert item["app"] == "shop" and item["stage"] == "production" and item["outcome"] == "queued"
    deployment = Deployment.objects.get()
    assert item["deployment"] == deployment.pk and item["url"].endswith(
        f"/api/v1/deployments/{deployment.pk}/"
    )
    assert deployment.stage.name == "production" and deployment.status == DeploymentStatus.QUEUED
    assert deployment.ref == second and deployment.triggered_by == "webhook:github"

    shown = api_for(team, role=Role.VIEWER).get(f"/api/v1/deployments/{deployment.pk}/").json()
    assert shown["commit"]["sha"] == second
    assert shown["commit"]["branch"] == "main"
    assert shown["commit"]["message"] == "Make checkout faster\n\nLonger body."
    assert shown["commit"]["author"] == "Ada Lovelace"
    assert shown["commit"]["url"] == f"{repo.html_url}/commit/{second}"
    assert shown["commit"]["count"] == 1
    assert shown["commit"]["compare_url"] == payload["compare"]

    delivery = WebhookDelivery.objects.get()
    assert delivery.provider == "github" and delivery.outcome == "accepted" and delivery.app == app
    assert list(delivery.deployments.all()) == [deployment]


def test_githubs_form_encoded_content_type_works_too(app, repo, commits):
    body = urlencode({"payload": json.dumps(github_push(repo, after=commits[1]))}).encode()
    response = Client().post(
        GITHUB, data=body, content_type="application/x-www-form-urlencoded",
        headers=github_headers(app.webhook_secret, body),
    )  # fmt: skip
    assert response.status_code == 202 and response.json()["code"] == "accepted"
    assert Deployment.objects.get().commit_sha == commits[1]


def test_a_push_to_a_branch_two_stages_follow_deploys_both(app, repo, commits):
    StageFactory(app=app, name="preview", branch="develop")
    sha = repo.commit({"app.py": HANDLER + "# dev\n"}, "Dev work", branch="develop")

    response = post_github(github_push(repo, after=sha, ref="refs/heads/develop"), app.webhook_secret)

    assert response.status_code == 202
    assert sorted(d["stage"] for d in response.json()["deployments"]) == ["preview", "staging"]
    assert set(Deployment.objects.values_list("stage__name", "commit_branch")) == {
        ("preview", "develop"),
        ("staging", "develop"),
    }


def test_a_branch_glob_follows_matching_branches(app, repo, commits):
    StageFactory(app=app, name="release", branch="release/*")
    sha = repo.commit({"app.py": HANDLER + "# rc\n"}, "RC", branch="release/2.0")

    response = post_github(github_push(repo, after=sha, ref="refs/heads/release/2.0"), app.webhook_secret)

    assert response.status_code == 202
    assert Deployment.objects.get().stage.name == "release"


@pytest.mark.parametrize(
    "repo_url",
    [
        "git@github.com:Acme/Shop.git",
        "https://github.com/acme/shop",
        "https://github.com/acme/shop.git/",
        "ssh://git@github.com:22/acme/shop.git",
    ],
)
def test_the_repository_matches_in_clone_ssh_and_web_forms(app, repo, commits, repo_url):
    app.repo_url = repo_url
    app.save()
    response = post_github(github_push(repo, after=commits[1]), app.webhook_secret)
    assert response.status_code == 202 and response.json()["code"] == "accepted"
    assert Deployment.objects.count() == 1


def test_only_the_app_whose_secret_signed_the_push_deploys(app, repo, commits, other_team):
    twin = AppFactory(team=other_team, slug="shop", repo_url=repo.url)
    AppRegionFactory(app=twin, region=RegionFactory(code="us-east-1"))
    StageFactory(app=twin, name="production", branch="main")

    response = post_github(github_push(repo, after=commits[1]), twin.webhook_secret)

    assert response.status_code == 202
    assert [d["team"] for d in response.json()["deployments"]] == ["globex"]
    assert Deployment.objects.get().app == twin


def test_pushes_in_quick_succession_leave_the_newest(app, repo, commits):
    first, second = commits
    post_github(github_push(repo, after=first), app.webhook_secret)
    post_github(github_push(repo, after=second, before=first), app.webhook_secret)

    older, newer = Deployment.objects.order_by("pk")
    assert older.commit_sha == first and older.status == DeploymentStatus.SUPERSEDED
    assert newer.commit_sha == second and newer.status == DeploymentStatus.QUEUED


def test_a_push_to_a_pinned_stage_is_recorded_and_nothing_starts(app, repo, commits):
    app.stages.filter(name="production").update(pinned=True, pinned_reason="rolled back after incident 42")

    response = post_github(github_push(repo, after=commits[1]), app.webhook_secret)

    assert response.status_code == 202
    body = response.json()
    assert body["code"] == "pinned" and body["deployments"][0]["outcome"] == "pinned"
    deployment = Deployment.objects.get()
    assert deployment.status == DeploymentStatus.CANCELLED and deployment.commit_sha == commits[1]
    assert all(r.status == "cancelled" for r in deployment.regions.all())
    assert "incident 42" in deployment.events.get().message
    assert WebhookDelivery.objects.get().outcome == "pinned"


def test_a_ping_with_a_good_signature_answers_200(app, repo):
    response = post_github(github_ping(repo), app.webhook_secret, event="ping")
    assert response.status_code == 200
    assert response.json()["code"] == "pong" and "shop" in response.json()["detail"]
    assert not Deployment.objects.exists()


def test_a_ping_with_a_wrong_signature_is_401(app, repo):
    response = post_github(github_ping(repo), "not-the-secret", event="ping")
    assert response.status_code == 401


def test_other_github_events_are_ignored(app, repo, commits):
    payload = {
        "action": "opened",
        "issue": {"number": 1},
        "repository": github_push(repo, after=commits[0])["repository"],
    }
    response = post_github(payload, app.webhook_secret, event="issues")
    assert response.status_code == 202
    assert response.json()["code"] == "ignored" and "issues" in response.json()["detail"]
    assert not Deployment.objects.exists()


# --- GitHub: bad input ----------------------------------------------------------------------------


def _assert_nothing_written():
    assert not Deployment.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_a_wrong_signature_is_401_with_a_generic_detail_and_writes_nothing(app, repo, commits):
    payload = github_push(repo, after=commits[1])
    wrong_secret = post_github(payload, "guessed-secret")
    # Signed by the right secret, but over other bytes than the ones sent.
    forged = Client().post(
        GITHUB,
        data=body_of(payload) + b" ",
        content_type="application/json",
        headers=github_headers(app.webhook_secret, body_of(payload)),
    )
    missing = Client().post(
        GITHUB, data=body_of(payload), content_type="application/json", headers={"X-GitHub-Event": "push"}
    )
    garbage = post_github(payload, app.webhook_secret, **{"X-Hub-Signature-256": "sha256=zz\u00e9"})

    for response in (wrong_secret, forged, missing, garbage):
        assert response.status_code == 401
        assert response.json() == {
            "code": "invalid_signature",
            "detail": "The delivery could not be verified.",
            "fields": {},
        }
    _assert_nothing_written()


def test_a_replayed_delivery_is_a_duplicate_and_creates_nothing(app, repo, commits):
    payload = github_push(repo, after=commits[1])
    delivery = str(uuid.uuid4())
    first = post_github(payload, app.webhook_secret, delivery=delivery)
    again = post_github(payload, app.webhook_secret, delivery=delivery)

    assert first.status_code == 202 and first.json()["code"] == "accepted"
    assert again.status_code == 202 and again.json()["code"] == "duplicate"
    assert Deployment.objects.count() == 1 and WebhookDelivery.objects.count() == 1


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00garbage", b"[1, 2, 3]", b'"a string"', b""])
def test_malformed_json_is_400(app, body):
    response = Client().post(
        GITHUB, data=body, content_type="application/json", headers=github_headers(app.webhook_secret, body)
    )
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_payload"
    _assert_nothing_written()


def test_a_body_over_5_mb_is_413(app, settings):
    body = b'{"pad": "' + b"x" * settings.WEBHOOK_MAX_BODY + b'"}'
    response = Client().post(
        GITHUB, data=body, content_type="application/json", headers=github_headers(app.webhook_secret, body)
    )
    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    _assert_nothing_written()


def test_a_push_from_an_unknown_repository_is_ignored(app, tmp_path, commits):
    elsewhere = GitRepo(tmp_path / "other", name="blog")
    sha = elsewhere.commit({"index.html": "<h1>hi</h1>"}, "Post")
    response = post_github(github_push(elsewhere, after=sha), app.webhook_secret)
    assert response.status_code == 202
    assert response.json()["code"] == "ignored"
    assert response.json()["detail"] == "No app is connected to this repository."
    _assert_nothing_written()


def test_a_push_to_an_unmapped_branch_is_ignored_with_the_reason(app, repo, commits):
    sha = repo.commit({"wip.txt": "x"}, "WIP", branch="feature/login")
    response = post_github(github_push(repo, after=sha, ref="refs/heads/feature/login"), app.webhook_secret)

    assert response.status_code == 202
    assert response.json()["code"] == "ignored"
    assert "feature/login" in response.json()["detail"]
    assert not Deployment.objects.exists()
    assert WebhookDelivery.objects.get().outcome == "ignored"


def test_a_tag_push_is_ignored_unless_a_stage_follows_tags(app, repo, commits):
    repo.tag("v1.0.0", commits[1])
    payload = github_push(repo, after=commits[1], ref="refs/tags/v1.0.0")

    ignored = post_github(payload, app.webhook_secret)
    assert ignored.status_code == 202 and ignored.json()["code"] == "ignored"
    assert "refs/tags/" in ignored.json()["detail"]
    assert not Deployment.objects.exists()

    StageFactory(app=app, name="release", branch="refs/tags/v*")
    deployed = post_github(payload, app.webhook_secret)
    assert deployed.status_code == 202 and deployed.json()["code"] == "accepted"
    deployment = Deployment.objects.get()
    assert deployment.stage.name == "release" and deployment.commit_branch == "v1.0.0"


def test_a_branch_deletion_is_ignored(app, repo, commits):
    payload = github_push(repo, after=ZERO_SHA, before=commits[1], deleted=True)
    response = post_github(payload, app.webhook_secret)
    assert response.status_code == 202
    assert response.json()["code"] == "ignored" and "deleted" in response.json()["detail"]
    assert not Deployment.objects.exists()


@pytest.mark.parametrize(
    "change",
    [
        {"ref": None},
        {"ref": 42},
        {"after": "not-a-sha"},
        {"after": None},
        {"head_commit": "text", "commits": "text"},
        {"head_commit": {"author": "text", "message": ["x"]}, "commits": None},
    ],
)
def test_a_verified_push_with_odd_fields_never_causes_a_500(app, repo, commits, change):
    payload = {**github_push(repo, after=commits[1]), **change}
    response = post_github(payload, app.webhook_secret)
    assert response.status_code in (202, 400), response.content
    if response.status_code == 400:
        assert response.json()["code"] == "malformed_payload"
        _assert_nothing_written()


def test_a_verified_push_for_an_app_without_regions_is_ignored_with_the_reason(app, repo, commits):
    app.placements.all().delete()
    response = post_github(github_push(repo, after=commits[1]), app.webhook_secret)
    assert response.status_code == 202
    body = response.json()
    assert body["code"] == "ignored" and "no enabled regions" in body["detail"]
    assert body["deployments"][0]["outcome"] == "failed" and body["deployments"][0]["code"] == "no_regions"


def test_get_is_not_allowed(app):
    response = Client().get(GITHUB)
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"


# --- GitLab -------------------------------------------------------------------------------------------


def test_a_gitlab_push_with_the_token_deploys_with_the_commit_metadata(app, repo, commits):
    first, second = commits
    payload = gitlab_push(repo, after=second, before=first, commits=[first, second])

    response = post_gitlab(payload, app.webhook_secret)

    assert response.status_code == 202, response.json()
    assert response.json()["code"] == "accepted"
    deployment = Deployment.objects.get()
    assert deployment.triggered_by == "webhook:gitlab" and deployment.ref == second
    assert deployment.commit_message == "Make checkout faster\n\nLonger body."
    assert deployment.commit_author == "Ada Lovelace"
    assert deployment.commit_url == f"https://gitlab.example.com/acme/shop/-/commit/{second}"
    assert deployment.commit_count == 2
    assert deployment.compare_url == f"https://gitlab.example.com/acme/shop/-/compare/{first}...{second}"


def test_a_gitlab_push_with_a_wrong_or_missing_token_is_401(app, repo, commits):
    payload = gitlab_push(repo, after=commits[1])
    wrong = post_gitlab(payload, "not-the-token")
    missing = Client().post(
        GITLAB,
        data=body_of(payload),
        content_type="application/json",
        headers={"X-Gitlab-Event": "Push Hook"},
    )
    for response in (wrong, missing):
        assert response.status_code == 401
        assert response.json()["detail"] == "The delivery could not be verified."
    _assert_nothing_written()


def test_a_repeated_gitlab_event_uuid_is_a_duplicate(app, repo, commits):
    payload = gitlab_push(repo, after=commits[1])
    event_uuid = str(uuid.uuid4())
    assert post_gitlab(payload, app.webhook_secret, uuid_=event_uuid).json()["code"] == "accepted"
    again = post_gitlab(payload, app.webhook_secret, uuid_=event_uuid)
    assert again.status_code == 202 and again.json()["code"] == "duplicate"
    assert Deployment.objects.count() == 1


def test_a_gitlab_tag_push_is_ignored_unless_a_stage_follows_tags(app, repo, commits):
    repo.tag("v2", commits[1])
    response = post_gitlab(gitlab_push(repo, after=commits[1], ref="refs/tags/v2"), app.webhook_secret,
                           event="Tag Push Hook")  # fmt: skip
    assert response.status_code == 202 and response.json()["code"] == "ignored"
    assert not Deployment.objects.exists()


def test_a_gitlab_branch_deletion_is_ignored(app, repo, commits):
    payload = gitlab_push(repo, after=ZERO_SHA, before=commits[1])
    response = post_gitlab(payload, app.webhook_secret)
    assert response.status_code == 202 and "deleted" in response.json()["detail"]
    assert not Deployment.objects.exists()


def test_other_gitlab_events_are_ignored(app, repo, commits):
    response = post_gitlab(gitlab_push(repo, after=commits[1]), app.webhook_secret, event="Issue Hook")
    assert response.status_code == 202 and response.json()["code"] == "ignored"
    assert not Deployment.objects.exists()


# --- Concurrency ----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_twenty_identical_deliveries_at_once_create_exactly_one_deployment(team, repo, monkeypatch):
    # No worker here: a session worker started by other tests must not pick this deployment up.
    monkeypatch.setattr("deployments.engine.dispatch.start", lambda deployment_id: None)
    app = AppFactory(team=team, slug="shop", repo_url=repo.url)
    AppRegionFactory(app=app, region=RegionFactory(code="us-east-1"))
    StageFactory(app=app, name="production", branch="main")
    sha = repo.commit({"app.py": HANDLER}, "Ship")
    body = body_of(github_push(repo, after=sha))
    headers = github_headers(app.webhook_secret, body, delivery=str(uuid.uuid4()))

    start = threading.Barrier(20)
    answers: list[tuple[int, str]] = []
    errors: list[BaseException] = []

    def deliver():
        try:
            start.wait(timeout=30)
            response = Client().post(GITHUB, data=body, content_type="application/json", headers=headers)
            answers.append((response.status_code, response.json()["code"]))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)

    assert not errors, errors
    assert sorted(answers) == [(202, "accepted")] + [(202, "duplicate")] * 19
    assert Deployment.objects.count() == 1
    assert WebhookDelivery.objects.count() == 1


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("https://github.com/Acme/Shop.git", "github.com/acme/shop"),
        ("git@github.com:acme/shop.git", "github.com/acme/shop"),
        ("ssh://git@github.com:22/acme/shop.git", "github.com/acme/shop"),
        ("git://github.com/acme/shop.git", "github.com/acme/shop"),
        ("https://user:token@gitlab.example.com/group/sub/shop/", "gitlab.example.com/group/sub/shop"),
        ("file:///srv/git/shop.git", "/srv/git/shop"),
        ("/srv/git/shop.git", "/srv/git/shop"),
        ("  ", ""),
        ("https://[x", ""),
        ("ssh://git@[::1/acme/shop.git", ""),
        ("https://github.com/acme/\x00shop", ""),
        ("https://github.com/" + "a" * 5000, ""),
        (None, ""),
        (42, ""),
    ],
)
def test_repository_urls_compare_in_one_form(url, normalized):
    from deployments.gitutil import normalize_repo_url

    assert normalize_repo_url(url) == normalized


# --- Odd payloads, signed or not: never a 500 -------------------------------------------------------

HUGE = 300_000  # big, yet the whole body stays under WEBHOOK_MAX_BODY


def _set_repo_urls(payload: dict, value) -> None:
    for section in ("repository", "project"):
        if isinstance(payload.get(section), dict):
            for key in list(payload[section]):
                if "url" in key or key == "homepage":
                    payload[section][key] = value


def _first_commit(payload: dict) -> dict:
    return payload["commits"][0]


ODD_PAYLOADS = {
    "repository is a string": lambda p: p.update(repository="acme/shop", project="acme/shop"),
    "repository is a list": lambda p: p.update(repository=[1, 2], project=[{"url": "x"}]),
    "repository is null": lambda p: p.update(repository=None, project=None),
    "clone url is an unclosed ipv6 host": lambda p: _set_repo_urls(p, "https://[x"),
    "clone url is a bad ipv6 ssh url": lambda p: _set_repo_urls(p, "ssh://git@[::1/acme/shop.git"),
    "clone url has a bad port": lambda p: _set_repo_urls(p, "https://github.com:99999999/acme/shop"),
    "clone url is a number": lambda p: _set_repo_urls(p, 12345),
    "clone url is a dict": lambda p: _set_repo_urls(p, {"href": "https://github.com/acme/shop"}),
    "clone url is huge": lambda p: _set_repo_urls(p, "https://github.com/" + "a" * HUGE + "/shop.git"),
    "clone url holds a nul and a lone surrogate": lambda p: _set_repo_urls(p, "file:///srv/\x00\ud800/shop"),
    "ref is a list": lambda p: p.update(ref=["refs/heads/main"]),
    "ref is a dict": lambda p: p.update(ref={"name": "main"}),
    "ref is huge": lambda p: p.update(ref="refs/heads/" + "x" * HUGE),
    "ref holds a nul and a lone surrogate": lambda p: p.update(ref="refs/heads/ma\x00in\ud800"),
    "commits is a dict": lambda p: p.update(commits={"id": "x"}, head_commit=[1]),
    "commits is a string": lambda p: p.update(commits="many", head_commit=7),
    "commits holds numbers": lambda p: p.update(commits=[1, None, "x"]),
    "commit message is huge": lambda p: _first_commit(p).update(message="m" * HUGE),
    "commit fields hold nuls and lone surrogates": lambda p: _first_commit(p).update(
        message="fix\x00\ud800", url="https://example.com/\x00", author={"name": "\ud83d ada\x00"}
    ),
    "commit count is huge": lambda p: p.update(total_commits_count=10**30),
    "commit count is negative": lambda p: p.update(total_commits_count=-5),
    "before is huge": lambda p: p.update(before="b" * HUGE),
    "after is a number": lambda p: p.update(after=12345),
}


def _odd_payload(provider: str, repo: GitRepo, sha: str, change) -> dict:
    payload = github_push(repo, after=sha) if provider == "github" else gitlab_push(repo, after=sha)
    if provider == "github":
        payload["head_commit"] = payload["commits"][0]  # the same object, so a change reaches both
    change(payload)
    return payload


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "wrong-secret"])
@pytest.mark.parametrize("provider", ["github", "gitlab"])
@pytest.mark.parametrize("change", list(ODD_PAYLOADS.values()), ids=list(ODD_PAYLOADS))
def test_odd_payloads_answer_202_400_or_401_never_500(app, repo, commits, provider, signed, change):
    payload = _odd_payload(provider, repo, commits[1], change)
    secret = app.webhook_secret if signed else "guessed-secret"

    post = post_github if provider == "github" else post_gitlab
    response = post(payload, secret)

    assert response.status_code in (202, 400, 401), response.content[:500]
    body = response.json()
    assert body["code"] in {
        "accepted",
        "ignored",
        "pinned",
        "malformed_payload",
        "invalid_signature",
        "invalid_characters",
    }
    assert body["detail"]
    if response.status_code != 202 or not signed:
        assert not Deployment.objects.exists()
    for deployment in Deployment.objects.all():
        assert "\x00" not in deployment.commit_message + deployment.commit_branch + deployment.commit_url


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_a_push_naming_one_good_url_among_malformed_ones_still_deploys(app, repo, commits, provider):
    payload = _odd_payload(provider, repo, commits[1], lambda p: None)
    section = payload["repository"] if provider == "github" else payload["project"]
    section.update(html_url="https://[x", ssh_url="ssh://git@[::1/acme/shop.git", web_url="http://[")

    post = post_github if provider == "github" else post_gitlab
    response = post(payload, app.webhook_secret)

    assert response.status_code == 202, response.content[:500]
    assert response.json()["code"] == "accepted"
    assert Deployment.objects.get().commit_sha == commits[1]


@pytest.mark.parametrize("provider", ["github", "gitlab"])
def test_deeply_nested_json_is_400_not_500(app, provider):
    body = b'{"repository": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    if provider == "github":
        headers = github_headers(app.webhook_secret, body)
        response = Client().post(GITHUB, data=body, content_type="application/json", headers=headers)
    else:
        headers = gitlab_headers(app.webhook_secret)
        response = Client().post(GITLAB, data=body, content_type="application/json", headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_payload"
    _assert_nothing_written()


def test_an_app_whose_stored_repo_url_is_malformed_does_not_break_other_deliveries(app, repo, commits, team):
    AppFactory(team=team, slug="broken", repo_url="https://[shop")
    response = post_github(github_push(repo, after=commits[1]), app.webhook_secret)
    assert response.status_code == 202 and response.json()["code"] == "accepted"
