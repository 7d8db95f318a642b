"""Web UI server time: each main page's p95 and query count, and the health chart's query, over a
big installation: 100 apps (3 regions, 2 stages each), 100,000 deployments (each with its
release and 3 region deployments) and 10 million probe rows. Targets: every page p95 <= 50 ms
and <= 10 queries; the health chart query (a week, every stage and region of an app) <= 30 ms.

Run on PostgreSQL (the target): ``DATABASE_URL=postgres://... python bench/ui.py``. A throwaway
database is created and dropped (without DATABASE_URL it says so and does nothing). Pages are
served in-process by Django's test client (middleware, views, templates: the server's work; no
network). CPU time of this process is printed next to wall time; the database server's CPU is not
included in it. ``--profile PATH`` prints a profile of one request instead (``APP`` in PATH is
the measured app's slug).

    python bench/ui.py [--apps 100] [--deployments 100000] [--probes 10000000] [--runs 40] [--strict]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# --keepdb: one fixed database (and data folder, which holds its encryption key), populated once
# and kept for the next run (profiling, iterating).
KEEPDB = "--keepdb" in sys.argv
os.environ.setdefault(
    "CONTROLPLANE_DATA_DIR",
    os.path.join(tempfile.gettempdir(), "controlplane-bench-ui-keepdb")
    if KEEPDB
    else tempfile.mkdtemp(prefix="controlplane-bench-"),
)
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["CONTROLPLANE_TEST_RUN"] = "uibench" if KEEPDB else uuid.uuid4().hex[:8]
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["DEBUG"] = "false"

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402

PAGE_P95_MS = 50.0
PAGE_QUERIES = 10
CHART_P95_MS = 30.0
REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
STAGES = ("production", "staging")
PROBE_EVERY_S = 30  # the measured app's probes: every 30 s for the last 30 days, in every placement


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def populate(*, apps: int, deployments: int, probes: int) -> dict:
    """The installation, built with set-based SQL (row-by-row inserts would take hours)."""
    from controlplane.choices import Role
    from controlplane.crypto import encrypt
    from deployments.models import (
        App,
        Artifact,
        Deployment,
        DeploymentEvent,
        RegionDeployment,
        Release,
        Stage,
    )
    from regions.models import AppRegion, Incident, Probe, Region, StagePlacement
    from tests.factories import MembershipFactory, TeamFactory, UserFactory

    started = time.perf_counter()
    team = TeamFactory(slug="acme", name="Acme")
    user = UserFactory(username="bench")
    MembershipFactory(team=team, user=user, role=Role.ADMIN)
    regions = [Region.objects.get_or_create(code=code)[0] for code in REGIONS]
    app_rows = App.objects.bulk_create(
        App(team=team, slug=f"app{n:03d}", name=f"App {n}", runtime="python3.12", handler="app.handler")
        for n in range(apps)
    )
    AppRegion.objects.bulk_create(AppRegion(app=a, region=r) for a in app_rows for r in regions)
    Stage.objects.bulk_create(Stage(app=a, name=s) for a in app_rows for s in STAGES)
    Artifact.objects.bulk_create(Artifact(app=a, sha256=f"{a.pk:064d}", size=1000) for a in app_rows)
    stages = list(Stage.objects.order_by("id").values_list("id", "app_id"))
    per_stage = max(1, deployments // len(stages))
    with connection.cursor() as cur:
        # Releases 1..per_stage of every stage, then one deployment of each (succeeded, an hour apart).
        cur.execute(
            f"INSERT INTO {table(Release)} (app_id, stage_id, number, artifact_id, config, env_snapshot,"  # noqa: S608
            " env_secret_keys, commit_sha, commit_branch, commit_message, commit_author, commit_url,"
            " created_by, created_at)"
            f" SELECT s.app_id, s.id, n, a.id, '{{}}', %s, '[]', md5(s.id::text || n::text), 'main',"
            " 'Change number ' || n, 'Ada Lovelace', '', 'user:bench', now() - ((%s - n) * interval '1 hour')"
            f" FROM {table(Stage)} s JOIN {table(Artifact)} a ON a.app_id = s.app_id,"
            " generate_series(1, %s) n",
            [encrypt("{}"), per_stage, per_stage],
        )
        cur.execute(
            f"INSERT INTO {table(Deployment)} (app_id, stage_id, release_id, kind, status, ref, commit_sha,"  # noqa: S608
            " commit_branch, commit_message, commit_author, commit_url, compare_url, triggered_by, force,"
            " cancel_requested, idempotency_key, request_fingerprint, last_seq, error, created_at,"
            " started_at, finished_at)"
            " SELECT r.app_id, r.stage_id, r.id, 'deploy', 'succeeded', '', r.commit_sha, 'main',"
            " r.commit_message, 'Ada Lovelace', '', '', 'webhook:github', false, false, '', '', 0, '',"
            " r.created_at, r.created_at + interval '5 second', r.created_at + interval '50 second'"
            f" FROM {table(Release)} r ORDER BY r.id"
        )
        cur.execute(
            f"INSERT INTO {table(RegionDeployment)} (deployment_id, region_id, status, wave, version,"  # noqa: S608
            " previous_version, step, attempts, error, error_code, dns_record, started_at, finished_at)"
            " SELECT d.id, g.id, 'succeeded', 0, '1', '', 'prune', 1, '', '', '{}', d.started_at,"
            " d.finished_at"
            f" FROM {table(Deployment)} d CROSS JOIN {table(Region)} g"
        )
        # Each stage serves its newest release everywhere.
        cur.execute(
            f"INSERT INTO {table(StagePlacement)} (placement_id, stage_id, version, release_id, endpoint_url,"  # noqa: S608
            " health_check_id, health_status, consecutive_failures, consecutive_successes, last_probe_at,"
            " last_latency_ms, route53_status, updated_at)"
            " SELECT p.id, s.id, '1', (SELECT max(r.id) FROM "
            + table(Release)
            + " r WHERE r.stage_id = s.id),"
            " '', '', 'up', 0, 5, now(), 42, '', now()"
            f" FROM {table(AppRegion)} p JOIN {table(Stage)} s ON s.app_id = p.app_id"
        )
        measured = list(
            StagePlacement.objects.filter(placement__app=app_rows[0]).values_list("pk", flat=True)
        )
        dense = len(measured) * 30 * 86400 // PROBE_EVERY_S
        # The measured app: a probe every 30 s for 30 days in each of its placements.
        cur.execute(
            f"INSERT INTO {table(Probe)} (stage_placement_id, ok, status_code, latency_ms, error, created_at)"  # noqa: S608
            " SELECT sp, (i %% 500) <> 0, 200, 20 + (i %% 37), '', now() - (i * interval '%s second')"
            " FROM unnest(%s::bigint[]) sp, generate_series(1, %s) i",
            [PROBE_EVERY_S, measured, 30 * 86400 // PROBE_EVERY_S],
        )
        # Everyone else: the rest of the probes, spread over a year, round-robin over the placements.
        others = max(0, probes - dense)
        every = list(StagePlacement.objects.order_by("id").values_list("pk", flat=True))
        step_ms = 365 * 86400 * 1000 // max(1, others)
        cur.execute(
            f"INSERT INTO {table(Probe)} (stage_placement_id, ok, status_code, latency_ms, error, created_at)"  # noqa: S608
            " SELECT (%s::bigint[])[1 + (i %% %s)], true, 200, 30, '',"
            " now() - (i::bigint * %s * interval '1 millisecond')"
            " FROM generate_series(0, %s - 1) i",
            [every, len(every), step_ms, others],
        )
        # Statistics of every table filled here, as autovacuum would have them on a live installation
        # (with stale ones the planner joins every release of an app to find one page of them).
        cur.execute("ANALYZE")
    first = app_rows[0]
    newest = Deployment.objects.filter(app=first).latest("id")
    DeploymentEvent.objects.bulk_create(
        DeploymentEvent(
            deployment=newest, region=regions[i % 3], seq=i + 1, step="alias", message=f"line {i}"
        )
        for i in range(300)
    )
    sp = StagePlacement.objects.filter(placement__app=first).first()
    Incident.objects.create(stage_placement=sp, opened_at=newest.created_at, closed_at=newest.finished_at)
    print(
        f"populated in {time.perf_counter() - started:.0f} s: {App.objects.count()} apps, "
        f"{Deployment.objects.count():,} deployments, "
        f"{RegionDeployment.objects.count():,} region deployments, "
        f"{Probe.objects.count():,} probes",
        flush=True,
    )
    return {"user": user, "app": first.slug, "deployment": newest.pk, "placements": measured}


def existing() -> dict | None:
    """What ``populate`` returned, read back from a kept database (None when it is empty)."""
    from django.contrib.auth import get_user_model

    from deployments.models import App, Deployment
    from regions.models import StagePlacement

    first = App.objects.order_by("id").first()
    if first is None:
        return None
    return {
        "user": get_user_model().objects.get(username="bench"),
        "app": first.slug,
        "deployment": Deployment.objects.filter(app=first).latest("id").pk,
        "placements": list(StagePlacement.objects.filter(placement__app=first).values_list("pk", flat=True)),
    }


def measure(client: Client, path: str, runs: int) -> dict:
    for _ in range(3):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code)
    statements = []

    def count(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count):  # the request resets Django's own query log
        client.get(path)
    in_db = [0.0]

    def timed_sql(execute, sql, params, many, context):
        began = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            in_db[0] += time.perf_counter() - began

    walls, cpus, dbs = [], [], []
    with connection.execute_wrapper(timed_sql):
        for _ in range(runs):
            in_db[0] = 0.0
            w, c = time.perf_counter(), time.process_time()
            client.get(path)
            walls.append((time.perf_counter() - w) * 1000)
            cpus.append((time.process_time() - c) * 1000)
            dbs.append(in_db[0] * 1000)
    walls.sort()
    return {
        "p50": statistics.median(walls),
        "p95": walls[max(0, int(len(walls) * 0.95) - 1)],
        "cpu": statistics.median(cpus),
        "cpu_p95": sorted(cpus)[max(0, int(len(cpus) * 0.95) - 1)],
        "db": statistics.median(dbs),
        "queries": len(statements),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=100_000)
    parser.add_argument("--probes", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--profile", metavar="PAGE", help="print a profile of one request of PAGE (a path)")
    parser.add_argument("--quick", action="store_true", help="20,000 deployments, 1,000,000 probes, 20 runs")
    parser.add_argument(
        "--keepdb", action="store_true", help="populate a fixed database once and keep it for the next run"
    )
    args = parser.parse_args()
    if args.quick:
        args.deployments = min(args.deployments, 20_000)
        args.probes, args.runs = min(args.probes, 1_000_000), min(args.runs, 20)
    if connection.vendor != "postgresql":
        print("bench/ui.py runs on PostgreSQL only (set DATABASE_URL): its data is made with set-based SQL.")
        return 0
    # Nothing is serialized for test-case rollbacks: a kept database holds millions of rows.
    state = setup_databases(verbosity=0, interactive=False, keepdb=args.keepdb, serialized_aliases=set())
    try:
        data = existing() if args.keepdb else None
        data = data or populate(apps=args.apps, deployments=args.deployments, probes=args.probes)
        from regions import history

        client = Client()
        client.force_login(data["user"])
        app = data["app"]
        pages = {
            f"apps list ({args.apps} apps)": "/",
            "app detail": f"/apps/{app}/",
            "deployments (page 1)": f"/apps/{app}/deployments/",
            "deployments (page 20)": f"/apps/{app}/deployments/?page=20",
            "deployment detail": f"/deployments/{data['deployment']}/",
            "health (day)": f"/apps/{app}/health/",
            "health (week)": f"/apps/{app}/health/?window=week",
            "alert channels": "/team/channels/",
            "audit log": "/team/audit/",
        }
        if args.profile:
            import cProfile
            import pstats

            client.get(args.profile.replace("APP", app))
            profiler = cProfile.Profile()
            profiler.runcall(client.get, args.profile.replace("APP", app))
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(15)
            return 0
        failed = False
        print(f"load average {os.getloadavg()[0]:.2f} on {len(os.sched_getaffinity(0))} cores")
        print(
            f"\n{'page':28} {'p50 ms':>8} {'p95 ms':>8} {'CPU ms':>8} {'CPU p95':>8} {'SQL ms':>8} "
            f"{'queries':>8}"
        )
        for name, path in pages.items():
            m = measure(client, path, args.runs)
            ok = m["p95"] <= PAGE_P95_MS and m["queries"] <= PAGE_QUERIES
            failed |= not ok
            print(
                f"{name:28} {m['p50']:8.1f} {m['p95']:8.1f} {m['cpu']:8.1f} {m['cpu_p95']:8.1f} "
                f"{m['db']:8.1f} {m['queries']:8d}  {'PASS' if ok else 'FAIL'}",
                flush=True,
            )
        walls, cpus = [], []
        for _ in range(args.runs):
            w, c = time.perf_counter(), time.process_time()
            series = history.latency_series(data["placements"], window="week")
            walls.append((time.perf_counter() - w) * 1000)
            cpus.append((time.process_time() - c) * 1000)
        walls.sort()
        p95 = walls[max(0, int(len(walls) * 0.95) - 1)]
        rows = sum(s.probes for s in series.values())
        ok = p95 <= CHART_P95_MS
        failed |= not ok
        print(
            f"\nhealth chart query (week, {len(series)} placements, {rows:,} probes in window): "
            f"p50 {statistics.median(walls):.1f} ms, p95 {p95:.1f} ms, CPU {statistics.median(cpus):.1f} ms  "
            f"{'PASS' if ok else 'FAIL'} (target {CHART_P95_MS:.0f} ms)"
        )
        print(
            f"targets: page p95 <= {PAGE_P95_MS:.0f} ms and <= {PAGE_QUERIES} queries. CPU: this process "
            "(Django), medians and p95; SQL: wall time in the database calls (median); load average "
            f"now {os.getloadavg()[0]:.2f}"
        )
        return 1 if (failed and args.strict) else 0
    finally:
        connection.close()
        if not args.keepdb:
            teardown_databases(state, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
