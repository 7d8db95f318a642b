"""Many deploys at once, on PostgreSQL and Redis with two worker processes, under the realistic AWS
model (bench/aws_model.py): APPS new apps deployed to REGIONS regions at the same time, then
each app deployed again (new code: the update path), then every app rolled back at once
through the REST API.

    DATABASE_URL=postgres://... REDIS_URL=redis://... python bench/load.py [--quick]
        [--apps 5] [--regions 4] [--workers 2] [--concurrency N] [--web-threads 16]

The full size of the target is ``--apps 50 --regions 16`` (800 region jobs). Targets:

- every deployment succeeds, none is lost or duplicated: every region deployment succeeded
  once (one "done" line each), and AWS saw one CreateFunction and one PublishVersion per app
  and region;
- the last region is done within 1.5 x one REGIONS-region deploy under the same model, counted
  from the last request;
- p95 of a rollback (API call to the rollback deployment succeeded) <= 1 s.

Printed besides: region deploys per minute per worker process (from the workers' own logs),
the peak number of connections to the benchmark's database (pg_stat_activity, sampled every
0.1 s) and the CPU each process spent (workers, AWS emulator, this process: the API and
polling). The rollbacks are sent from ``--web-threads`` threads, as a web server's request
threads would take them. ``--quick``: 2 apps x 2 regions.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 apps x 2 regions")
    parser.add_argument("--apps", type=int, default=5)
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, default=None, help="threads per worker (default: the setting)"
    )
    parser.add_argument("--web-threads", type=int, default=16)
    parser.add_argument("--home-region", default="us-east-1")
    args = parser.parse_args()
    if args.quick:
        args.apps, args.regions = 2, 2
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        sys.exit(
            "bench/load.py needs PostgreSQL and Redis: set DATABASE_URL=postgres://... and REDIS_URL=redis://..."
        )

    sys.path.insert(0, str(HERE))
    from aws_model import Model, regions_by_distance
    from harness import CpuMeter, Stack
    from rollback import other_zip, percentile

    from regions.catalog import commercial_regions

    model = Model(home=args.home_region)
    regions = regions_by_distance(commercial_regions(), args.home_region)[: args.regions]
    print(f"model: {model.describe()}")
    print(
        f"machine: {os.cpu_count()} cores, this run on {len(os.sched_getaffinity(0))}; load average "
        f"{os.getloadavg()[0]:.1f}; {args.apps} apps x {len(regions)} regions = {args.apps * len(regions)} "
        f"region jobs; {args.workers} worker processes"
    )

    with Stack(model=model, workers=args.workers, concurrency=args.concurrency) as stack:
        run_load(stack, args, regions, CpuMeter, other_zip, percentile)


def run_load(stack, args, regions, CpuMeter, other_zip, percentile) -> None:  # noqa: N803 - classes passed in
    import psycopg
    from django.db import connection
    from django.utils import timezone
    from rest_framework.test import APIClient

    from controlplane.models import ApiToken
    from deployments.artifacts import store_artifact
    from deployments.models import Deployment, DeploymentEvent, RegionDeployment
    from deployments.services.deployments import create_deployment

    db = connection.settings_dict  # (the benchmark's own database, made by the harness)
    peak = {"connections": 0}
    sampling = threading.Event()

    def sample() -> None:
        dsn = f"host={db['HOST'] or '127.0.0.1'} port={db['PORT'] or 5432} user={db['USER']} dbname=postgres"
        password = f" password={db['PASSWORD']}" if db["PASSWORD"] else ""
        # Autocommit: in a transaction PostgreSQL answers every read of pg_stat_activity from one snapshot.
        with psycopg.connect(dsn + password, autocommit=True) as pg:
            while not sampling.is_set():
                (n,) = pg.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [db["NAME"]]
                ).fetchone()
                peak["connections"] = max(peak["connections"], n)
                time.sleep(0.1)

    def deploy_all(apps, artifacts) -> tuple[list[int], float]:
        """Request a deploy of every app, as fast as requests come; (deployment ids, the wall
        clock time of the last request)."""
        ids = []
        for app, artifact in zip(apps, artifacts, strict=True):
            ids.append(
                create_deployment(
                    app=app, stage=app.stages.get(), principal=stack.principal(app), artifact=artifact
                ).pk
            )
        return ids, time.time()

    def wait_all(ids: list[int], timeout: float = 1800) -> None:
        for pk in ids:
            stack.wait(pk, timeout=timeout, interval=0.1)

    def last_region_done(ids: list[int]) -> float:
        latest = max(
            RegionDeployment.objects.filter(deployment_id__in=ids).values_list("finished_at", flat=True)
        )
        return latest.timestamp()

    def region_deploys_per_worker() -> list[int]:
        done = re.compile(r"Task workers\.deploy_region\[[^\]]+\] succeeded in [0-9.]+s: 'succeeded'")
        return [len(done.findall(w.log_path.read_text(errors="replace"))) for w in stack.workers]

    def one(app, artifact) -> float:
        """One deploy alone: its wall time."""
        start = time.perf_counter()
        d = stack.wait(
            create_deployment(
                app=app, stage=app.stages.get(), principal=stack.principal(app), artifact=artifact
            ).pk
        )
        assert d.status == "succeeded", (d.status, d.error)
        return time.perf_counter() - start

    # Warm both workers (imports, every region's clients, the execution role, the buckets).
    warm = [stack.app(f"warm{n}", regions) for n in range(2 * args.workers)]
    wait_all(deploy_all([a for a, _ in warm], [x for _, x in warm])[0])
    base_app, base_v1 = stack.app("baseline", regions)
    t_one = one(base_app, base_v1)
    t_one_update = one(base_app, store_artifact(app=base_app, fileobj=io.BytesIO(other_zip(2))))
    print(f"one {len(regions)}-region deploy alone: new app {t_one:.2f} s, update {t_one_update:.2f} s")

    apps, v1 = zip(*(stack.app(f"load{n}", regions) for n in range(args.apps)), strict=True)
    v2 = [store_artifact(app=app, fileobj=io.BytesIO(other_zip(2))) for app in apps]
    threading.Thread(target=sample, daemon=True).start()
    jobs = len(apps) * len(regions)
    results = {}
    for wave, artifacts, baseline in (("new apps", v1, t_one), ("update", v2, t_one_update)):
        before_calls, before_done = stack.aws.calls(), region_deploys_per_worker()
        with CpuMeter(stack) as meter:
            first_request = time.time()
            ids, last_request = deploy_all(apps, artifacts)
            wait_all(ids)
        deployments = list(Deployment.objects.filter(pk__in=ids).values_list("status", flat=True))
        region_rows = RegionDeployment.objects.filter(deployment_id__in=ids)
        succeeded = region_rows.filter(status="succeeded").count()
        done_lines = DeploymentEvent.objects.filter(deployment_id__in=ids, step="done").count()
        calls = stack.aws.calls() - before_calls

        def count(operation: str, _calls=calls) -> int:
            return sum(n for key, n in _calls.items() if key.split(" ", 1)[1] == operation)

        end = last_region_done(ids)
        per_worker = [a - b for a, b in zip(region_deploys_per_worker(), before_done, strict=True)]
        minutes = (end - first_request) / 60
        results[wave] = (end - last_request, baseline)
        spread = last_request - first_request
        print(f"\n{wave}: {len(ids)} deployments x {len(regions)} regions requested in {spread:.2f} s")
        print(
            f"  deployments succeeded {deployments.count('succeeded')}/{len(ids)}; region deployments "
            f"succeeded {succeeded}/{jobs} ({region_rows.count()} rows); 'done' lines {done_lines}; AWS "
            f"CreateFunction {count('lambda:CreateFunction')}, UpdateFunctionCode "
            f"{count('lambda:UpdateFunctionCode')}, PublishVersion {count('lambda:PublishVersion')} "
            f"(one per region job: {jobs})"
        )
        ok = (
            deployments.count("succeeded") == len(ids)
            and succeeded == jobs == region_rows.count() == done_lines
            and count("lambda:PublishVersion") == jobs
        )
        print(f"  every deployment succeeded, none lost or duplicated: {'yes' if ok else 'NO'}")
        tail = end - last_request
        print(
            f"  last request -> last region done: {tail:.2f} s = {tail / baseline:.2f} x one deploy alone "
            f"({baseline:.2f} s; target <= 1.5 x)"
        )
        print(
            "  region deploys per minute per worker process: "
            + ", ".join(
                f"worker{n + 1} {k / minutes:.0f} ({k} region jobs)" for n, k in enumerate(per_worker)
            )
        )
        print(f"  {meter.line()}; worker CPU per region job {meter.workers / jobs * 1000:.0f} ms")

    # Every app rolled back at once through the API.
    raw = ApiToken.generate()
    ApiToken.objects.create(
        team=apps[0].team, name="load", role="admin", token_hash=ApiToken.hash(raw), prefix=raw[:8]
    )
    local = threading.local()
    from regions.aws import lambda_

    for code in regions:  # the API process's Lambda clients, made once per process on a web server
        lambda_.get_alias(code, apps[0].function_name, "production")

    def roll_back(app) -> tuple[float, float, str]:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        started = timezone.now()
        answer = client.post(f"/api/v1/apps/{app.slug}/rollback/", {"stage": "production"}, format="json")
        accepted = (timezone.now() - started).total_seconds()
        connection.close()  # as a web server's request thread would at the end of the request
        assert answer.status_code == 202, answer.json()
        return started.timestamp(), accepted, answer.json()["id"]

    with CpuMeter(stack) as meter, ThreadPoolExecutor(max_workers=args.web_threads) as web:
        sent = list(web.map(roll_back, apps))
        wait_all([pk for _, _, pk in sent], timeout=600)
    rows = dict(Deployment.objects.filter(pk__in=[pk for _, _, pk in sent]).values_list("pk", "finished_at"))
    statuses = list(
        Deployment.objects.filter(pk__in=[pk for _, _, pk in sent]).values_list("status", flat=True)
    )
    took = [rows[pk].timestamp() - start for start, _, pk in sent]
    accepted = [a for _, a, _ in sent]
    sampling.set()
    print(f"\nrollbacks: {len(sent)} at once from {args.web_threads} request threads")
    print(f"  succeeded {statuses.count('succeeded')}/{len(sent)}")
    print(
        f"  API call -> 202: p50 {percentile(accepted, 50):.2f} s, p95 {percentile(accepted, 95):.2f} s; "
        f"API call -> succeeded: p50 {percentile(took, 50):.2f} s, p95 {percentile(took, 95):.2f} s "
        "(target p95 <= 1 s)"
    )
    print(f"  {meter.line()}")
    print(
        f"\npeak connections to the database: {peak['connections']} (max_connections: {show_max(connection)})"
    )


def show_max(connection) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW max_connections")
        return cursor.fetchone()[0]


if __name__ == "__main__":
    main()
