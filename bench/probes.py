"""Probes per second on one worker process: thousands of live placements, each with its own
endpoint URL on local servers, probed by ``workers.probe_all`` rounds in a real Celery worker
(one process, one task at a time). A round includes claiming the placements, the probes, and
recording results and states. Target: >= 2,000 probes/s (the median full round); PASS or FAIL
is printed, and ``--strict`` makes a miss exit with status 1.

    python bench/probes.py [placements] [rounds] [--strict]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from healthstack import RUN, EndpointServers, database, teardown

from tests.support.processes import WorkerProcess

TARGET = 2000  # probes per second, the median full round


def make_placements(count: int, ports: list[int]) -> int:
    from controlplane.models import Team
    from deployments.models import App, Stage
    from regions.catalog import commercial_regions
    from regions.models import AppRegion, Region, StagePlacement

    team = Team.objects.create(slug="bench", name="Bench")
    codes = list(commercial_regions())[:25]
    regions = [Region.objects.get_or_create(code=c, defaults={"name": c})[0] for c in codes]
    stages_per_app = 2
    apps_needed = -(-count // (len(regions) * stages_per_app))
    made = 0
    for a in range(apps_needed):
        app = App.objects.create(team=team, slug=f"app{a}", runtime="python3.12", health_path="/health")
        stages = [Stage.objects.create(app=app, name=name) for name in ("production", "staging")]
        placements = AppRegion.objects.bulk_create([AppRegion(app=app, region=r) for r in regions])
        rows = []
        for placement in placements:
            for stage in stages:
                if made + len(rows) >= count:
                    break
                port = ports[(made + len(rows)) % len(ports)]
                rows.append(
                    StagePlacement(
                        placement=placement,
                        stage=stage,
                        version="1",
                        endpoint_url=f"http://127.0.0.1:{port}/{app.slug}/{stage.name}/{placement.region.code}",
                    )
                )
        StagePlacement.objects.bulk_create(rows)
        made += len(rows)
    return made


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("placements", nargs="?", type=int, default=5000)
    parser.add_argument("rounds", nargs="?", type=int, default=5)
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    parser.add_argument("--quick", action="store_true", help="1,000 placements, 2 rounds")
    args = parser.parse_args()
    if args.quick:
        args.placements, args.rounds = min(args.placements, 1000), min(args.rounds, 2)
    count, rounds = args.placements, args.rounds
    state = database()
    servers = EndpointServers(50)
    worker = None
    try:
        made = make_placements(count, servers.ports)
        worker = WorkerProcess(
            name=f"probes-{RUN}",
            concurrency=1,
            # The production interval and timeout; every placement is made due before each round.
            env={"HEALTH_PROBE_INTERVAL": "10", "HEALTH_PROBE_CONCURRENCY": "200", "LOG_LEVEL": "WARNING"},
        ).start()
        from regions.models import StagePlacement
        from workers.tasks import probe_all

        results = []
        for _ in range(rounds):
            StagePlacement.objects.update(last_probe_at=None)
            started = time.perf_counter()
            result = probe_all.delay().get(timeout=600)
            result["wall"] = time.perf_counter() - started
            results.append(result)
            print(
                f"round: {result['probed']} probed, {result['healthy']} healthy, "
                f"probes {result['probe_seconds']:.2f}s, round {result['seconds']:.2f}s "
                f"({result['probed'] / result['seconds']:.0f}/s), task wall {result['wall']:.2f}s"
            )
        from django.conf import settings

        engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
        full = [r["probed"] / r["seconds"] for r in results]
        net = [r["probed"] / r["probe_seconds"] for r in results]
        passed = statistics.median(full) >= TARGET
        print(
            f"\n{made} placements, {rounds} rounds, one worker process ({engine}): "
            f"median {statistics.median(full):.0f} probes/s per full round (claim + probe + record), "
            f"{statistics.median(net):.0f} probes/s for the probes alone; "
            f"target >= {TARGET}: {'PASS' if passed else 'FAIL'}"
        )
        return 1 if args.strict and not passed else 0
    finally:
        if worker:
            worker.stop()
        servers.stop()
        teardown(state)


if __name__ == "__main__":
    sys.exit(main())
