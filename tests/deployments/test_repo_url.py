"""An app's repo_url names a repository builds may fetch: https://, ssh:// or scp-like user@host:path;
never a git transport helper (ext::), an option, the server's own disk or a private address. Checked
on save by the API, the web UI and the Django admin, and again by every build."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import RequestFactory, override_settings

from controlplane.choices import Role
from deployments import builds
from deployments.gitutil import repo_url_problem
from deployments.models import App
from tests.factories import AppFactory, RegionFactory, UserFactory

pytestmark = pytest.mark.django_db

STRICT = override_settings(ALLOW_FILE_REPOS=False, ALLOW_HTTP_URLS=False, ALLOW_PRIVATE_URLS=False)

REFUSED = {
    "ext transport helper": "ext::sh -c touch% /tmp/pwned",
    "fd transport helper": "fd::3",
    "upload-pack option": "--upload-pack=touch /tmp/pwned",
    "leading dash": "-oProxyCommand=touch /tmp/pwned",
    "file url": "file:///etc",
    "local path": "/srv/git/shop.git",
    "relative path": "../shop.git",
    "plain http": "http://github.com/acme/shop.git",
    "git protocol": "git://github.com/acme/shop.git",
    "ssh host read as an option": "ssh://-oProxyCommand=touch/acme/shop.git",
    "ssh user read as an option": "ssh://-oProxyCommand=x@github.com/acme/shop.git",
    "metadata address": "https://169.254.169.254/latest/meta-data.git",
    "loopback address": "https://127.0.0.1/acme/shop.git",
    "private address over ssh": "git@10.0.0.7:acme/shop.git",
    "scp-like without a user": "github.com:acme/shop.git",
    "control character": "https://github.com/acme/\x01shop.git",
}
ACCEPTED = [
    "https://github.com/acme/shop.git",
    "https://gitlab.example.com:8443/group/sub/shop",
    "ssh://git@github.com/acme/shop.git",
    "ssh://git@git.example.com:2222/acme/shop.git",
    "git@github.com:acme/shop.git",
    "deploy@git.example.com:acme/shop.git",
    "",
]


@pytest.fixture
def admin_api(api_for, team):
    return api_for(team, role=Role.ADMIN)


def _create(client, url):
    RegionFactory(code="us-east-1")
    return client.post(
        "/api/v1/apps/",
        {
            "slug": "shop",
            "runtime": "python3.12",
            "handler": "app.handler",
            "repo_url": url,
            "regions": ["us-east-1"],
        },
        format="json",
    )


@STRICT
@pytest.mark.parametrize("url", REFUSED.values(), ids=REFUSED.keys())
def test_the_api_refuses_a_repo_url_builds_may_not_fetch(admin_api, url):
    response = _create(admin_api, url)

    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid_repo_url"
    assert body["fields"]["repo_url"] and body["detail"].startswith("repo_url: ")
    assert not App.objects.exists()


@STRICT
@pytest.mark.parametrize("url", ACCEPTED)
def test_the_api_accepts_https_ssh_and_scp_like_urls(admin_api, url):
    response = _create(admin_api, url)
    assert response.status_code == 201, response.json()
    assert App.objects.get(slug="shop").repo_url == url


@STRICT
def test_a_patch_to_a_bad_repo_url_is_refused_and_the_old_one_kept(admin_api, team):
    app = AppFactory(team=team, slug="shop", repo_url="https://github.com/acme/shop.git")

    response = admin_api.patch("/api/v1/apps/shop/", {"repo_url": "ext::sh -c id"}, format="json")

    assert response.status_code == 400 and response.json()["code"] == "invalid_repo_url"
    assert "transport helper" in response.json()["detail"]
    app.refresh_from_db()
    assert app.repo_url == "https://github.com/acme/shop.git"


def test_metadata_addresses_are_refused_even_where_private_ones_are_allowed():
    with override_settings(ALLOW_PRIVATE_URLS=True):
        assert repo_url_problem("https://10.0.0.7/acme/shop.git") is None
        assert "metadata" in repo_url_problem("https://169.254.169.254/acme/shop.git")
        assert "metadata" in repo_url_problem("git@[fd00:ec2::254]:acme/shop.git")


def test_http_and_local_repositories_follow_the_installations_settings():
    with override_settings(ALLOW_HTTP_URLS=True, ALLOW_FILE_REPOS=True, ALLOW_PRIVATE_URLS=True):
        assert repo_url_problem("http://127.0.0.1:8080/shop.git") is None
        assert repo_url_problem("file:///srv/git/shop.git") is None
        assert repo_url_problem("/srv/git/shop.git") is None
        # Never, whatever the settings: these run commands or read as options.
        assert repo_url_problem("ext::sh -c id") is not None
        assert repo_url_problem("--upload-pack=id") is not None
        assert repo_url_problem("git://github.com/acme/shop.git") is not None


@STRICT
def test_the_ui_form_shows_the_refusal_on_the_field(browser_for, team):
    RegionFactory(code="us-east-1")
    response = browser_for(team, Role.ADMIN).post(
        "/apps/new/",
        {
            "team": team.slug, "slug": "shop", "runtime": "python3.12", "handler": "app.handler",
            "memory_mb": 256, "timeout_s": 10, "health_path": "/health", "regions": ["us-east-1"],
            "repo_url": "file:///etc",
        },
    )  # fmt: skip

    assert response.status_code == 200
    assert "file:// URLs read the server&#x27;s own disk" in response.content.decode()
    assert not App.objects.exists()


@STRICT
def test_the_django_admin_refuses_a_bad_repo_url(team):
    app = AppFactory(team=team, slug="shop", repo_url="https://github.com/acme/shop.git")
    request = RequestFactory().post("/")
    request.user = UserFactory(is_staff=True, is_superuser=True)
    model_admin = admin.site._registry[App]
    form_class = model_admin.get_form(request, app)
    initial = form_class(instance=app).initial
    data = {
        k: v for k, v in initial.items() if v is not None and k not in ("webhook_secret", "git_credential")
    }
    data.update(team=team.pk, repo_url="ext::sh -c id")

    form = form_class(data=data, instance=app)

    assert not form.is_valid()
    assert "transport helper" in form.errors["repo_url"][0]
    app.refresh_from_db()
    assert app.repo_url == "https://github.com/acme/shop.git"


@STRICT
def test_a_build_refuses_a_bad_repo_url_stored_before_the_rule(team, tmp_path):
    marker = tmp_path / "pwned"
    app = AppFactory(team=team, slug="shop")
    App.objects.filter(pk=app.pk).update(repo_url=f"ext::sh -c touch% {marker}")
    app.refresh_from_db()
    lines = []

    with pytest.raises(builds.BuildFailed, match="repo_url is refused.*transport helper"):
        builds.build_artifact(app=app, sha="a" * 40, emit=lambda level, line: lines.append(line))
    assert not marker.exists()


@STRICT
def test_git_may_use_only_the_transports_repo_url_may_name():
    assert builds.git_protocols() == "https:ssh"
    with override_settings(ALLOW_HTTP_URLS=True, ALLOW_FILE_REPOS=True):
        assert builds.git_protocols() == "https:ssh:http:file"
