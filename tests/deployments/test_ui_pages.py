"""The web UI's read pages and polish: health history, deployment lists, the deployment page's
summary and wording, search, error pages for browsers, the favicon and the offline API docs."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.contrib.staticfiles import finders
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from controlplane.choices import AlertEvent, ChannelKind, NotificationStatus, Role
from controlplane.models import Channel, Notification
from deployments.choices import DeploymentStatus
from deployments.events import log_event
from deployments.models import Deployment
from deployments.templatetags.ui import ago
from regions import history
from regions.models import Incident, Probe, ProbeRollup, StagePlacement
from tests.deployments.ui_support import html, ship
from tests.factories import AppFactory, UserFactory

# --- Health history -----------------------------------------------------------------------------


def _probes(sp, *, minutes: int, every_s: int = 60, fail_from: int | None = None, latency: float = 40.0):
    now = timezone.now()
    rows = []
    for i in range(minutes * 60 // every_s):
        at = now - timedelta(seconds=i * every_s + 1)
        failed = fail_from is not None and i < fail_from
        rows.append(
            Probe(
                stage_placement=sp, ok=not failed, status_code=None if failed else 200,
                latency_ms=1.0 if failed else latency + i % 5, error="DNS lookup failed" if failed else "",
                created_at=at,
            )
        )  # fmt: skip
    Probe.objects.bulk_create(rows)


def test_latency_series_downsamples_into_buckets_and_counts_uptime(app):
    ship(app)
    sp = StagePlacement.objects.get(placement__region__code="us-east-1")
    _probes(sp, minutes=120, fail_from=6)  # two hours of probes, the last 6 failed
    series = history.latency_series([sp.pk], window="hour")[sp.pk]
    assert 59 <= len(series.buckets) <= 61  # one per minute
    assert series.probes == 60 and series.failed == 6
    assert series.uptime == pytest.approx(90.0)
    # The failures' 1 ms is not a latency: the averages only count successful probes.
    assert min(b.avg_ms for b in series.buckets if b.avg_ms is not None) >= 40.0
    day = history.latency_series([sp.pk], window="day")[sp.pk]
    assert day.probes == 120 and len(day.buckets) <= 10  # 15-minute buckets


def test_day_and_week_charts_come_from_rollups_that_outlive_the_probes(app):
    ship(app)
    sp = StagePlacement.objects.get(placement__region__code="us-east-1")
    _probes(sp, minutes=180, fail_from=30)
    first = history.latency_series([sp.pk], window="week")[sp.pk]
    assert first.probes == 180 and first.failed == 30
    rolled = ProbeRollup.objects.filter(stage_placement=sp)
    assert 8 <= rolled.count() <= 12 and sum(r.probes for r in rolled) < 180  # the open bucket is not stored
    Probe.objects.filter(created_at__lt=timezone.now() - timedelta(minutes=40)).delete()  # pruned
    again = history.latency_series([sp.pk], window="week")[sp.pk]
    assert again.probes == first.probes and again.uptime == pytest.approx(first.uptime)
    with CaptureQueriesContext(connection) as queries:
        history.latency_series([sp.pk], window="day")
    assert len(queries.captured_queries) == 2  # the rollups, and the probes since the last one


def test_health_page_shows_uptime_a_chart_and_the_incident_timeline_with_alerts(browser_for, team, app):
    ship(app)
    sp = StagePlacement.objects.get(placement__region__code="us-east-1")
    _probes(sp, minutes=60, fail_from=3)
    incident = Incident.objects.create(
        stage_placement=sp, opened_at=timezone.now() - timedelta(minutes=3), reason="DNS lookup failed"
    )
    channel = Channel.objects.create(team=team, kind=ChannelKind.EMAIL, name="Ops", target="ops@example.com")
    Notification.objects.create(
        channel=channel,
        event=AlertEvent.HEALTH_DOWN,
        app=app,
        incident=incident,
        status=NotificationStatus.SENT,
    )
    page = html(browser_for(team, Role.VIEWER).get("/apps/shop/health/?window=hour"))
    assert "95.00%" in page  # 57 of 60 probes passed
    assert '<svg class="chart"' in page and "<polyline" in page and 'class="fail"' in page
    assert "failed: DNS lookup failed" in page and "1 ms" not in page
    assert "still down" in page and "Ops · down · Sent" in page
    assert "last hour" in page and "last week" in page


def test_the_health_page_costs_the_same_queries_with_many_probes(browser_for, team, app):
    ship(app)
    browser = browser_for(team, Role.VIEWER)
    with CaptureQueriesContext(connection) as few:
        browser.get("/apps/shop/health/?window=week")
    for sp in StagePlacement.objects.all():
        _probes(sp, minutes=600)
    browser.get("/apps/shop/health/?window=week")  # the first view stores the rollups (one insert)
    with CaptureQueriesContext(connection) as many:
        browser.get("/apps/shop/health/?window=week")
    assert len(many.captured_queries) == len(few.captured_queries) <= 10


# --- Deployments --------------------------------------------------------------------------------


def test_deployments_are_paginated_and_filtered(browser_for, team, app):
    for n in range(55):
        ship(app, sha=f"{n:07d}abcdef")
    Deployment.objects.filter(commit_sha__startswith="0000001").update(status=DeploymentStatus.FAILED)
    browser = browser_for(team, Role.VIEWER)
    assert "/apps/shop/deployments/" in html(browser.get("/apps/shop/"))  # "see all"
    first = html(browser.get("/apps/shop/deployments/"))
    assert first.count('href="/deployments/') == 50 and "page=2" in first
    second = html(browser.get("/apps/shop/deployments/?page=2"))
    assert second.count('href="/deployments/') == 5 and "page=1" in second
    failed = html(browser.get("/apps/shop/deployments/?status=failed"))
    assert failed.count('href="/deployments/') == 1
    assert browser.get("/apps/shop/deployments/?page=zz").status_code == 200


def test_deployment_page_words_log_order_and_filters(browser_for, team, app):
    user = UserFactory(username="grace", first_name="Grace", last_name="Hopper")
    deployment = ship(app)
    Deployment.objects.filter(pk=deployment.pk).update(triggered_by="user:grace", user=user)
    region = StagePlacement.objects.get(placement__region__code="us-east-1").placement.region
    log_event(deployment_id=deployment.pk, region_id=region.pk, step="verify", message="us-east-1: Healthy.")
    page = html(browser_for(team, Role.VIEWER).get(f"/deployments/{deployment.pk}/"))
    assert "Grace Hopper (grace)" in page
    assert '<td class="msg">Healthy.</td>' in page  # the region has its own column
    assert 'id="log-region"' in page and 'id="log-level"' in page
    seqs = [int(chunk.split('"')[0]) for chunk in page.split('data-seq="')[1:]]
    assert seqs == sorted(seqs)
    assert ">Succeeded<" in page and "UTC" in page


def test_token_and_push_triggers_are_named_in_words(browser_for, team, app):
    deployment = ship(app)
    browser = browser_for(team, Role.VIEWER)
    assert "push by Ada Lovelace (GitHub)" in html(browser.get(f"/deployments/{deployment.pk}/"))
    Deployment.objects.filter(pk=deployment.pk).update(triggered_by="token:release-bot (cp_ab12)")
    assert "API token “release-bot”" in html(browser.get(f"/deployments/{deployment.pk}/"))


# --- Lists, times, polish -----------------------------------------------------------------------


def test_the_app_list_searches_and_filters(browser_for, team, app):
    AppFactory(team=team, slug="billing", name="Billing")
    browser = browser_for(team, Role.VIEWER)
    page = html(browser.get("/?q=bill"))
    assert "/apps/billing/" in page and "/apps/shop/" not in page
    assert "No app matches" in html(browser.get("/?q=nothing-like-this"))


def test_relative_times_carry_the_absolute_utc_time():
    now = timezone.now()
    assert ago(now - timedelta(seconds=10), now) == "just now"
    assert ago(now - timedelta(minutes=3), now) == "3 min ago"
    assert ago(now - timedelta(hours=5), now) == "5 h ago"
    assert ago(now - timedelta(days=1), now) == "1 day ago"


def test_pages_show_times_one_way_with_utc_on_hover(browser_for, team, app):
    ship(app, ago=3)
    page = html(browser_for(team, Role.VIEWER).get("/apps/shop/"))
    assert re.search(r">\d min ago</time>", page) and ' UTC">' in page


def test_dark_mode_favicon_and_skip_link(browser_for, team, app):
    page = html(browser_for(team, Role.VIEWER).get("/"))
    assert 'class="skip-link" href="#main"' in page and 'id="main"' in page
    assert 'rel="icon"' in page
    css = open(finders.find("deployments/ui.css")).read()
    assert "prefers-color-scheme: dark" in css
    response = browser_for(team, Role.VIEWER).get("/favicon.ico")
    assert response.status_code == 301 and response["Location"].endswith("favicon.svg")


@pytest.fixture
def production_errors(settings):
    settings.DEBUG = False


def test_unknown_ui_urls_answer_browsers_with_an_html_404_and_the_api_with_json(
    browser_for, team, app, production_errors
):
    browser = browser_for(team, Role.VIEWER)
    page = browser.get("/no/such/page/", HTTP_ACCEPT="text/html")
    assert page.status_code == 404 and page["Content-Type"].startswith("text/html")
    assert "Not found" in html(page) and "Back to your apps" in html(page)
    api = browser.get("/api/v1/nothing-here/")
    assert api.status_code == 404 and api.json()["code"] == "not_found"


def test_a_wrong_method_gets_an_html_405_naming_the_allowed_ones(browser_for, team, app):
    response = browser_for(team, Role.VIEWER).get("/apps/shop/deploy/")
    assert response.status_code == 405 and response["Allow"] == "POST"
    assert "Method not allowed" in html(response)


def test_server_errors_are_an_html_page_for_browsers_and_json_for_the_api(rf):
    from controlplane.errors import handler500

    page = handler500(rf.get("/apps/shop/"))
    assert page.status_code == 500 and b"Something went wrong" in page.content and b"<html" in page.content
    api = handler500(rf.get("/api/v1/apps/"))
    assert api.status_code == 500 and b'"server_error"' in api.content


def test_api_docs_load_swagger_ui_from_our_static_files(client):
    page = client.get("/api/docs/").content.decode()
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "cdn." not in page and "unpkg" not in page and "jsdelivr" not in page
    assert finders.find("drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
