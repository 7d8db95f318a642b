"""Endpoints flip between healthy and failing; the probe rounds open and close incidents and the
team hears about it exactly once per transition, on real local receivers."""

from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone

from controlplane.choices import NotificationStatus, Role
from controlplane.models import Notification
from regions import health, incidents
from regions.choices import HealthStatus
from regions.models import Incident, StagePlacement
from tests.support.alerting import deliver_pending, live_placement, make_app, make_channel
from tests.support.processes import wait_for


def probe_rounds(count: int) -> None:
    for _ in range(count):
        health.run_probe_round(min_age=0)


@pytest.fixture
def two_regions(team, http_server, settings):
    settings.HEALTH_FAILURE_THRESHOLD = 2
    settings.HEALTH_RECOVERY_THRESHOLD = 2
    us, eu = http_server(), http_server()
    us.healthy()
    eu.healthy()
    app = make_app(team)
    live_placement(app=app, region="us-east-1", endpoint_url=us.url + "/production")
    live_placement(app=app, region="eu-west-1", endpoint_url=eu.url + "/production")
    return app, us, eu


def test_region_going_down_opens_one_incident_and_alerts_once_then_recovers(team, two_regions, slack):
    app, us, eu = two_regions
    make_channel(team, "slack", slack.url + "/services/T0/B0/XXXX", name="ops")
    make_channel(team, "email", "oncall@example.com", events=["health_down", "health_up"])

    probe_rounds(2)
    assert set(StagePlacement.objects.values_list("health_status", flat=True)) == {HealthStatus.UP}
    assert Notification.objects.count() == 0  # coming up from unknown is not news

    eu.failing()
    probe_rounds(1)
    assert Incident.objects.count() == 0  # one failure is under the threshold
    probe_rounds(1)
    incident = Incident.objects.get()
    assert incident.closed_at is None
    assert incident.stage_placement.placement.region.code == "eu-west-1"
    assert incident.reason == "HTTP 503 (expected 200)"
    deliver_pending()

    (down,) = slack.received("POST")
    body = down.json()
    assert body["blocks"][0]["text"]["text"] == "DOWN: api production in eu-west-1"
    fields = " ".join(f["text"] for f in body["blocks"][2]["fields"])
    assert "*App*\napi" in fields and "*Stage*\nproduction" in fields and "*Region*\neu-west-1" in fields
    assert body["blocks"][3]["elements"][0]["url"].endswith(f"/apps/api/health/?team={team.slug}")
    assert len(mail.outbox) == 1
    assert mail.outbox[0].to == ["oncall@example.com"]
    assert mail.outbox[0].subject == "[controlplane] DOWN: api production in eu-west-1"
    assert "HTTP 503" in mail.outbox[0].body
    assert "text/html" in [mime for _, mime in mail.outbox[0].alternatives]

    probe_rounds(3)  # still down: no new incident, no new alert
    deliver_pending()
    assert Incident.objects.count() == 1
    assert len(slack.received("POST")) == 1 and len(mail.outbox) == 1

    eu.healthy()
    probe_rounds(1)
    assert Incident.objects.get().closed_at is None  # one success is under the recovery threshold
    probe_rounds(1)
    deliver_pending()
    incident.refresh_from_db()
    assert incident.closed_at is not None and incident.duration_s > 0
    assert len(slack.received("POST")) == 2
    assert (
        slack.received("POST")[1].json()["blocks"][0]["text"]["text"]
        == "api production recovered in eu-west-1"
    )
    assert len(mail.outbox) == 2 and "recovered" in mail.outbox[1].subject
    assert Notification.objects.filter(status=NotificationStatus.SENT).count() == 4
    assert len(us.received("GET")) == 9  # the healthy region was probed every round, never alerted


def test_flapping_region_sends_no_alerts(team, two_regions, slack):
    app, us, eu = two_regions
    make_channel(team, "slack", slack.url + "/hook")
    probe_rounds(2)
    for _ in range(5):
        eu.failing()
        probe_rounds(1)
        eu.healthy()
        probe_rounds(1)
    deliver_pending()
    assert Incident.objects.count() == 0
    assert slack.received() == []


def test_channel_for_another_app_or_event_hears_nothing(team, two_regions, slack, http_server):
    app, us, eu = two_regions
    other_app = make_app(team, slug="billing")
    deploys_only = http_server()
    make_channel(team, "slack", slack.url + "/hook", apps=["billing"])
    make_channel(team, "webhook", deploys_only.url + "/hook", events=["deploy_failed"])
    probe_rounds(2)
    eu.failing()
    probe_rounds(2)
    deliver_pending()
    assert Incident.objects.count() == 1
    assert slack.received() == [] and deploys_only.received() == []
    assert other_app.slug == "billing"


def test_health_api_shows_regions_open_incident_and_history(team, two_regions, api_for, other_team):
    app, us, eu = two_regions
    viewer = api_for(team, role=Role.VIEWER)
    probe_rounds(2)
    eu.failing()
    probe_rounds(2)

    answer = viewer.get("/api/v1/apps/api/health/")
    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert body["status"] == "down"
    by_region = {r["region"]: r for r in body["regions"]}
    assert by_region["us-east-1"]["status"] == "up" and by_region["us-east-1"]["open_incident"] is None
    assert by_region["us-east-1"]["latency_ms"] > 0 and by_region["us-east-1"]["last_probe_at"]
    eu_row = by_region["eu-west-1"]
    assert eu_row["status"] == "down" and eu_row["consecutive_failures"] == 2
    assert eu_row["open_incident"]["open"] is True
    assert eu_row["open_incident"]["reason"] == "HTTP 503 (expected 200)"

    eu.healthy()
    probe_rounds(2)
    body = viewer.get("/api/v1/apps/api/health/?stage=production").json()
    assert body["status"] == "up"
    (incident,) = body["incidents"]
    assert incident["region"] == "eu-west-1" and incident["open"] is False and incident["duration_s"] >= 0

    assert api_for(other_team, role=Role.ADMIN).get("/api/v1/apps/api/health/").status_code == 404


def test_reminder_while_a_region_stays_down(team, two_regions, slack, settings):
    app, us, eu = two_regions
    settings.HEALTH_REMINDER_MINUTES = 30
    make_channel(team, "slack", slack.url + "/hook")
    eu.failing()
    probe_rounds(2)
    deliver_pending()
    assert len(slack.received("POST")) == 1
    assert incidents.send_incident_reminders() == 0  # not yet due

    later = timezone.now() + timedelta(minutes=31)
    assert incidents.send_incident_reminders(now=later) == 1
    assert incidents.send_incident_reminders(now=later) == 0  # one reminder per period
    deliver_pending()
    reminder = slack.received("POST")[1].json()
    assert reminder["blocks"][0]["text"]["text"] == "Still down: api production in eu-west-1"


def test_route53_health_check_status_is_read(team, aws, http_server):
    from regions.aws import route53

    app = make_app(team)
    sp = live_placement(app=app, region="us-east-1", endpoint_url=http_server().url)
    sp.health_check_id = route53.ensure_health_check(
        caller_reference="acme-api-production-us-east-1",
        fqdn="abc.execute-api.us-east-1.amazonaws.com",
        path="/production/health",
        region="us-east-1",
    )
    sp.save()
    assert health.read_route53_statuses() == 1
    sp.refresh_from_db()
    assert sp.route53_status == "Healthy"  # as the emulator's checkers report it

    route53.delete_health_check(sp.health_check_id)
    health.read_route53_statuses()
    sp.refresh_from_db()
    assert sp.route53_status == "Error: NoSuchHealthCheck"


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_real_worker_probes_opens_incident_and_delivers_to_slack(
    team, slack, worker_process, region_endpoints
):
    from workers.tasks import probe_all

    app = make_app(team)
    # The worker can reach the region only through ENDPOINT_OVERRIDES in its environment.
    sp = live_placement(
        app=app, region="ap-southeast-2", endpoint_url="https://unreachable.invalid/production"
    )
    make_channel(team, "slack", slack.url + "/services/T/B/worker")
    region_endpoints.failing.add("ap-southeast-2")
    try:
        first = probe_all.delay().get(timeout=30)
        assert first["probed"] == 1 and first["healthy"] == 0 and first["went_down"] == []
        assert Incident.objects.count() == 0  # one failure is under the threshold
        StagePlacement.objects.filter(pk=sp.pk).update(last_probe_at=None)  # due again now
        second = probe_all.delay().get(timeout=30)
        assert second["went_down"] == [sp.pk]

        (message,) = slack.wait_for_requests(1, timeout=30)
        assert message.json()["blocks"][0]["text"]["text"] == "DOWN: api production in ap-southeast-2"
        assert Incident.objects.get().reason == "HTTP 503 (expected 200)"
        assert region_endpoints.hits["ap-southeast-2"] >= 2
        wait_for(lambda: Notification.objects.get().status == NotificationStatus.SENT, timeout=15)
    finally:
        region_endpoints.failing.discard("ap-southeast-2")


def test_region_flapping_slower_than_the_thresholds_alerts_once_then_resumes_when_stable(
    team, two_regions, slack, settings
):
    """Down for three rounds, up for three, over and over: each half-cycle outlasts the
    thresholds (2), so without damping every cycle would send a DOWN and a recovered message."""
    settings.HEALTH_PROBE_INTERVAL = 10
    settings.HEALTH_FLAP_TRANSITIONS = 4
    settings.HEALTH_FLAP_WINDOW = 600
    app, us, eu = two_regions
    make_channel(team, "slack", slack.url + "/hook")
    clock = [timezone.now()]

    def rounds(count: int) -> None:
        for _ in range(count):
            clock[0] += timedelta(seconds=10)
            health.run_probe_round(now=clock[0])

    def titles() -> list[str]:
        deliver_pending()
        return [r.json()["blocks"][0]["text"]["text"] for r in slack.received("POST")]

    rounds(2)
    for _ in range(6):  # six cycles of a minute: twelve transitions in six minutes
        eu.failing()
        rounds(3)
        eu.healthy()
        rounds(3)
    down, up = "DOWN: api production in eu-west-1", "api production recovered in eu-west-1"
    assert titles() == [down, up, down, up, "FLAPPING: api production in eu-west-1"]
    assert Incident.objects.count() == 6  # the history is still recorded in full
    flapping = Notification.objects.get(payload__data__flapping=True)
    assert flapping.event == "health_down" and "paused" in flapping.payload["text"]

    # It stops flapping while down: one DOWN once it has been down for the whole window.
    eu.failing()
    rounds(61)  # down after two rounds, so not yet ten minutes down
    assert titles()[5:] == []
    rounds(2)
    assert titles()[5:] == [down]
    assert "stopped flapping" in slack.received("POST")[-1].json()["blocks"][1]["text"]["text"]
    rounds(10)
    assert len(titles()) == 6  # said once

    # Stable for longer than the window: the recovery is news again, and so is the next outage.
    eu.healthy()
    rounds(2)
    eu.failing()
    rounds(2)
    assert titles()[6:] == [up, down]
    assert all("us-east-1" not in t for t in titles())


def test_flap_damping_can_be_turned_off(team, two_regions, slack, settings):
    settings.HEALTH_FLAP_TRANSITIONS = 0
    app, us, eu = two_regions
    make_channel(team, "slack", slack.url + "/hook")
    probe_rounds(2)
    for _ in range(4):
        eu.failing()
        probe_rounds(2)
        eu.healthy()
        probe_rounds(2)
    deliver_pending()
    assert len(slack.received("POST")) == 8


def test_flap_decision_counts_transitions_in_a_sliding_window():
    start = timezone.now()
    window = timedelta(seconds=600)

    def decide(*minutes: float) -> str:
        times = [start + timedelta(minutes=m) for m in minutes]
        return incidents.flap_decision(times, limit=4, window=window)

    assert decide(0, 1, 2, 3) == "alert"
    assert decide(0, 1, 2, 3, 4) == "flapping"
    assert decide(0, 1, 2, 3, 4, 5) == "quiet"
    assert decide(0, 3, 6, 9, 12, 15, 18) == "alert"  # never more than 4 in ten minutes
    # Still flapping while transitions keep coming within a window of each other...
    assert decide(0, 1, 2, 3, 4, 13, 22) == "quiet"
    # ...and afresh once it has been stable for a whole window.
    assert decide(0, 1, 2, 3, 4, 15) == "alert"
