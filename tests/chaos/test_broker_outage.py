"""The broker goes away mid-deploy and comes back: Redis of its own killed (it comes back empty,
every message it held lost) and restarted, or the filesystem broker's queue folder taken away and
put back. A deploy running at the time finishes, a deploy asked for during the outage is accepted
(202) and starts within 15 s of the broker's return, and nothing is lost or done twice.

The Redis case needs ``redis-server`` on the machine; where it is missing the filesystem case is
the broker outage this suite runs (the long form, ``CHAOS_LONG=1``, runs both where it can)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from django.conf import settings

from deployments.models import Deployment, RegionDeployment
from tests.support.chaos import LONG, redis_available, report
from tests.support.deploys import make_zip, upload
from tests.support.processes import wait_for

from .conftest import assert_nothing_lost_or_duplicated, post_deploy, wait_done

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

# The short form breaks Redis where redis-server is installed (the production broker), else the
# filesystem broker; the long form both, where it can.
if LONG:
    BROKERS = ["filesystem", "redis"] if redis_available() else ["filesystem"]
else:
    BROKERS = ["redis"] if redis_available() else ["filesystem"]
OUTAGE_S = 30.0 if LONG else 8.0  # longer than beat's period: the reaper misses a run at least
START_TARGET_S = 15.0


class Outage:
    def __init__(self, stack) -> None:
        self.stack = stack
        self.queue = Path(settings.DATA_DIR) / "broker" / "queue"

    def begin(self) -> None:
        if self.stack.redis:
            self.stack.redis.kill()
        else:  # an unmounted volume: the folder is gone (a chmod would not stop root)
            os.rename(self.queue, self.queue.with_name("queue-away"))

    def end(self) -> None:
        if self.stack.redis:
            self.stack.redis.start()  # same port, empty
        else:
            os.rename(self.queue.with_name("queue-away"), self.queue)


@pytest.mark.parametrize("broker", BROKERS)
def test_broker_outage_mid_deploy_loses_nothing_and_accepted_deploys_start_soon_after(
    broker, chaos_stack, chaos_aws, chaos_app, deployer, aws, capsys
):
    stack = chaos_stack(broker)
    stack.worker("w1")
    running_app, waiting_app = chaos_app("running"), chaos_app("waiting")
    artifact = upload(deployer, waiting_app, make_zip())

    # A deploy mid-way: its regions are publishing their versions when the broker goes.
    chaos_aws.hold(r"^POST /2015-03-31/functions/[^/]+/versions")
    first = post_deploy(deployer, running_app)["id"]
    wait_for(lambda: chaos_aws.held >= len(running_app.placements.all()), timeout=60,
             message="every region to be publishing its version")  # fmt: skip
    outage = Outage(stack)
    outage.begin()
    went = time.monotonic()
    chaos_aws.release()

    # Asked for while the broker is down: accepted, recorded, not lost.
    response = deployer.post(
        f"/api/v1/apps/{waiting_app.slug}/deployments/",
        {"stage": "production", "artifact": artifact},
        format="json",
    )
    assert response.status_code == 202, response.json()
    second = response.json()["id"]
    assert Deployment.objects.get(pk=second).status == "queued"

    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - went)))  # the outage lasts OUTAGE_S
    outage.end()
    back = time.time()

    started = wait_for(
        lambda: Deployment.objects.filter(pk=second).exclude(started_at=None).first(),
        timeout=60, interval=0.1, message="the deploy accepted during the outage to start",
    )  # fmt: skip
    start_after_return = started.started_at.timestamp() - back
    wait_done(first, timeout=90)
    wait_done(second, timeout=90)
    with capsys.disabled():
        report(f"broker outage ({broker})", outage=OUTAGE_S, start_after_broker_return=start_after_return,
               running_deploy=_took(first), accepted_deploy=_took(second))  # fmt: skip
    assert start_after_return <= START_TARGET_S
    assert_nothing_lost_or_duplicated(aws, {running_app: 1, waiting_app: 1})
    # No region was resumed as if its worker had died: the worker lived through the outage.
    assert not RegionDeployment.objects.filter(deployment_id=first, attempts__gt=1).exists()


def _took(pk: int) -> float:
    d = Deployment.objects.get(pk=pk)
    return (d.finished_at - d.created_at).total_seconds()
