"""The main job end to end on one machine: deploys through the API and a real worker to moto, the
local regions running the deployed code, verify and health probes against it, incidents and
alerts, the global endpoint's latency routing and failover, and a canary's traffic split."""

from __future__ import annotations

import json
import time
from collections import Counter

import httpx
import pytest
from celery.exceptions import TimeoutError as CeleryTimeout
from django.conf import settings as django_settings

from controlplane.choices import Role
from deployments.choices import ACTIVE_DEPLOYMENT_STATUSES, DeploymentStatus
from deployments.models import Deployment
from regions.models import Incident, StagePlacement
from tests.factories import AppFactory, AppRegionFactory, EnvVarFactory, RegionFactory, StageFactory
from tests.support.alerting import make_channel
from tests.support.deploys import boto, deploy, upload, wait_finished
from tests.support.localregions import LocalRegionsProcess, zip_of
from tests.support.processes import WorkerProcess, wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]
RESOLVER = "regions.local.endpoints.local_endpoint"
PYTHON_APP = """
import json, os
def handler(event, context):
    print("serving", event["path"])
    body = {"region": os.environ["AWS_REGION"], "greeting": os.environ["GREETING"],
            "version": context.function_version, "path": event["path"]}
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
"""


@pytest.fixture(scope="module")
def local_regions(moto_server):
    process = LocalRegionsProcess(aws_url=moto_server.url).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def regions_worker(django_db_setup, django_db_blocker, moto_server, local_regions):
    """A worker on a queue of its own that reaches the regions only through the local regions
    (no endpoint overrides), and the test process sending its tasks there."""
    from controlplane.celery import app as celery_app

    queue = f"{django_settings.CELERY_TASK_DEFAULT_QUEUE}-local-regions"
    previous = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    worker = WorkerProcess(
        name="localregions",
        queue=queue,
        concurrency=8,
        env={
            "CONTROLPLANE_TEST_QUEUE": queue,
            "AWS_ENDPOINT_URL": moto_server.url,
            "ENDPOINT_OVERRIDES": "{}",
            "ENDPOINT_RESOLVER": RESOLVER,
            "LOCAL_REGIONS_PORT": str(local_regions.base),
            "DEPLOY_VERIFY_INTERVAL": "0.2",
            "AWS_MAX_ATTEMPTS": "3",
        },
    ).start()
    yield worker
    worker.stop()
    celery_app.conf.task_default_queue = previous


@pytest.fixture
def local_settings(settings, local_regions):
    settings.REQUEUE_AFTER = 3  # the reaper resends work lost by the broker after 3 s, not 60
    settings.ENDPOINT_RESOLVER = RESOLVER
    settings.ENDPOINT_OVERRIDES = {}
    settings.LOCAL_REGIONS_PORT = local_regions.base
    settings.GLOBAL_ENDPOINT_URL = f"{local_regions.url}/{{domain}}"
    return settings


def make_app(team, aws, *, slug: str, regions: list[str], domain: str = "", **kwargs):
    app = AppFactory(team=team, slug=slug, health_path="/health", **kwargs)
    for code in regions:
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    zone = ""
    if domain:
        route53 = boto("route53", "us-east-1", aws)
        zone = route53.create_hosted_zone(Name=domain.split(".", 1)[1], CallerReference=slug)["HostedZone"][
            "Id"
        ]
    StageFactory(app=app, name="production", domain=domain, hosted_zone_id=zone.split("/")[-1])
    return app


def served_by(url: str, client_region: str) -> str:
    response = httpx.get(url + "/where", headers={"X-Client-Region": client_region}, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["region"] == response.headers["x-served-by-region"]
    return response.headers["x-served-by-region"]


def probe_round(app, worker) -> dict:
    from workers.tasks import probe_all

    # The file broker can lose a message (its consumer may take a file before the sender has
    # written it); beat sends a round every interval, so a lost round is sent again here.
    for _ in range(3):
        StagePlacement.objects.filter(placement__app=app).update(last_probe_at=None)  # due now
        try:
            return probe_all.delay().get(timeout=20)
        except CeleryTimeout:
            continue
    raise AssertionError(f"no probe round finished\n{worker.log()}")


def finished(pk: int) -> Deployment:
    """The deployment once it ends; what the reaper does every minute (resend work whose message
    was lost) is done every two seconds meanwhile."""
    from deployments.engine.reaper import reap

    def done():
        reap()
        return _ended(pk) and wait_finished(pk, timeout=10)

    return wait_for(done, timeout=150, interval=2, message=f"deployment {pk} to finish")


def _ended(pk: int) -> bool:
    return not Deployment.objects.filter(pk=pk, status__in=ACTIVE_DEPLOYMENT_STATUSES).exists()


def delivered(slack, title: str, *, timeout: float = 60) -> None:
    """Wait for a Slack message titled ``title``, resending lost deliveries as beat would."""
    from controlplane.notify import requeue_stale_notifications

    def seen():
        if title in alerts(slack):
            return True
        requeue_stale_notifications(grace_s=5)
        return False

    wait_for(seen, timeout=timeout, interval=1, message=f"the Slack message {title!r}")


def test_deploy_runs_the_code_in_every_region_and_the_global_endpoint_fails_over_and_back(
    team, api_for, aws, regions_worker, local_regions, local_settings, slack
):
    app = make_app(team, aws, slug="shop", regions=REGIONS, domain="shop.example.com")
    EnvVarFactory(app=app, key="GREETING", value="hello")
    EnvVarFactory(
        app=app, key="GREETING", value="bonjour", region=app.placements.get(region__code="eu-west-1").region
    )
    make_channel(team, "slack", slack.url + "/services/T/B/local")
    client = api_for(team, role=Role.DEPLOYER)

    started = deploy(client, app, "production", upload(client, app, zip_of({"app.py": PYTHON_APP})))
    deployment = finished(started["id"])
    assert deployment.status == DeploymentStatus.SUCCEEDED, deployment.error
    verified = [e.message for e in deployment.events.filter(step="verify")]
    for code in REGIONS:
        assert any(m.startswith(f"{code}: Healthy: {local_regions.region_url(code)}/") for m in verified), (
            verified
        )

    # The API shows URLs that answer on this machine, each from its own region's code and env.
    regions = client.get(f"/api/v1/apps/{app.slug}/").json()["regions"]
    assert {r["region"] for r in regions} == set(REGIONS)
    for row in regions:
        endpoint = row["stages"]["production"]["endpoint"]
        assert endpoint.startswith(local_regions.region_url(row["region"]) + "/")
        assert row["endpoint"] == endpoint.rsplit("/", 1)[0]
        answer = httpx.get(endpoint + "/hello", timeout=10).json()
        greeting = "bonjour" if row["region"] == "eu-west-1" else "hello"
        assert answer == {"region": row["region"], "greeting": greeting, "version": "1", "path": "/hello"}
    local_regions.wait_log("[eu-west-1 acme-shop:1] serving /hello")

    stage = client.get(f"/api/v1/apps/{app.slug}/stages/production/").json()
    global_url = stage["global_url"]
    assert global_url == f"{local_regions.url}/shop.example.com"
    assert served_by(global_url, "eu-central-1") == "eu-west-1"
    assert served_by(global_url, "us-west-2") == "us-east-1"
    assert served_by(global_url, "ap-northeast-1") == "ap-southeast-2"
    headers = {"Host": "shop.example.com", "X-Client-Region": "eu-north-1"}
    by_host = httpx.get(local_regions.url + "/where", headers=headers, timeout=10)
    assert by_host.headers["x-served-by-region"] == "eu-west-1"

    # Ireland goes down: Route 53's checkers (0.5 s apart, threshold 3) take it out of the answers.
    assert probe_round(app, regions_worker)["healthy"] == 3
    down_at = time.monotonic()
    local_regions.fault(region="eu-west-1", mode="down")
    wait_for(lambda: _served_or_none(global_url, "eu-central-1") == "us-east-1", timeout=10,
             interval=0.1, message="the global endpoint to route around eu-west-1")  # fmt: skip
    # At most interval x threshold + 1 s (and a second for this test's polling).
    assert time.monotonic() - down_at <= 0.5 * 3 + 1 + 1
    assert served_by(global_url, "us-west-2") == "us-east-1"

    # The control plane's probes see it too: an incident, and the team is told.
    assert probe_round(app, regions_worker)["went_down"] == []  # one failure is under the threshold
    eu = StagePlacement.objects.get(placement__app=app, placement__region__code="eu-west-1")
    assert probe_round(app, regions_worker)["went_down"] == [eu.pk]
    assert Incident.objects.get(stage_placement=eu).closed_at is None
    delivered(slack, "DOWN: shop production in eu-west-1")

    # Back up: traffic returns to the nearest region and the recovery is notified.
    local_regions.clear()
    wait_for(lambda: _served_or_none(global_url, "eu-central-1") == "eu-west-1", timeout=10,
             interval=0.1, message="traffic back in eu-west-1")  # fmt: skip
    probe_round(app, regions_worker)
    assert probe_round(app, regions_worker)["came_up"] == [eu.pk]
    delivered(slack, "shop production recovered in eu-west-1")
    assert Incident.objects.get(stage_placement=eu).closed_at is not None


def alerts(slack) -> list[str]:
    """The titles of the Slack messages received so far."""
    return [r.json()["blocks"][0]["text"]["text"] for r in slack.received("POST")]


def _served_or_none(url: str, client_region: str) -> str | None:
    try:
        response = httpx.get(url + "/where", headers={"X-Client-Region": client_region}, timeout=3)
    except httpx.HTTPError:
        return None
    return response.headers.get("x-served-by-region") if response.status_code == 200 else None


NODE_APP = """
export const handler = async (event, context) => ({
  statusCode: 200, body: JSON.stringify({ version: context.functionVersion, colour: process.env.COLOUR }),
});
"""


def test_a_node_app_canary_at_20_percent_serves_the_new_version_to_a_fifth_of_requests(
    team, api_for, aws, regions_worker, local_regions, local_settings
):
    app = make_app(
        team, aws, slug="web", regions=["us-east-1"], runtime="nodejs20.x", handler="index.handler"
    )
    EnvVarFactory(app=app, key="COLOUR", value="blue")
    client = api_for(team, role=Role.DEPLOYER)
    first = finished(
        deploy(client, app, "production", upload(client, app, zip_of({"index.mjs": NODE_APP})))["id"]
    )
    assert first.status == DeploymentStatus.SUCCEEDED, first.error
    (row,) = client.get(f"/api/v1/apps/{app.slug}/").json()["regions"]
    url = row["stages"]["production"]["endpoint"] + "/"
    assert httpx.get(url, timeout=10).json() == {"version": "1", "colour": "blue"}

    app.stages.filter(name="production").update(rollout={"canary": {"percent": 20, "bake_s": 600}})
    second_zip = zip_of({"index.mjs": NODE_APP.replace("colour:", "shade: 'new', colour:")})
    second = deploy(client, app, "production", upload(client, app, second_zip), sha="b" * 40)
    wait_for(
        lambda: client.get(f"/api/v1/deployments/{second['id']}/").json()["regions"][0]["canary_until"],
        timeout=90, message="the canary to bake",
    )  # fmt: skip
    with httpx.Client(timeout=10) as http:
        wait_for(
            lambda: http.get(url).json()["version"] == "2", timeout=10, message="the canary's first answer"
        )
        counts = Counter(http.get(url).json()["version"] for _ in range(2000))
    assert set(counts) == {"1", "2"}
    assert 0.16 <= counts["2"] / 2000 <= 0.24, counts

    assert client.post(f"/api/v1/deployments/{second['id']}/cancel/").status_code in (200, 202)
    finished(second["id"])
    with httpx.Client(timeout=10) as http:
        wait_for(lambda: all(http.get(url).json()["version"] == "1" for _ in range(50)), timeout=15,
                 message="the withdrawn canary to get no traffic")  # fmt: skip
    assert json.loads(httpx.get(url, timeout=10).text)["colour"] == "blue"
