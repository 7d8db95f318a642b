"""Big histories through the REST API: an installation of 100 apps whose deployment log holds
``--deployments`` deployments (1,000,000 at full size; each with its release, 3 region
deployments and 3 log lines), one of them with a 10,000-line log. Measured, in-process through
Django's test client with a Bearer token (authentication, views, serializers, pagination: the
server's work, no network), p50/p99 server time, the process's CPU, and the SQL statements of
one request:

- the deployments list of an app: the first page, a cursor page deep in the history (90 % of the
  way back), ``?sha=<7 hex>`` and ``?status=failed`` (a rare status) / ``?status=succeeded``;
- ``events/?after=`` of the deployment with 10,000 lines, half way in;
- the release list (first page) and a release diff.

Targets: lists p99 <= 50 ms and <= 5 queries; events p99 <= 20 ms; release list and diff
<= 50 ms. ``--explain`` prints EXPLAIN (ANALYZE, BUFFERS) of each request's statements.

PostgreSQL only (set DATABASE_URL): a throwaway database is created and dropped. The data is
made with set-based SQL (INSERT ... SELECT generate_series); the time it took is printed.

    python bench/history.py [--deployments 20000] [--apps 100] [--runs 100] [--explain] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONTROLPLANE_DATA_DIR", tempfile.mkdtemp(prefix="controlplane-bench-"))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
os.environ["CONTROLPLANE_TEST_RUN"] = uuid.uuid4().hex[:8]
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["DEBUG"] = "false"

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402
from django.test.utils import setup_databases, teardown_databases  # noqa: E402
from rest_framework.test import APIClient  # noqa: E402

LIST_P99_MS = 50.0
LIST_QUERIES = 5
EVENTS_P99_MS = 20.0
RELEASES_MS = 50.0
REGIONS = ("eu-west-1", "us-east-1", "ap-southeast-2")
LONG_LOG = 10_000  # lines of the one deployment whose log is followed
STATUSES = "CASE WHEN n %% 97 = 0 THEN 'failed' WHEN n %% 211 = 0 THEN 'cancelled' ELSE 'succeeded' END"


def table(model) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def populate(*, apps: int, deployments: int) -> dict:
    """The installation, with set-based SQL (row by row, a million deployments would take hours)."""
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
    from regions.models import AppRegion, Region, StagePlacement
    from tests.factories import ApiTokenFactory, TeamFactory

    started = time.perf_counter()
    steps: list[tuple[str, float]] = []

    def step(name: str, sql: str, params=()) -> None:
        t = time.perf_counter()
        with connection.cursor() as cur:
            cur.execute(sql, params)
        steps.append((name, time.perf_counter() - t))

    team = TeamFactory(slug="acme", name="Acme")
    token = ApiTokenFactory(team=team, role=Role.ADMIN)
    regions = [Region.objects.get_or_create(code=code)[0] for code in REGIONS]
    app_rows = App.objects.bulk_create(
        App(team=team, slug=f"app{n:03d}", name=f"App {n}", runtime="python3.12", handler="app.handler")
        for n in range(apps)
    )
    AppRegion.objects.bulk_create(AppRegion(app=a, region=r) for a in app_rows for r in regions)
    Stage.objects.bulk_create(Stage(app=a, name="production") for a in app_rows)
    Artifact.objects.bulk_create(
        Artifact(app=a, sha256=f"{a.pk:032d}{i:032d}", size=1000) for a in app_rows for i in range(2)
    )
    per_stage = max(2, deployments // apps)
    # Releases 1..per_stage of every stage (artifacts alternate), then one deployment of each, a
    # minute apart, interleaved across apps as a busy installation's are (ids in time order).
    step(
        "releases",
        f"INSERT INTO {table(Release)} (app_id, stage_id, number, artifact_id, config, env_snapshot,"  # noqa: S608
        " env_secret_keys, commit_sha, commit_branch, commit_message, commit_author, commit_url,"
        " created_by, created_at)"
        " SELECT s.app_id, s.id, n, (SELECT min(a.id) FROM "
        + table(Artifact)
        + " a WHERE a.app_id = s.app_id)"
        " + n %% 2, '{}', %s, '[]', md5(s.id::text || ':' || n::text), 'main', 'Change number ' || n,"
        " 'Ada Lovelace', '', 'user:bench', now() - ((%s - n) * interval '1 minute')"
        f" FROM generate_series(1, %s) n, {table(Stage)} s ORDER BY n, s.id",
        [encrypt("{}"), per_stage, per_stage],
    )
    step(
        "deployments",
        f"INSERT INTO {table(Deployment)} (app_id, stage_id, release_id, kind, status, ref, commit_sha,"  # noqa: S608
        " commit_branch, commit_message, commit_author, commit_url, compare_url, triggered_by, force,"
        " cancel_requested, idempotency_key, request_fingerprint, last_seq, error, created_at,"
        " started_at, finished_at)"
        " SELECT r.app_id, r.stage_id, r.id, 'deploy', " + STATUSES.replace("n %%", "r.number %%") + ","
        " '', r.commit_sha, 'main', r.commit_message, 'Ada Lovelace', '', '', 'webhook:github', false,"
        " false, '', '', 3, '', r.created_at, r.created_at + interval '5 second',"
        " r.created_at + interval '50 second'"
        f" FROM {table(Release)} r ORDER BY r.id",
    )
    step(
        "region deployments",
        f"INSERT INTO {table(RegionDeployment)} (deployment_id, region_id, status, wave, version,"  # noqa: S608
        " previous_version, step, attempts, error, error_code, started_at, finished_at, dns_record)"
        " SELECT d.id, g.id, 'succeeded', 0, '1', '', 'prune', 1, '', '', d.started_at, d.finished_at, '{}'"
        f" FROM {table(Deployment)} d CROSS JOIN {table(Region)} g",
    )
    step(
        "events",
        f"INSERT INTO {table(DeploymentEvent)} (deployment_id, region_id, seq, level, step, message,"  # noqa: S608
        " duration_ms, created_at)"
        " SELECT d.id, CASE WHEN k = 1 THEN NULL ELSE %s END, k, 'info',"
        " CASE WHEN k = 1 THEN 'queue' ELSE 'alias' END, 'Line ' || k || ' of deployment ' || d.id,"
        f" 100, d.created_at + k * interval '1 second' FROM {table(Deployment)} d, generate_series(1, 3) k",
        [regions[0].pk],
    )
    step(
        "placements",
        f"INSERT INTO {table(StagePlacement)} (placement_id, stage_id, version, release_id, endpoint_url,"  # noqa: S608
        " health_check_id, health_status, consecutive_failures, consecutive_successes, last_probe_at,"
        " last_latency_ms, route53_status, updated_at)"
        " SELECT p.id, s.id, '1', (SELECT max(r.id) FROM " + table(Release) + " r WHERE r.stage_id = s.id),"
        " '', '', 'up', 0, 5, now(), 42, '', now()"
        f" FROM {table(AppRegion)} p JOIN {table(Stage)} s ON s.app_id = p.app_id",
    )
    first = app_rows[0]
    newest = Deployment.objects.filter(app=first).order_by("-id").first()
    step(
        "long log",
        f"INSERT INTO {table(DeploymentEvent)} (deployment_id, region_id, seq, level, step, message,"  # noqa: S608
        " duration_ms, created_at)"
        " SELECT %s, %s, k, 'info', 'alias', 'Line ' || k, 10, now() FROM generate_series(4, %s) k",
        [newest.pk, regions[1].pk, LONG_LOG],
    )
    Deployment.objects.filter(pk=newest.pk).update(last_seq=LONG_LOG)
    step("analyze", "ANALYZE")
    total = Deployment.objects.count()
    print(
        f"seeded in {time.perf_counter() - started:.1f} s: {apps} apps, {total:,} deployments, "
        f"{RegionDeployment.objects.count():,} region deployments, "
        f"{DeploymentEvent.objects.count():,} events ("
        + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in steps)
        + ")",
        flush=True,
    )
    ids = list(Deployment.objects.filter(app=first).order_by("-id").values_list("id", flat=True))
    deep = ids[int(len(ids) * 0.9)]
    sha = Deployment.objects.get(pk=ids[len(ids) // 2]).commit_sha[:7]
    release = Release.objects.filter(app=first).order_by("-id").first()
    return {"token": token.raw, "app": first.slug, "deep": deep, "sha": sha, "long": newest.pk,
            "release": release.pk, "count": len(ids)}  # fmt: skip


def cursor_before(path: str, before_id: int) -> str:
    """The list's URL with a cursor whose page starts just below ``before_id``, encoded as the
    list encodes the ``next`` links it hands out (what a client paging back this far holds)."""
    import base64
    from urllib.parse import urlencode

    raw = base64.b64encode(urlencode({"p": str(before_id)}).encode()).decode()
    return f"{path}?{urlencode({'cursor': raw})}"


def measure(client: APIClient, path: str, runs: int) -> dict:
    for _ in range(3):
        response = client.get(path)
        assert response.status_code == 200, (path, response.status_code, response.content[:300])
    statements: list[tuple[str, tuple]] = []

    def record(execute, sql, params, many, context):
        statements.append((sql, params))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):  # each request resets Django's own query log
        response = client.get(path)
    body = response.json()
    rows = len(body["results"]) if isinstance(body, dict) and "results" in body else None
    walls, cpus = [], []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        client.get(path)
        walls.append((time.perf_counter() - w) * 1000)
        cpus.append((time.process_time() - c) * 1000)
    walls.sort()
    return {
        "p50": statistics.median(walls),
        "p99": walls[min(len(walls) - 1, max(0, int(len(walls) * 0.99) - 1))],
        "cpu": statistics.median(cpus),
        "queries": statements,
        "rows": rows,
    }


def explain(statements: list[tuple[str, tuple]]) -> None:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement of a request that reads a big table."""
    big = re.compile(r'"deployments_(deployment|regiondeployment|deploymentevent|release)"')
    with connection.cursor() as cur:
        for sql, params in statements:
            if not sql.lstrip().upper().startswith("SELECT") or not big.search(sql):
                continue
            cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
            shown = cur.db.ops.last_executed_query(cur.cursor, sql, params) or sql
            print("    " + shown[:400] + (" ..." if len(shown) > 400 else ""))
            for (line,) in cur.fetchall():
                print("      " + line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--apps", type=int, default=100)
    parser.add_argument("--deployments", type=int, default=20_000, help="full size: 1000000")
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS)")
    parser.add_argument("--quick", action="store_true", help="20,000 deployments, 50 runs")
    parser.add_argument("--profile", metavar="N", type=int, help="profile request N (1-based) instead")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args()
    if args.quick:
        args.deployments, args.runs = min(args.deployments, 20_000), min(args.runs, 50)
    if connection.vendor != "postgresql":
        print(
            "bench/history.py runs on PostgreSQL only (set DATABASE_URL): its data is made with "
            "set-based SQL."
        )
        return 0
    state = setup_databases(verbosity=0, interactive=False)
    try:
        data = populate(apps=args.apps, deployments=args.deployments)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {data['token']}")
        listing = f"/api/v1/apps/{data['app']}/deployments/"
        checks = [
            ("deployments, first page", listing, LIST_P99_MS, LIST_QUERIES),
            (f"deployments, cursor {90}% back", cursor_before(listing, data["deep"]), LIST_P99_MS,
             LIST_QUERIES),
            ("deployments ?sha=", f"{listing}?sha={data['sha']}", LIST_P99_MS, LIST_QUERIES),
            ("deployments ?status=failed", f"{listing}?status=failed", LIST_P99_MS, LIST_QUERIES),
            ("deployments ?status=succeeded", f"{listing}?status=succeeded", LIST_P99_MS, LIST_QUERIES),
            (f"events ?after= ({LONG_LOG:,} lines)",
             f"/api/v1/deployments/{data['long']}/events/?after={LONG_LOG // 2}&limit=500",
             EVENTS_P99_MS, None),
            ("release list", f"/api/v1/apps/{data['app']}/releases/", RELEASES_MS, None),
            ("release diff", f"/api/v1/releases/{data['release']}/diff/", RELEASES_MS, None),
        ]  # fmt: skip
        print(f"\none app: {data['count']:,} deployments; {args.runs} requests each, after 3 warm-ups")
        print(f"{'request':32} {'p50 ms':>8} {'p99 ms':>8} {'CPU ms':>8} {'queries':>8} {'rows':>5}  target")
        failed = False
        if args.profile:
            import cProfile
            import pstats

            path = checks[args.profile - 1][1]
            client.get(path)
            profiler = cProfile.Profile()
            profiler.runcall(client.get, path)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
            pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
            return 0
        for name, path, target_ms, max_queries in checks:
            m = measure(client, path, args.runs)
            counts = any("COUNT(" in sql.upper() for sql, _ in m["queries"] if "deployments_" in sql)
            ok = m["p99"] <= target_ms and (max_queries is None or len(m["queries"]) <= max_queries)
            ok &= not counts
            failed |= not ok
            goal = f"p99 <= {target_ms:.0f} ms" + (f", <= {max_queries} queries" if max_queries else "")
            print(
                f"{name:32} {m['p50']:8.1f} {m['p99']:8.1f} {m['cpu']:8.1f} {len(m['queries']):8d} "
                f"{m['rows'] if m['rows'] is not None else '-':>5}  {goal}{' COUNT!' if counts else ''}  "
                f"{'PASS' if ok else 'FAIL'}",
                flush=True,
            )
            if args.explain:
                explain(m["queries"])
        print(
            "server time: in-process (test client), this process's CPU; the database server's CPU "
            "is not in it"
        )
        return 1 if (failed and args.strict) else 0
    finally:
        connection.close()
        teardown_databases(state, verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
