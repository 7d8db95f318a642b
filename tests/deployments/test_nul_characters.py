"""A NUL character in a webhook field or in any string of a JSON API body is a 400 naming the field:
never stripped (``refs/heads/ma\\0in`` once deployed ``main``) and never a 500 (PostgreSQL refuses
NUL in text and jsonb)."""

from __future__ import annotations

import pytest
from django.test import Client

from controlplane.choices import Role
from deployments.models import App, Deployment, WebhookDelivery
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.gitrepo import GitRepo, body_of, github_headers, github_push, gitlab_headers, gitlab_push

pytestmark = pytest.mark.django_db

HANDLER = "def handler(event, context):\n    return {'statusCode': 200}\n"


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    return GitRepo(tmp_path / "git")


@pytest.fixture
def app(team, repo):
    app = AppFactory(team=team, slug="shop", repo_url=repo.url)
    AppRegionFactory(app=app, region=RegionFactory(code="us-east-1"))
    StageFactory(app=app, name="production", branch="main")
    return app


@pytest.fixture
def sha(repo):
    return repo.commit({"app.py": HANDLER}, "First commit")


def post(provider: str, payload: dict, secret: str):
    body = body_of(payload)
    if provider == "github":
        headers = github_headers(secret, body, event="push", delivery=None)
        return Client().post(
            "/api/v1/hooks/github/", data=body, content_type="application/json", headers=headers
        )
    headers = gitlab_headers(secret, event="Push Hook", uuid_=None)
    return Client().post("/api/v1/hooks/gitlab/", data=body, content_type="application/json", headers=headers)


def _head(payload: dict) -> dict:
    return payload["commits"][-1]


FIELDS = {
    "ref": ("ref", lambda p: p.update(ref="refs/heads/ma\x00in")),
    "after": ("after", lambda p: p.update(after=p["after"][:20] + "\x00" + p["after"][21:])),
    "commit message": ("commits[0].message", lambda p: _head(p).update(message="Fix\x00 checkout")),
    "author name": ("commits[0].author.name", lambda p: _head(p)["author"].update(name="Ada\x00")),
    "a key": ("commits[0].x\\0", lambda p: _head(p).update({"x\x00": 1})),
}
REPOSITORY_NAME = {
    "github": ("repository.full_name", lambda p: p["repository"].update(full_name="acme/sh\x00op")),
    "gitlab": (
        "project.path_with_namespace",
        lambda p: p["project"].update(path_with_namespace="acme/sh\x00op"),
    ),
}
HEAD_SHA = {
    "github": ("head_commit.id", lambda p: p.update(head_commit={**p["head_commit"], "id": "ab\x00cd"})),
    "gitlab": ("checkout_sha", lambda p: p.update(checkout_sha="ab\x00cd")),
}


def _cases():
    for provider in ("github", "gitlab"):
        for name, (field, change) in FIELDS.items():
            yield pytest.param(provider, field, change, id=f"{provider}-{name}")
        for label, table in (("repository name", REPOSITORY_NAME), ("head sha", HEAD_SHA)):
            field, change = table[provider]
            yield pytest.param(provider, field, change, id=f"{provider}-{label}")


@pytest.mark.parametrize(("provider", "field", "change"), list(_cases()))
def test_a_nul_in_any_webhook_field_is_a_400_naming_it(app, repo, sha, provider, field, change):
    payload = github_push(repo, after=sha) if provider == "github" else gitlab_push(repo, after=sha)
    change(payload)

    response = post(provider, payload, app.webhook_secret)

    assert response.status_code == 400, response.content[:300]
    body = response.json()
    assert body["code"] == "invalid_characters"
    assert f"'{field}'" in body["detail"] and "NUL" in body["detail"]
    assert list(body["fields"]) == [field]
    assert not Deployment.objects.exists() and not WebhookDelivery.objects.exists()


def test_the_same_push_without_the_nul_deploys(app, repo, sha):
    response = post("github", github_push(repo, after=sha), app.webhook_secret)
    assert response.status_code == 202 and Deployment.objects.get().commit_branch == "main"


def test_an_unsigned_delivery_with_a_nul_is_still_a_401(app, repo, sha):
    payload = github_push(repo, after=sha, ref="refs/heads/ma\x00in")
    response = post("github", payload, "guessed-secret")
    assert response.status_code == 401


# --- The JSON API -------------------------------------------------------------------------------


@pytest.fixture
def admin_api(api_for, team):
    return api_for(team, role=Role.ADMIN)


def test_a_nul_in_a_string_field_of_an_api_body_is_a_400(admin_api):
    RegionFactory(code="us-east-1")
    response = admin_api.post(
        "/api/v1/apps/",
        {"slug": "shop", "name": "Sh\x00op", "runtime": "python3.12", "regions": ["us-east-1"]},
        format="json",
    )
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "invalid_characters" and "'name'" in response.json()["detail"]
    assert not App.objects.exists()


def test_a_nul_nested_in_a_json_object_of_an_api_body_is_a_400(admin_api, app):
    # ``commit`` is stored as given (jsonb on PostgreSQL, which refuses \u0000): it must never get there.
    response = admin_api.post(
        "/api/v1/apps/shop/deployments/",
        {"stage": "production", "ref": "a" * 40, "commit": {"sha": "a" * 40, "author": {"name": "Ada\x00"}}},
        format="json",
    )
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid_characters" and "'commit.author.name'" in body["detail"]
    assert not Deployment.objects.exists()


def test_a_nul_deep_in_a_list_of_an_api_body_is_a_400(admin_api, app):
    response = admin_api.patch(
        "/api/v1/apps/shop/stages/production/",
        {"rollout": {"waves": [["us-east-1\x00"]]}},
        format="json",
    )
    assert response.status_code == 400
    assert (
        response.json()["code"] == "invalid_characters" and "rollout.waves[0][0]" in response.json()["detail"]
    )
