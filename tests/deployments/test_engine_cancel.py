"""Cancelling and superseding deployments that are already running: their regions that have not
started are cancelled, and the deployment finishes once the running ones stop."""

from __future__ import annotations

import pytest

from deployments.choices import DeploymentStatus, RegionStatus
from deployments.models import Deployment

from . import test_engine_support as support
from .test_engine_support import new_deployment, principal_for, status_of

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_deploy_driven_through_the_recording_broker_succeeds(app_3_regions, engine):
    deployment = new_deployment(app_3_regions)
    engine.deliver()
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.SUCCEEDED
    assert set(regions.values()) == {RegionStatus.SUCCEEDED}


def test_superseding_a_running_deployment_cancels_its_unstarted_regions_and_finishes_it(
    app_3_regions, engine
):
    from deployments.engine.claim import claim
    from deployments.engine.driver import run_claimed

    old = new_deployment(app_3_regions)
    engine.deliver(only="workers.start_deployment")  # its regions are released, none started
    first, *rest = old.regions.order_by("region__code")
    held = claim(first.pk)  # one region is in a worker's hands
    assert held is not None

    new = new_deployment(app_3_regions, body="def handler(e, c):\n    return 2\n")
    status, regions = status_of(old)
    assert status == DeploymentStatus.RUNNING
    assert regions[first.region.code] == RegionStatus.RUNNING
    assert {regions[r.region.code] for r in rest} == {RegionStatus.CANCELLED}

    # The running region stops before its next step, which finishes the old deployment.
    assert run_claimed(held) == RegionStatus.CANCELLED
    status, regions = status_of(old)
    assert status == DeploymentStatus.SUPERSEDED
    assert old.finished_at is not None
    assert set(regions.values()) == {RegionStatus.CANCELLED}

    engine.deliver()
    status, regions = status_of(new)
    assert status == DeploymentStatus.SUCCEEDED, regions


def test_cancelling_a_running_deployment_finishes_it_once_the_running_region_stops(app_3_regions, engine):
    from deployments.engine.claim import claim
    from deployments.engine.driver import run_claimed
    from deployments.services.deployments import cancel_deployment

    deployment = new_deployment(app_3_regions)
    engine.deliver(only="workers.start_deployment")
    held = claim(deployment.regions.order_by("region__code").first().pk)

    cancel_deployment(deployment=deployment, principal=principal_for(app_3_regions))
    assert status_of(deployment)[0] == DeploymentStatus.RUNNING
    run_claimed(held)
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.CANCELLED and deployment.finished_at is not None
    assert set(regions.values()) == {RegionStatus.CANCELLED}


def test_a_region_claimed_after_a_cancel_finishes_the_deployment(app_3_regions, engine):
    deployment = new_deployment(app_3_regions)
    engine.deliver(only="workers.start_deployment")
    # The flag is saved, but the regions were not marked (a cancel racing the worker).
    Deployment.objects.filter(pk=deployment.pk).update(cancel_requested=True)
    engine.deliver()
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.CANCELLED and deployment.finished_at is not None
    assert set(regions.values()) == {RegionStatus.CANCELLED}


def test_a_cancel_during_a_step_that_must_be_retried_stops_the_region(app_3_regions, engine, monkeypatch):
    from deployments.engine import driver
    from deployments.engine.context import RetryLater
    from deployments.engine.steps import artifact
    from deployments.services.deployments import cancel_deployment
    from regions.aws.session import AwsError

    deployment = new_deployment(app_3_regions)
    engine.deliver(only="workers.start_deployment")
    real_step = artifact.run

    def throttled_while_cancelled(run):
        real_step(run)
        cancel_deployment(deployment=run.deployment, principal=principal_for(app_3_regions))
        raise RetryLater(AwsError("ThrottlingException", "slow down", retryable=True))

    monkeypatch.setattr(artifact, "run", throttled_while_cancelled)
    first = deployment.regions.order_by("region__code").first()
    assert driver.run_region(first.pk) == RegionStatus.CANCELLED
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.CANCELLED
    assert set(regions.values()) == {RegionStatus.CANCELLED}
