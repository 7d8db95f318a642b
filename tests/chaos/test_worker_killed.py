"""A worker SIGKILLed in the middle of a step, every region of a deployment in its hands: a second
worker resumes them within 30 s (the product's heartbeat timeout and reaper period, not shortened
here), the deployment succeeds, and exactly one Lambda version per region exists.

The kill lands while AWS is answering the step's call (the chaos proxy holds it): the call still
reaches AWS after the worker died, as it would, so the resumed region must find what it did."""

from __future__ import annotations

import time

import pytest

from deployments.models import DeploymentEvent, RegionDeployment
from tests.support.chaos import LONG, report
from tests.support.processes import wait_for

from .conftest import REGIONS, assert_nothing_lost_or_duplicated, post_deploy, wait_done

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

RESUME_TARGET_S = 30.0
# The step the kill lands in, and the AWS call it is waiting for when it does.
KILL_POINTS = {
    "version": r"^POST /2015-03-31/functions/[^/]+/versions",  # publishing the version
    "function": r"^GET /2015-03-31/functions/[^/]+/configuration",  # waiting for the function to settle
}
STEPS = list(KILL_POINTS) if LONG else ["version"]


@pytest.mark.parametrize("step", STEPS)
def test_a_killed_workers_regions_are_resumed_by_another_within_30_s_without_a_duplicate_version(
    step, chaos_stack, chaos_aws, chaos_app, deployer, aws, capsys
):
    stack = chaos_stack()
    first = stack.worker("w1")
    app = chaos_app(f"killed-at-{step}")

    chaos_aws.hold(KILL_POINTS[step])
    pk = post_deploy(deployer, app)["id"]
    wait_for(lambda: chaos_aws.held >= len(REGIONS), timeout=60, message=f"every region to be in step {step}")
    assert set(RegionDeployment.objects.filter(deployment_id=pk).values_list("step", flat=True)) == {step}
    stack.worker("w2")  # ready before the kill: only the failure detection is timed

    first.kill()
    killed = time.time()
    chaos_aws.release()  # the calls in flight reach AWS after their caller died

    def resumed():
        events = DeploymentEvent.objects.filter(deployment_id=pk, message__contains="went silent")
        return list(events) if events.count() >= len(REGIONS) else None

    events = wait_for(resumed, timeout=90, interval=0.2, message="every region to be resumed")
    resume_s = max(e.created_at.timestamp() for e in events) - killed
    deployment = wait_done(pk, timeout=90)
    with capsys.disabled():
        report(f"worker killed at '{step}'", resume_after_kill=resume_s,
               deploy=(deployment.finished_at - deployment.created_at).total_seconds())  # fmt: skip
    assert resume_s <= RESUME_TARGET_S
    assert_nothing_lost_or_duplicated(aws, {app: 1})
    # Each region ran twice (the killed worker, then the one that resumed it), never more.
    assert (
        sorted(RegionDeployment.objects.filter(deployment_id=pk).values_list("attempts", flat=True))
        == [2] * 3
    )
