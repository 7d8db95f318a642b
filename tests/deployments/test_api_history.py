"""A long deployment history through the API: cursor pages deep in it cost a fixed handful of
queries and never count the table; the ``sha`` and ``status`` filters find the right rows; the
release list reads where each release is live in one query; a log page reads as it always did."""

from __future__ import annotations

import pytest
from django.db import connection, reset_queries
from django.test.utils import CaptureQueriesContext

from controlplane.choices import Role
from deployments.choices import DeploymentStatus
from deployments.engine.releases import commit_fields
from deployments.models import Artifact, Deployment, DeploymentEvent, RegionDeployment, Release
from regions.models import StagePlacement
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory

HISTORY = 90
STATUS_OF = {0: DeploymentStatus.FAILED, 1: DeploymentStatus.CANCELLED}  # n % 7 -> status, else succeeded


def sha_of(app_slug: str, n: int) -> str:
    """A distinct commit per app and n; the apps' shas never share a 7-character prefix."""
    return f"{'a' if app_slug == 'shop' else 'b'}{n:06x}".ljust(40, "c")


def make_history(app, stage, regions) -> list[Deployment]:
    artifact = Artifact.objects.create(app=app, sha256=f"{app.pk:064d}", size=10)
    deployments = []
    for n in range(HISTORY):
        release = Release.objects.create(
            app=app, stage=stage, number=n + 1, artifact=artifact, env_snapshot="{}",
            **commit_fields({"sha": sha_of(app.slug, n), "message": f"change {n}"}),
        )  # fmt: skip
        deployments.append(
            Deployment(
                app=app,
                stage=stage,
                release=release,
                triggered_by="webhook:github",
                status=STATUS_OF.get(n % 7, DeploymentStatus.SUCCEEDED),
                **commit_fields({"sha": sha_of(app.slug, n), "message": f"change {n}"}),
            )  # fmt: skip
        )
    deployments = Deployment.objects.bulk_create(deployments)
    RegionDeployment.objects.bulk_create(
        RegionDeployment(deployment=d, region=r, status="succeeded", version="1")
        for d in deployments
        for r in regions
    )
    return deployments


@pytest.fixture
def history(team):
    regions = [RegionFactory(code=code) for code in ("eu-west-1", "us-east-1")]
    app = AppFactory(team=team, slug="shop")
    other = AppFactory(team=team, slug="blog")  # its deployments interleave with shop's ids
    for a in (app, other):
        for region in regions:
            AppRegionFactory(app=a, region=region)
    stage, other_stage = StageFactory(app=app), StageFactory(app=other)
    mine = make_history(app, stage, regions)
    theirs = make_history(other, other_stage, regions)
    return {"app": app, "mine": mine, "theirs": theirs, "regions": regions}


def get_captured(client, path):
    reset_queries()  # a request empties Django's query log when it starts: capture from zero
    with CaptureQueriesContext(connection) as captured:
        answer = client.get(path)
    assert answer.status_code == 200, answer.content
    return answer.json(), [q["sql"] for q in captured.captured_queries]


def test_a_cursor_page_deep_in_the_history_takes_five_queries_and_counts_nothing(api_for, team, history):
    client = api_for(team, role=Role.VIEWER)
    path = "/api/v1/apps/shop/deployments/?limit=10"
    seen = []
    for _ in range(6):  # follow the list's own next links six pages back
        page, statements = get_captured(client, path)
        seen += [d["id"] for d in page["results"]]
        path = page["next"]

    page, statements = get_captured(client, path)

    expected = sorted((d.pk for d in history["mine"]), reverse=True)
    assert seen + [d["id"] for d in page["results"]] == expected[:70]
    assert {d["app"] for d in page["results"]} == {"shop"}
    assert all(len(d["regions"]) == 2 for d in page["results"])
    assert len(statements) <= 5, statements
    assert not [sql for sql in statements if "COUNT(" in sql.upper()]


def test_the_first_page_with_every_region_and_release_takes_five_queries(api_for, team, history):
    page, statements = get_captured(api_for(team, role=Role.VIEWER), "/api/v1/apps/shop/deployments/")

    assert len(page["results"]) == 50
    newest = page["results"][0]
    assert newest["release"]["number"] == HISTORY
    assert newest["release"]["artifact_sha256"] == f"{history['app'].pk:064d}"
    assert newest["commit"]["sha"] == sha_of("shop", HISTORY - 1)
    assert [r["region"] for r in newest["regions"]] == ["eu-west-1", "us-east-1"]
    assert newest["regions"][0]["started_at"] is None and newest["regions"][0]["version"] == "1"
    assert len(statements) <= 5, statements
    assert not [sql for sql in statements if "COUNT(" in sql.upper()]


@pytest.mark.parametrize("given", ["lower", "upper"])
def test_the_sha_filter_finds_this_apps_deployments_of_a_commit_by_prefix(api_for, team, history, given):
    target = history["mine"][40]
    prefix = target.commit_sha[:7]
    prefix = prefix.upper() if given == "upper" else prefix

    page, statements = get_captured(
        api_for(team, role=Role.VIEWER), f"/api/v1/apps/shop/deployments/?sha={prefix}"
    )

    assert [d["id"] for d in page["results"]] == [target.pk]
    assert len(statements) <= 5


def test_a_sha_given_in_capitals_is_stored_as_git_spells_it():
    fields = commit_fields({"sha": "ABCDEF0123456789ABCDEF0123456789ABCDEF01"})

    assert fields["commit_sha"] == "abcdef0123456789abcdef0123456789abcdef01"


@pytest.mark.parametrize(
    "status", [DeploymentStatus.FAILED, DeploymentStatus.CANCELLED, DeploymentStatus.SUCCEEDED]
)
def test_the_status_filter_returns_exactly_the_deployments_in_that_status(api_for, team, history, status):
    client = api_for(team, role=Role.VIEWER)
    path, ids = f"/api/v1/apps/shop/deployments/?status={status}&limit=20", []
    while path:
        page, statements = get_captured(client, path)
        assert len(statements) <= 5
        ids += [d["id"] for d in page["results"]]
        assert {d["status"] for d in page["results"]} <= {status}
        path = page["next"]

    expected = sorted((d.pk for d in history["mine"] if d.status == status), reverse=True)
    assert ids == expected and expected


def test_the_release_list_reads_where_releases_are_live_in_one_query(api_for, team, history):
    app = history["app"]
    newest = Release.objects.filter(app=app).order_by("-id")[:2]
    for release, placement in zip(newest, app.placements.order_by("region__code"), strict=True):
        StagePlacement.objects.create(placement=placement, stage=release.stage, release=release, version="1")
    client = api_for(team, role=Role.VIEWER)
    client.get("/api/v1/apps/shop/releases/?limit=1")  # the token's first use is recorded once

    short, few = get_captured(client, "/api/v1/apps/shop/releases/?limit=5")
    page, many = get_captured(client, "/api/v1/apps/shop/releases/?limit=50")

    assert len(page["results"]) == 50
    assert page["results"][0]["live_in"] == ["eu-west-1"]
    assert page["results"][1]["live_in"] == ["us-east-1"]
    assert all(r["live_in"] == [] for r in page["results"][2:])
    assert len(many) == len(few) <= 5


def test_a_log_page_after_a_seq_shows_each_line_as_before(api_for, team, history):
    deployment = history["mine"][-1]
    region = history["regions"][0]
    DeploymentEvent.objects.bulk_create(
        DeploymentEvent(
            deployment=deployment,
            seq=n,
            region=region if n % 2 else None,
            step="alias",
            message=f"line {n}",
            duration_ms=n if n % 3 == 0 else None,
        )  # fmt: skip
        for n in range(1, 31)
    )

    page, statements = get_captured(
        api_for(team, role=Role.VIEWER), f"/api/v1/deployments/{deployment.pk}/events/?after=10&limit=5"
    )

    assert [e["seq"] for e in page["results"]] == [11, 12, 13, 14, 15]
    first = page["results"][0]
    stored = DeploymentEvent.objects.get(deployment=deployment, seq=11)
    assert first == {
        "seq": 11, "created_at": stored.created_at.isoformat().replace("+00:00", "Z"), "level": "info",
        "region": "eu-west-1", "step": "alias", "message": "line 11", "duration_ms": None,
    }  # fmt: skip
    assert page["results"][1]["region"] is None and page["results"][1]["duration_ms"] == 12
    assert page["last_seq"] == 15
    assert len(statements) <= 5


@pytest.mark.django_db(transaction=True)
def test_shas_written_in_capitals_before_are_lowercased_by_the_migration():
    from django.db.migrations.executor import MigrationExecutor

    executor = MigrationExecutor(connection)
    executor.migrate([("deployments", "0012_history_indexes")])
    old = executor.loader.project_state([("deployments", "0012_history_indexes")]).apps
    team = old.get_model("controlplane", "Team").objects.create(slug="old", name="Old")
    app = old.get_model("deployments", "App").objects.create(team=team, slug="old", runtime="python3.12")
    stage = old.get_model("deployments", "Stage").objects.create(app=app, name="production")
    old.get_model("deployments", "Deployment").objects.create(
        app=app, stage=stage, commit_sha="ABCDEF0123456789ABCDEF0123456789ABCDEF01", triggered_by="t"
    )

    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())

    assert Deployment.objects.get(app__slug="old").commit_sha == "abcdef0123456789abcdef0123456789abcdef01"
