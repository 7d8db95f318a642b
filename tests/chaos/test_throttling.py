"""Every other AWS call throttled, with each service's real error (Lambda and API Gateway 429
``TooManyRequestsException``, S3 503 ``SlowDown``, STS, IAM and Route 53 400 ``Throttling``, ACM
400 ``ThrottlingException``): a deploy still succeeds, with no duplicate version, in at most 3x the
time of the same deploy unthrottled.

The short form runs the retry settings the product ships. ``CHAOS_LONG=1`` also runs the others
that were measured against them (botocore's own standard backoff, adaptive mode, a client-side
rate limit per service and region, adaptive with that limit), five rounds each, and prints each
one's ratio: those must still deploy correctly, but only the shipped settings must meet 3x."""

from __future__ import annotations

import statistics

import pytest

from tests.support.chaos import LONG, report

from .conftest import assert_nothing_lost_or_duplicated, post_deploy, wait_done

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

RATIO_TARGET = 3.0
SHIPPED = "standard, short throttling backoff (shipped)"
VARIANTS = {
    SHIPPED: {},
    "standard, botocore backoff (before)": {"AWS_THROTTLE_BASE_DELAY": "1", "AWS_RETRY_MAX_DELAY": "20"},
    "adaptive": {"AWS_RETRY_MODE": "adaptive"},
    "standard, botocore backoff + rate limit 5/s per service and region": {
        "AWS_THROTTLE_BASE_DELAY": "1", "AWS_RETRY_MAX_DELAY": "20", "AWS_REQUESTS_PER_SECOND": "5"},
    "adaptive + rate limit 5/s per service and region": {
        "AWS_RETRY_MODE": "adaptive", "AWS_REQUESTS_PER_SECOND": "5"},
}  # fmt: skip
ROUNDS = 5


@pytest.mark.parametrize("variant", list(VARIANTS) if LONG else [SHIPPED])
def test_every_other_aws_call_throttled_deploys_within_3x_the_unthrottled_time(
    variant, chaos_stack, chaos_aws, chaos_app, deployer, aws, capsys
):
    stack = chaos_stack()
    stack.env.update(VARIANTS[variant])
    stack.worker("w1")
    warm = chaos_app("warm-up")  # (a worker's first deploy builds its clients: not timed)
    plain, throttled, apps = [], [], {warm: 1}
    wait_done(post_deploy(deployer, warm)["id"], timeout=120)
    for n in range(ROUNDS):
        for throttle, times in ((0, plain), (2, throttled)):
            app = chaos_app(f"{'throttled' if throttle else 'plain'}{n}")
            chaos_aws.throttle_every = throttle
            deployment = wait_done(post_deploy(deployer, app)["id"], timeout=180)
            chaos_aws.throttle_every = 0
            # From its start (queueing is not what throttling slows down) to its end.
            times.append((deployment.finished_at - deployment.started_at).total_seconds())
            apps[app] = 1
    ratio = statistics.median(throttled) / statistics.median(plain)
    with capsys.disabled():
        report(f"every other AWS call throttled, {variant}", unthrottled=statistics.median(plain),
               throttled=statistics.median(throttled), ratio=f"{ratio:.2f}x",
               throttled_calls=sum(chaos_aws.throttled.values()), by_service=chaos_aws.throttled)  # fmt: skip
    assert sum(chaos_aws.throttled.values()) > 10 * ROUNDS
    assert_nothing_lost_or_duplicated(aws, apps)
    if variant == SHIPPED:
        assert ratio <= RATIO_TARGET
