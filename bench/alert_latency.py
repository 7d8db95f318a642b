"""Alert latency: from the moment a region's endpoint starts failing to the moment a local Slack
receiver gets the DOWN message, with the production wiring: celery beat scheduling
``workers.probe_all`` every 5 s, a real worker probing (failure threshold 2), opening the
incident and delivering. Target: <= 15 s (the slowest outage); PASS or FAIL is printed, and
``--strict`` makes a miss exit with status 1.

Each outage is in a region of its own, with a healthy region probed beside them throughout.
With ``--hang`` the endpoint stops answering instead of failing (it accepts the connection and
never replies), so each probe of it lasts the whole probe timeout; the healthy region must still
be probed every round.

    python bench/alert_latency.py [samples] [--hang] [--strict]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from healthstack import RUN, beat_process, database, settings, teardown

from tests.support.processes import WorkerProcess, wait_for
from tests.support.receivers import HttpServer

INTERVAL = 5.0
TARGET = 15.0  # seconds, the slowest outage
HANG = 3600.0  # seconds a hung endpoint keeps a request before answering


# Each outage happens in a region of its own: outages of one region minutes apart are flapping,
# and flap damping (HEALTH_FLAP_TRANSITIONS) would rightly hold back the third one's alert.
REGIONS = ("eu-west-1", "eu-west-2", "eu-west-3", "eu-central-1", "eu-north-1", "ap-south-1",
           "ap-northeast-1", "ap-southeast-1", "sa-east-1", "ca-central-1")  # fmt: skip
NEIGHBOUR = "us-east-1"  # healthy throughout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("samples", nargs="?", type=int, default=3, help="outages to time (default 3)")
    parser.add_argument("--hang", action="store_true", help="the endpoint hangs instead of failing")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument(
        "--quick", action="store_true", help="2 outages (scripts/dev.py bench runs all with it)"
    )
    args = parser.parse_args()
    if args.quick:
        args.samples = min(args.samples, 2)
    samples = min(args.samples, len(REGIONS))
    state = database()
    regions = REGIONS[:samples]
    endpoints = {code: HttpServer() for code in (*regions, NEIGHBOUR)}
    slack = HttpServer()
    for endpoint in endpoints.values():
        endpoint.healthy()
    neighbour = endpoints[NEIGHBOUR]
    env = {
        "HEALTH_PROBE_INTERVAL": str(INTERVAL),
        "HEALTH_FAILURE_THRESHOLD": "2",
        "HEALTH_RECOVERY_THRESHOLD": "2",
        "ENDPOINT_OVERRIDES": json.dumps({code: e.url + "/production" for code, e in endpoints.items()}),
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
        placements = {}
        for code in endpoints:
            placement = AppRegion.objects.create(app=app, region=Region.objects.create(code=code))
            placements[code] = StagePlacement.objects.create(placement=placement, stage=stage, version="1")
        create_channel(principal=None, team=team, kind="slack", target=slack.url + "/services/T/B/bench")

        worker = WorkerProcess(name=f"alerts-{RUN}", env=env).start()
        beat = beat_process(env)

        def all_up():
            return set(StagePlacement.objects.values_list("health_status", flat=True)) == {"up"}

        wait_for(all_up, timeout=60, interval=0.1, message="every region to be up")
        latencies = []
        for code in regions:
            endpoint = endpoints[code]
            # Start failing at different points of the probe cycle, as real outages do.
            time.sleep(INTERVAL * (0.2 + 0.6 * (len(latencies) % 3) / 2))
            seen = len(slack.received("POST"))
            neighbour_probes = len(neighbour.received("GET"))
            if args.hang:
                endpoint.respond(200, b'{"status": "ok"}', delay=HANG)
            else:
                endpoint.failing()
            started = time.monotonic()
            slack.wait_for_requests(seen + 1, timeout=60)
            latency = time.monotonic() - started
            title = slack.received("POST")[-1].json()["blocks"][0]["text"]["text"]
            latencies.append(latency)
            probed = len(neighbour.received("GET")) - neighbour_probes
            print(f"{title!r} after {latency:.2f}s; the healthy region was probed {probed} times meanwhile")
            endpoint.healthy()
            slack.wait_for_requests(seen + 2, timeout=60)  # the recovery message
            wait_for(all_up, timeout=60, interval=0.1, message="recovery")
        # The worker clamps the probe timeout as regions.health.probe_timeout does, for its interval.
        timeout = min(settings.HEALTH_PROBE_TIMEOUT, INTERVAL * 0.8)
        kind = f"hung endpoint, probe timeout {timeout:g}s" if args.hang else "HTTP 503"
        passed = max(latencies) <= TARGET
        print(
            f"\nalert latency over {samples} outages ({kind}; interval {INTERVAL:g}s, threshold 2): "
            f"median {statistics.median(latencies):.2f}s, max {max(latencies):.2f}s; "
            f"target <= {TARGET:g}s: {'PASS' if passed else 'FAIL'}"
        )
        return 1 if args.strict and not passed else 0
    finally:
        if beat:
            beat.terminate()
            beat.wait(10)
        if worker:
            worker.stop()
        for endpoint in endpoints.values():
            endpoint.stop()
        slack.stop()
        teardown(state)


if __name__ == "__main__":
    sys.exit(main())
