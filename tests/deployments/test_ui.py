"""The team web UI: sign-in, team scoping, what each page shows, and the rollback/unpin forms."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.choices import Role
from deployments.choices import DeploymentKind, DeploymentStatus
from deployments.events import log_event
from deployments.models import Deployment, RegionDeployment, Stage
from regions.aws import lambda_
from regions.local.endpoints import region_url
from regions.models import Incident, Probe, StagePlacement
from tests.deployments.ui_support import SECRET, UI_REGIONS, html, ship
from tests.factories import (
    AppFactory,
    AppRegionFactory,
    MembershipFactory,
    RegionFactory,
    StageFactory,
    TeamFactory,
    UserFactory,
)

# --- Sign-in ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/apps/shop/", "/apps/shop/health/", "/deployments/1/"])
def test_anonymous_visitors_are_sent_to_the_login_page(client, app, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/login/?next={path}"


def test_a_member_signs_in_with_username_and_password_and_lands_on_their_apps(client, team, app):
    user = UserFactory(username="ada")
    MembershipFactory(team=team, user=user, role=Role.VIEWER)
    assert client.get("/login/").status_code == 200

    wrong = client.post("/login/", {"username": "ada", "password": "nope"})
    assert wrong.status_code == 200
    assert "do not match" in html(wrong)

    response = client.post("/login/", {"username": "ada", "password": "correct horse battery staple"})
    assert response.status_code == 302
    assert response["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert "shop" in html(home)


def test_sign_out_is_a_post_and_ends_the_session(browser_for, team, app):
    browser = browser_for(team, Role.VIEWER)
    response = browser.post("/logout/")
    assert response.status_code == 302
    assert browser.get("/").status_code == 302


# --- Scoping ------------------------------------------------------------------------------------


def test_home_lists_the_users_apps_with_stage_releases_and_health_counts(browser_for, team, app, foreign_app):
    deployment = ship(app)
    StagePlacement.objects.filter(placement__region__code="us-east-1").update(health_status="down")
    StagePlacement.objects.filter(placement__region__code="eu-west-1").update(health_status="up")
    page = html(browser_for(team, Role.VIEWER).get("/"))
    assert 'href="/apps/shop/"' in page
    assert "acme" in page
    for code in UI_REGIONS:
        assert code in page
    assert f"#{deployment.release.number}" in page
    assert "a1b2c3d" in page
    assert "1 up" in page and "1 down" in page and "0 unknown" in page
    assert "intranet" not in page  # another team's app


@pytest.mark.parametrize(
    "path",
    [
        "/apps/intranet/",
        "/apps/intranet/health/",
        "/apps/nonexistent/",
    ],
)
def test_another_teams_app_is_a_404(browser_for, team, app, foreign_app, path):
    response = browser_for(team).get(path)
    assert response.status_code == 404
    assert "No app" in html(response)  # the same answer as for an app that does not exist
    assert "globex" not in html(response)


def test_another_teams_deployment_is_a_404(browser_for, team, app, foreign_app):
    theirs = ship(foreign_app, message="Their secret roadmap")
    response = browser_for(team).get(f"/deployments/{theirs.pk}/")
    assert response.status_code == 404
    assert theirs.commit_message not in html(response)


def test_another_teams_stage_can_not_be_rolled_back_or_unpinned(browser_for, team, app, foreign_app):
    Stage.objects.filter(app=foreign_app).update(pinned=True, pinned_reason="theirs")
    browser = browser_for(team, Role.ADMIN)
    assert browser.post("/apps/intranet/stages/production/unpin/").status_code == 404
    assert browser.post("/apps/intranet/stages/production/rollback/").status_code == 404
    assert Stage.objects.get(app=foreign_app).pinned


def test_an_app_slug_in_two_of_the_users_teams_asks_which_team(browser_for, team, other_team, app):
    AppFactory(team=other_team, slug="shop", name="Globex shop")
    stranger = TeamFactory(slug="initech")
    AppFactory(team=stranger, slug="shop")
    browser = browser_for(team)
    MembershipFactory(team=other_team, user=browser.user, role=Role.VIEWER)

    response = browser.get("/apps/shop/")
    assert response.status_code == 404
    page = html(response)
    assert 'href="/apps/shop/?team=acme"' in page
    assert 'href="/apps/shop/?team=globex"' in page
    assert "initech" not in page  # not one of the user's teams

    chosen = browser.get("/apps/shop/?team=globex")
    assert chosen.status_code == 200
    assert "Globex shop" in html(chosen)
    assert browser.get("/apps/shop/?team=initech").status_code == 404
    home = html(browser.get("/"))
    assert 'href="/apps/shop/?team=acme"' in home and 'href="/apps/shop/?team=globex"' in home


# --- Pages --------------------------------------------------------------------------------------


def test_app_pages_show_stages_regions_deployments_and_env_keys(browser_for, team, app):
    deployment = ship(app, message="Add checkout\n\nLonger body.")
    response = browser_for(team, Role.VIEWER).get("/apps/shop/")
    assert response.status_code == 200
    page = html(response)
    assert "production" in page and "shop.example.com" in page
    for code in UI_REGIONS:
        assert code in page
    assert f'href="/deployments/{deployment.pk}/"' in page
    assert "Add checkout" in page and "push by Ada Lovelace (GitHub)" in page
    assert 'href="https://github.com/acme/shop/commit/a1b2c3d4e5f6a7b8"' in page
    env = html(browser_for(team, Role.VIEWER).get("/apps/shop/env/"))
    assert "GREETING" in env and "hello-plain" in env
    assert "DB_PASSWORD" in env


def test_secret_env_values_never_appear_in_any_page(browser_for, team, app):
    deployment = ship(app)
    browser = browser_for(team, Role.ADMIN)
    for path in [
        "/",
        "/apps/shop/",
        "/apps/shop/env/",
        "/apps/shop/health/",
        f"/deployments/{deployment.pk}/",
    ]:
        response = browser.get(path)
        assert response.status_code == 200
        assert SECRET not in html(response), path


def test_commit_text_is_escaped_and_only_web_links_are_linked(browser_for, team, app):
    deployment = ship(app, message="<script>alert('x')</script> fix")
    Deployment.objects.filter(pk=deployment.pk).update(commit_url="javascript:alert(1)")
    browser = browser_for(team)
    for path in ["/apps/shop/", f"/deployments/{deployment.pk}/"]:
        page = html(browser.get(path))
        assert "<script>alert(" not in page
        assert "&lt;script&gt;" in page
    assert "javascript:alert" not in html(browser.get(f"/deployments/{deployment.pk}/"))


def test_health_page_shows_state_probe_latency_and_incidents_with_durations(browser_for, team, app):
    ship(app)
    now = timezone.now()
    down = StagePlacement.objects.get(placement__region__code="us-east-1")
    StagePlacement.objects.filter(pk=down.pk).update(
        health_status="down", last_probe_at=now, last_latency_ms=812.4, consecutive_failures=3
    )
    StagePlacement.objects.filter(placement__region__code="eu-west-1").update(
        health_status="up", last_probe_at=now, last_latency_ms=23.0
    )
    Probe.objects.create(
        stage_placement=down, ok=False, status_code=502, latency_ms=812.4, error="status 502"
    )
    Probe.objects.create(
        stage_placement=StagePlacement.objects.get(placement__region__code="eu-west-1"), ok=True,
        status_code=200, latency_ms=23.0,
    )  # fmt: skip
    Incident.objects.create(stage_placement=down, opened_at=now - timedelta(minutes=5), reason="HTTP 502")
    Incident.objects.create(
        stage_placement=down,
        opened_at=now - timedelta(days=1, minutes=10),
        closed_at=now - timedelta(days=1),
        reason="timed out",
    )
    response = browser_for(team, Role.VIEWER).get("/apps/shop/health/")
    assert response.status_code == 200
    page = html(response)
    assert "status-down" in page and "status-up" in page
    assert "failed: status 502" in page and "812 ms" not in page  # a failure is not a latency
    assert "healthy, 23 ms" in page
    assert "HTTP 502" in page
    assert "Down for 5m" in page  # the open incident's duration so far
    response = browser_for(team, Role.VIEWER).get("/apps/shop/health/?window=week")
    assert "timed out" in html(response) and "after 10m 00s" in html(response)  # the closed one's


def test_deployment_page_shows_commit_regions_and_the_event_log(browser_for, team, app):
    first = ship(app, sha="1111111aaaaaaa", ago=10)
    second = ship(app, sha="2222222bbbbbbb", message="Second", versions={"us-east-1": "7"})
    Deployment.objects.filter(pk=second.pk).update(previous_release=first.release)
    RegionDeployment.objects.filter(deployment=second, region__code="us-east-1").update(previous_version="1")
    response = browser_for(team, Role.VIEWER).get(f"/deployments/{second.pk}/")
    assert response.status_code == 200
    page = html(response)
    assert 'href="https://github.com/acme/shop/commit/2222222bbbbbbb"' in page
    assert "2222222" in page and "Second" in page
    assert "replacing #1 (<code>1111111</code>)" in page
    assert 'data-region="us-east-1"' in page and ">7<" in page
    assert "Deploy of commit 2222222 queued." in page
    assert "Moved alias production to the new version." in page
    assert 'data-active="false"' in page  # finished: nothing to follow


def test_an_active_deployment_page_follows_the_events_api(browser_for, team, app):
    deployment = ship(app)
    Deployment.objects.filter(pk=deployment.pk).update(status=DeploymentStatus.RUNNING, finished_at=None)
    browser = browser_for(team, Role.VIEWER)
    page = html(browser.get(f"/deployments/{deployment.pk}/"))
    assert 'data-active="true"' in page
    assert f'data-events-url="/api/v1/deployments/{deployment.pk}/events/"' in page
    assert 'data-after="2"' in page
    assert "deployments/ui.js" in page

    log_event(deployment_id=deployment.pk, step="verify", message="Health check passed.")
    answer = browser.get(
        f"/api/v1/deployments/{deployment.pk}/events/?after=2", HTTP_ACCEPT="application/json"
    )
    assert answer.status_code == 200
    body = answer.json()
    assert [e["message"] for e in body["results"]] == ["Health check passed."]
    assert body["finished"] is False


def test_alert_links_open_pages_for_a_member(browser_for, team, app):
    deployment = ship(app)
    browser = browser_for(team, Role.VIEWER)
    assert browser.get(settings.HEALTH_URL_PATH.format(app=app.slug)).status_code == 200
    assert browser.get(settings.DEPLOYMENT_URL_PATH.format(id=deployment.pk)).status_code == 200


# --- Actions ------------------------------------------------------------------------------------


def test_viewers_see_no_rollback_or_unpin_buttons(browser_for, team, app):
    ship(app, sha="1111111aaaaaaa", ago=10)
    ship(app, sha="2222222bbbbbbb")
    Stage.objects.filter(app=app).update(pinned=True, pinned_reason="Rolled back by ada")
    page = html(browser_for(team, Role.VIEWER).get("/apps/shop/"))
    assert "Rolled back by ada" in page
    assert "/stages/production/rollback/" not in page and "Roll back" not in page
    assert "/stages/production/unpin/" not in page and ">Unpin<" not in page

    deployer_page = html(browser_for(team, Role.DEPLOYER).get("/apps/shop/"))
    assert "/stages/production/rollback/" in deployer_page and "Roll back to this" in deployer_page
    assert "/stages/production/unpin/" in deployer_page


def test_a_viewers_post_is_refused_and_changes_nothing(browser_for, team, app):
    ship(app, sha="1111111aaaaaaa", ago=10)
    ship(app, sha="2222222bbbbbbb")
    Stage.objects.filter(app=app).update(pinned=True, pinned_reason="hold")
    viewer = browser_for(team, Role.VIEWER)
    assert viewer.post("/apps/shop/stages/production/unpin/").status_code == 403
    assert viewer.post("/apps/shop/stages/production/rollback/").status_code == 403
    assert Stage.objects.get(app=app).pinned
    assert Deployment.objects.filter(app=app, kind=DeploymentKind.ROLLBACK).count() == 0


def test_forms_need_the_csrf_token(team, app):
    user = UserFactory()
    MembershipFactory(team=team, user=user, role=Role.DEPLOYER)
    Stage.objects.filter(app=app).update(pinned=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post("/apps/shop/stages/production/unpin/").status_code == 403
    assert Stage.objects.get(app=app).pinned


def test_a_deployer_unpins_a_stage(browser_for, team, app):
    Stage.objects.filter(app=app).update(
        pinned=True, pinned_reason="Rolled back to release #1", pinned_at=timezone.now()
    )
    response = browser_for(team, Role.DEPLOYER).post("/apps/shop/stages/production/unpin/", follow=True)
    assert response.redirect_chain[-1][0] == "/apps/shop/"
    stage = Stage.objects.get(app=app)
    assert not stage.pinned and stage.pinned_reason == "" and stage.pinned_at is None
    assert "production is unpinned" in html(response)


def test_rollback_moves_to_the_previous_release_and_opens_the_new_deployment(
    browser_for, team, app, monkeypatch
):
    first = ship(app, sha="1111111aaaaaaa", ago=10)
    ship(app, sha="2222222bbbbbbb")
    monkeypatch.setattr(
        lambda_, "get_version", lambda region, name, version, role_arn="": {"version": version}
    )
    response = browser_for(team, Role.DEPLOYER).post("/apps/shop/stages/production/rollback/", follow=True)
    rollback = Deployment.objects.get(app=app, kind=DeploymentKind.ROLLBACK)
    assert response.redirect_chain[-1][0] == f"/deployments/{rollback.pk}/"
    assert rollback.release_id == first.release_id
    assert Stage.objects.get(app=app).pinned
    page = html(response)
    assert "Rolling production back to release #1" in page
    assert 'data-active="true"' in page


def test_rollback_with_nothing_earlier_shows_why_and_creates_no_deployment(browser_for, team, app):
    ship(app)
    before = Deployment.objects.count()
    response = browser_for(team, Role.DEPLOYER).post("/apps/shop/stages/production/rollback/", follow=True)
    assert response.redirect_chain[-1][0] == "/apps/shop/"
    assert "Rollback of production refused" in html(response)
    assert "no earlier release to roll back to" in html(response)
    assert Deployment.objects.count() == before
    assert not Stage.objects.get(app=app).pinned


def test_rollback_to_a_pruned_version_shows_the_plans_refusal_and_changes_nothing(
    browser_for, team, app, monkeypatch
):
    ship(app, sha="1111111aaaaaaa", ago=10)
    ship(app, sha="2222222bbbbbbb")
    monkeypatch.setattr(lambda_, "get_version", lambda region, name, version, role_arn="": None)
    before = Deployment.objects.count()
    response = browser_for(team, Role.DEPLOYER).post("/apps/shop/stages/production/rollback/", follow=True)
    page = html(response)
    assert response.redirect_chain[-1][0] == "/apps/shop/"
    assert "Release #1 cannot be restored" in page and "was pruned" in page
    assert Deployment.objects.count() == before
    assert not Stage.objects.get(app=app).pinned


def test_actions_are_post_only(browser_for, team, app):
    browser = browser_for(team, Role.ADMIN)
    assert browser.get("/apps/shop/stages/production/unpin/").status_code == 405
    assert browser.get("/apps/shop/stages/production/rollback/").status_code == 405


def test_the_app_list_costs_the_same_queries_for_one_app_or_many(
    browser_for, team, app, django_assert_num_queries
):
    ship(app)
    browser = browser_for(team, Role.VIEWER)
    with CaptureQueriesContext(connection) as one:
        browser.get("/")
    for n in range(3):
        more = AppFactory(team=team, slug=f"more{n}")
        AppRegionFactory(app=more, region=RegionFactory(code="us-east-1"))
        StageFactory(app=more, name="production")
        ship(more, sha=f"{n}abcdef12345")
    with django_assert_num_queries(len(one.captured_queries)):
        page = html(browser.get("/"))
    assert "more2" in page


def test_app_page_shows_each_region_where_this_installation_resolves_it(browser_for, team, app, settings):
    """On a dev stack the endpoint resolver points at the local regions: the page shows the URL
    that answers here (the one a newcomer can curl), not the recorded AWS one; an override wins."""
    ship(app)
    recorded = {
        code: f"https://api{i}.execute-api.{code}.amazonaws.com/production"
        for i, code in enumerate(UI_REGIONS)
    }
    for code, url in recorded.items():
        StagePlacement.objects.filter(placement__app=app, placement__region__code=code).update(
            endpoint_url=url
        )
    settings.ENDPOINT_RESOLVER = "regions.local.endpoints.local_endpoint"
    settings.ENDPOINT_OVERRIDES = {f"shop/production/{UI_REGIONS[0]}": "http://127.0.0.1:9999/overridden"}

    page = html(browser_for(team, Role.VIEWER).get("/apps/shop/"))

    assert "http://127.0.0.1:9999/overridden" in page
    for i, code in enumerate(UI_REGIONS[1:], start=1):
        assert f"{region_url(code)}/api{i}/production" in page
    assert not any(url in page for url in recorded.values())
