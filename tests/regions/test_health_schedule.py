"""Probe scheduling: rounds start on a fixed beat, a hung endpoint never delays the probes of
other placements, and overlapping rounds never probe one placement twice."""

from __future__ import annotations

import socket
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from regions import health, probes
from regions.choices import HealthStatus
from regions.models import Probe, StagePlacement
from tests.support.alerting import live_placement, make_app


class HungServer:
    """A TCP server on loopback that accepts connections and never answers a byte."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = threading.Semaphore(0)
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._held.append(conn)
            self.accepted.release()

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self._held)

    def stop(self) -> None:
        self._sock.close()
        with self._lock:
            for conn in self._held:
                conn.close()


@pytest.fixture
def hung_server():
    servers: list[HungServer] = []

    def make() -> HungServer:
        servers.append(HungServer())
        return servers[-1]

    yield make
    for server in servers:
        server.stop()


def run_on_beat(rounds: int, interval: float) -> list[tuple[float, health.RoundSummary]]:
    """Start a probe round every ``interval`` seconds, as celery beat does (a round that overruns
    delays the next start, like a worker busy with the previous one). Returns (start, summary)."""
    first = time.monotonic()
    out = []
    for k in range(rounds):
        time.sleep(max(0.0, first + k * interval - time.monotonic()))
        started = time.monotonic()
        out.append((started, health.run_probe_round()))
    return out


@pytest.mark.django_db
def test_hung_endpoint_does_not_delay_other_placements_and_goes_down_in_time(
    team, http_server, hung_server, settings
):
    interval = 1.0
    settings.HEALTH_PROBE_INTERVAL = interval
    settings.HEALTH_PROBE_TIMEOUT = 5.0  # the default; a round clamps it below the interval
    settings.HEALTH_FAILURE_THRESHOLD = 2
    healthy = http_server()
    healthy.healthy()
    hung = hung_server()
    app = make_app(team)
    good = [
        live_placement(app=app, region=code, endpoint_url=f"{healthy.url}/{code}")
        for code in ("us-east-1", "eu-west-1", "ap-south-1")
    ]
    bad = live_placement(app=app, region="sa-east-1", endpoint_url=hung.url)

    hang_started = time.monotonic()
    rounds = run_on_beat(4, interval)

    # Every round probed every placement: the hung one's timeout cost the others nothing.
    assert [summary.probed for _, summary in rounds] == [4, 4, 4, 4]
    for sp in good:
        assert Probe.objects.filter(stage_placement=sp, ok=True).count() == 4
    assert hung.connections == 4
    down_round = next(i for i, (_, s) in enumerate(rounds) if bad.pk in s.went_down)
    assert down_round == 1  # the second failure, as the threshold says
    down_at = rounds[down_round][0] + rounds[down_round][1].total_seconds
    assert down_at - hang_started <= 2 * interval + health.probe_timeout()
    assert health.probe_timeout() == pytest.approx(0.8 * interval)
    assert all(s.total_seconds < interval for _, s in rounds)
    bad.refresh_from_db()
    assert bad.health_status == HealthStatus.DOWN and bad.consecutive_failures == 4
    assert "timed out" in Probe.objects.filter(stage_placement=bad).latest("pk").error


@pytest.mark.django_db
def test_last_probe_at_is_the_round_start(team, http_server, hung_server, settings):
    settings.HEALTH_PROBE_INTERVAL = 1.0
    hung = hung_server()
    sp = live_placement(app=make_app(team), region="us-east-1", endpoint_url=hung.url)

    before = timezone.now()
    health.run_probe_round()
    sp.refresh_from_db()
    # The probe took the whole timeout, but the schedule is anchored on when the round began.
    assert before <= sp.last_probe_at <= before + (timezone.now() - before) / 4
    assert Probe.objects.get().created_at >= before + (timezone.now() - before) / 2


@pytest.mark.django_db(transaction=True)
def test_a_round_never_claims_a_placement_another_round_is_probing(team, hung_server, settings):
    settings.HEALTH_PROBE_INTERVAL = 1.0
    settings.HEALTH_FAILURE_THRESHOLD = 5
    hung = hung_server()
    sp = live_placement(app=make_app(team), region="us-east-1", endpoint_url=hung.url)
    first: list[health.RoundSummary] = []
    slow = threading.Thread(target=lambda: first.append(health.run_probe_round()))
    slow.start()
    try:
        assert hung.accepted.acquire(timeout=10)  # the first round's probe is now in flight
        # Even a round that takes everything due right now must leave the in-flight one alone.
        second = health.run_probe_round(min_age=0)
    finally:
        slow.join(10)
    assert second.probed == 0
    assert first[0].probed == 1
    assert hung.connections == 1
    sp.refresh_from_db()
    assert Probe.objects.filter(stage_placement=sp).count() == 1
    assert sp.consecutive_failures == 1  # counted once


@pytest.mark.django_db
def test_results_of_a_round_whose_claim_was_taken_over_are_dropped(team, http_server, settings):
    endpoint = http_server()
    endpoint.failing()
    sp = live_placement(app=make_app(team), region="us-east-1", endpoint_url=endpoint.url)

    claim = timezone.now()
    StagePlacement.objects.filter(pk=sp.pk).update(last_probe_at=claim)
    sp.refresh_from_db()
    # The lease ran out and another round claimed it.
    StagePlacement.objects.filter(pk=sp.pk).update(last_probe_at=claim + timedelta(seconds=1))
    result = probes.ProbeResult(ok=False, status_code=503, latency_ms=1.0, error="HTTP 503")
    summary = health.record_results(placements=[sp], results=[result], claim=claim, anchor=claim)
    sp.refresh_from_db()
    assert summary.healthy == 0 and sp.consecutive_failures == 0
    assert not Probe.objects.exists()
