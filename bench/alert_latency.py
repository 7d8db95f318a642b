"""Alert latency: from the moment a region's endpoint starts failing to the moment a local Slack
receiver gets the DOWN message, with the production wiring: celery beat scheduling
``workers.probe_all`` every 5 s, a real worker probing (failure threshold 2), opening the
incident and delivering. Target: <= 15 s.

    python bench/alert_latency.py [samples]
"""

from __future__ import annotations

import json
import statistics
import sys
import time

from healthstack import RUN, beat_process, database, teardown

from tests.support.processes import WorkerProcess, wait_for
from tests.support.receivers import HttpServer

INTERVAL = 5.0


def main() -> None:
    samples = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    state = database()
    endpoint, slack = HttpServer(), HttpServer()
    endpoint.healthy()
    env = {
        "HEALTH_PROBE_INTERVAL": str(INTERVAL),
        "HEALTH_FAILURE_THRESHOLD": "2",
        "HEALTH_RECOVERY_THRESHOLD": "2",
        "ENDPOINT_OVERRIDES": json.dumps({"eu-west-1": endpoint.url + "/production"}),
    }
    worker = beat = None
    try:
        from controlplane.channels.services import create_channel
        from controlplane.models import Team
        from deployments.models import App, Stage
        from regions.models import AppRegion, Region, StagePlacement

        team = Team.objects.create(slug="bench", name="Bench")
        app = App.objects.create(team=team, slug="api", runtime="python3.12", health_path="/health")
        stage = Stage.objects.create(app=app, name="production")
        placement = AppRegion.objects.create(app=app, region=Region.objects.create(code="eu-west-1"))
        sp = StagePlacement.objects.create(placement=placement, stage=stage, version="1")
        create_channel(principal=None, team=team, kind="slack", target=slack.url + "/services/T/B/bench")

        worker = WorkerProcess(name=f"alerts-{RUN}", env=env).start()
        beat = beat_process(env)

        def status(expected: str):
            return lambda: StagePlacement.objects.get(pk=sp.pk).health_status == expected

        wait_for(status("up"), timeout=60, interval=0.1, message="the region to be up")
        latencies = []
        for _ in range(samples):
            # Start failing at different points of the probe cycle, as real outages do.
            time.sleep(INTERVAL * (0.2 + 0.6 * (len(latencies) % 3) / 2))
            seen = len(slack.received("POST"))
            endpoint.failing()
            started = time.monotonic()
            slack.wait_for_requests(seen + 1, timeout=60)
            latency = time.monotonic() - started
            title = slack.received("POST")[-1].json()["blocks"][0]["text"]["text"]
            latencies.append(latency)
            print(f"{title!r} after {latency:.2f}s")
            endpoint.healthy()
            slack.wait_for_requests(seen + 2, timeout=60)  # the recovery message
            wait_for(status("up"), timeout=60, interval=0.1, message="recovery")
        print(
            f"\nalert latency over {samples} outages (interval {INTERVAL:g}s, threshold 2): "
            f"median {statistics.median(latencies):.2f}s, max {max(latencies):.2f}s; target <= 15s"
        )
    finally:
        if beat:
            beat.terminate()
            beat.wait(10)
        if worker:
            worker.stop()
        endpoint.stop()
        slack.stop()
        teardown(state)


if __name__ == "__main__":
    main()
