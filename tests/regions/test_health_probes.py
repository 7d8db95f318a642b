from datetime import timedelta

import pytest
from django.test import override_settings
from django.utils import timezone

from regions import health, incidents
from regions.choices import HealthStatus
from regions.endpoints import health_url, resolve_endpoint
from regions.health import HealthState, advance
from regions.models import Incident, Probe
from regions.probes import check_url
from tests.support.alerting import live_placement, make_app


def test_healthy_endpoint_passes_with_latency(http_server):
    endpoint = http_server()
    endpoint.healthy()
    result = check_url(endpoint.url + "/health", timeout=5)
    assert result.ok and result.status_code == 200 and result.error == ""
    assert 0 < result.latency_ms < 5000
    (request,) = endpoint.received("GET")
    assert request.path == "/health"
    assert request.headers["user-agent"].startswith("controlplane-health")


def test_unexpected_status_fails_and_says_which(http_server):
    endpoint = http_server()
    endpoint.failing()
    result = check_url(endpoint.url + "/health", timeout=5)
    assert not result.ok
    assert result.status_code == 503
    assert result.error == "HTTP 503 (expected 200)"


def test_expected_text_must_be_in_the_body(http_server):
    endpoint = http_server()
    endpoint.respond(200, '{"status": "degraded"}')
    missing = check_url(endpoint.url + "/health", expected_text='"ok"', timeout=5)
    present = check_url(endpoint.url + "/health", expected_text="degraded", timeout=5)
    assert not missing.ok and "does not contain" in missing.error
    assert present.ok


def test_expected_text_beyond_the_first_5120_bytes_does_not_count(http_server):
    endpoint = http_server()
    endpoint.respond(200, "x" * 6000 + "READY")
    assert not check_url(endpoint.url + "/", expected_text="READY", timeout=5).ok


def test_other_expected_status_is_honoured(http_server):
    endpoint = http_server()
    endpoint.respond(204, b"")
    assert check_url(endpoint.url + "/health", expected_status=204, timeout=5).ok


def test_slow_endpoint_times_out(http_server):
    endpoint = http_server()
    endpoint.respond(200, "ok", delay=2)
    result = check_url(endpoint.url + "/health", timeout=0.3)
    assert not result.ok
    assert result.error == "timed out after 0.3s"
    assert result.latency_ms < 1500


def test_closed_port_is_connection_refused(http_server):
    endpoint = http_server()
    url = endpoint.url + "/health"
    endpoint.stop()
    result = check_url(url, timeout=2)
    assert not result.ok and result.error == "connection refused"


@override_settings(ALLOW_PRIVATE_URLS=False)
def test_probe_refuses_private_endpoint_without_connecting(http_server):
    endpoint = http_server()
    result = check_url(endpoint.url + "/health", timeout=2)
    assert not result.ok and result.error.startswith("refused:")
    assert endpoint.received() == []


def test_failure_threshold_marks_down_and_recovery_threshold_marks_up():
    state = HealthState("unknown", 0, 0)
    seen = []
    for ok in (True, True, False, False, False, True, True):
        state, transition = advance(state, ok, failure_threshold=2, recovery_threshold=2)
        seen.append((state.status, transition))
    assert seen == [
        ("unknown", None),
        ("up", None),  # becoming up from unknown tells nobody
        ("up", None),
        ("down", "down"),
        ("down", None),
        ("down", None),
        ("up", "up"),
    ]


def test_flapping_endpoint_changes_nothing():
    state = HealthState("up", 0, 5)
    for ok in (False, True) * 10:
        state, transition = advance(state, ok, failure_threshold=2, recovery_threshold=2)
        assert transition is None
    assert state.status == "up"


def test_endpoint_overrides_most_specific_wins(team, settings):
    app = make_app(team)
    sp = live_placement(
        app=app, region="eu-west-1", endpoint_url="https://abc.execute-api.eu-west-1.amazonaws.com/production"
    )
    assert resolve_endpoint(sp) == "https://abc.execute-api.eu-west-1.amazonaws.com/production"
    settings.ENDPOINT_OVERRIDES = {"eu-west-1": "http://127.0.0.1:1/region/"}
    assert resolve_endpoint(sp) == "http://127.0.0.1:1/region"
    settings.ENDPOINT_OVERRIDES["api/production/eu-west-1"] = "http://127.0.0.1:2"
    assert resolve_endpoint(sp) == "http://127.0.0.1:2"
    settings.ENDPOINT_OVERRIDES["acme/api/production/eu-west-1"] = "http://127.0.0.1:3"
    assert health_url(sp) == "http://127.0.0.1:3/health"


@pytest.mark.django_db
def test_round_probes_only_live_placements_and_records_results(team, http_server):
    endpoint = http_server()
    endpoint.healthy()
    app = make_app(team)
    live = live_placement(app=app, region="us-east-1", endpoint_url=endpoint.url + "/us")
    idle = live_placement(app=app, region="eu-west-1", endpoint_url=endpoint.url + "/eu", version="")
    summary = health.run_probe_round(min_age=0)
    assert summary.probed == 1 and summary.healthy == 1
    assert [r.path for r in endpoint.received("GET")] == ["/us/health"]
    probe = Probe.objects.get()
    assert probe.stage_placement == live and probe.ok and probe.status_code == 200 and probe.latency_ms > 0
    live.refresh_from_db()
    idle.refresh_from_db()
    assert live.consecutive_successes == 1 and live.last_latency_ms is not None
    assert idle.last_probe_at is None and idle.health_status == HealthStatus.UNKNOWN


@pytest.mark.django_db
def test_a_round_skips_placements_probed_moments_ago(team, http_server, settings):
    settings.HEALTH_PROBE_INTERVAL = 10
    endpoint = http_server()
    live_placement(app=make_app(team), region="us-east-1", endpoint_url=endpoint.url)
    assert health.run_probe_round().probed == 1
    assert health.run_probe_round().probed == 0  # within half an interval: already done
    assert len(endpoint.received("GET")) == 1


@pytest.mark.django_db
def test_prune_deletes_only_probe_results_past_retention(team, settings):
    settings.HEALTH_PROBE_RETENTION_DAYS = 7
    sp = live_placement(app=make_app(team), region="us-east-1")
    now = timezone.now()
    old = Probe.objects.create(stage_placement=sp, ok=True, created_at=now - timedelta(days=8))
    recent = Probe.objects.create(stage_placement=sp, ok=True, created_at=now - timedelta(days=6))
    assert health.prune_probes(batch=1) == 1
    assert list(Probe.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not Probe.objects.filter(pk=old.pk).exists()


@pytest.mark.django_db
def test_incident_of_a_placement_that_stopped_serving_is_closed(team):
    sp = live_placement(app=make_app(team), region="us-east-1", version="")
    Incident.objects.create(stage_placement=sp, reason="HTTP 503")
    assert incidents.close_incidents_of_retired_placements() == 1
    assert Incident.objects.get().closed_at is not None
