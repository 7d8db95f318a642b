"""The compare link of a release diff: GitHub and GitLab (also self-hosted), never credentials."""

from __future__ import annotations

import pytest

from controlplane.choices import Role
from deployments.services.releases import compare_url
from tests.deployments.test_releases_config_promote import app, artifact, ship

__all__ = ["app"]  # the fixture

pytestmark = pytest.mark.django_db

BASE, HEAD = "a" * 40, "b" * 40


def diff_of(api, app, repo_url):
    app.repo_url = repo_url
    app.save()
    older = ship(app, "production", art=artifact(app, 1))
    newer = ship(app, "production", art=artifact(app, 2))
    answer = api.get(f"/api/v1/releases/{newer.pk}/diff/?against={older.pk}")
    assert answer.status_code == 200, answer.json()
    return answer, older, newer


def test_the_diff_links_to_self_hosted_gitlab_without_the_token_in_the_repo_url(app, team, api_for):
    answer, older, newer = diff_of(
        api_for(team, role=Role.VIEWER),
        app,
        "https://deploy:glpat-S3CRET@gitlab.corp.example/group/sub/shop.git",
    )

    link = answer.json()["commits"]["compare_url"]
    assert link == (
        f"https://gitlab.corp.example/group/sub/shop/-/compare/{older.commit_sha}...{newer.commit_sha}"
    )
    assert "S3CRET" not in answer.content.decode() and "deploy" not in link


def test_a_host_listed_in_gitlab_hosts_gets_gitlab_links(app, team, api_for, settings):
    settings.GITLAB_HOSTS = ["code.acme.internal"]
    answer, older, newer = diff_of(
        api_for(team, role=Role.VIEWER), app, "git@code.acme.internal:platform/shop.git"
    )
    assert answer.json()["commits"]["compare_url"] == (
        f"https://code.acme.internal/platform/shop/-/compare/{older.commit_sha}...{newer.commit_sha}"
    )


@pytest.mark.parametrize(
    ("repo_url", "link"),
    [
        ("https://github.com/acme/shop.git", f"https://github.com/acme/shop/compare/{BASE}...{HEAD}"),
        (
            "https://x-access-token:ghp_SECRET@github.com/acme/shop.git",
            f"https://github.com/acme/shop/compare/{BASE}...{HEAD}",
        ),
        ("git@github.com:acme/shop.git", f"https://github.com/acme/shop/compare/{BASE}...{HEAD}"),
        (
            "ssh://git@gitlab.com:2222/group/shop.git",
            f"https://gitlab.com/group/shop/-/compare/{BASE}...{HEAD}",
        ),
        (
            "https://oauth2:tok@gitlab.example.com:8443/g/sub/shop",
            f"https://gitlab.example.com:8443/g/sub/shop/-/compare/{BASE}...{HEAD}",
        ),
        ("https://git.corp.example/group/shop.git", ""),  # not known as GitLab
        ("https://github.com/acme", ""),  # no repository in the path
        ("https://github.com/acme/shop/extra", ""),  # not an owner/repo path
        ("file:///srv/git/shop.git", ""),
        ("https://[broken/acme/shop", ""),
        ("", ""),
    ],
)
def test_compare_links(repo_url, link):
    assert compare_url(repo_url, BASE, HEAD) == link


def test_no_link_without_two_commit_shas():
    assert compare_url("https://github.com/acme/shop", "", HEAD) == ""
    assert compare_url("https://github.com/acme/shop", "main", "../../evil") == ""
