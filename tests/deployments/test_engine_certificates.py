"""A stage's custom domain under the strict emulator: ACM issues the certificate only once its
validation record resolves, so a region waits for it parked (held, no worker thread waiting), and
a certificate that never validates fails the region with the record to add."""

from __future__ import annotations

import pytest

from deployments.choices import DeploymentStatus, RegionStatus
from deployments.models import RegionDeployment

from . import test_engine_support as support
from .conftest import REGIONS
from .test_engine_support import new_deployment, status_of

broker, engine = support.broker, support.engine  # fixtures

pytestmark = pytest.mark.django_db(transaction=True)


def test_without_a_hosted_zone_the_region_waits_parked_then_fails_naming_the_record(
    app_3_regions, engine, settings
):
    app = app_3_regions
    app.stages.filter(name="production").update(hosted_zone_id="")  # DNS elsewhere: nobody writes it
    deployment = new_deployment(app)
    engine.deliver(early=False)
    _, regions = status_of(deployment)
    assert regions == dict.fromkeys(REGIONS, RegionStatus.RUNNING)
    parked = RegionDeployment.objects.filter(deployment=deployment)
    assert all(rd.resume_at is not None and rd.step == "api" for rd in parked)
    waiting = deployment.events.filter(step="api", message__contains="pending validation")
    assert {e.region_id for e in waiting} == {rd.region_id for rd in parked}
    assert all("add _d930b28be6c5927595552b219965053e.shop.example.com" in e.message for e in waiting)

    settings.ACM_VALIDATION_TIMEOUT = 0  # it never came
    engine.deliver()
    status, regions = status_of(deployment)
    assert status == DeploymentStatus.FAILED
    assert regions == dict.fromkeys(REGIONS, RegionStatus.FAILED)
    for rd in RegionDeployment.objects.filter(deployment=deployment):
        assert rd.error_code == "certificate_not_issued" and rd.resume_at is None
        assert "still pending validation" in rd.error and "CNAME" in rd.error


def test_with_the_hosted_zone_every_region_gets_its_domain_after_one_validation_record(
    app_3_regions, engine, aws
):
    deployment = new_deployment(app_3_regions)
    engine.deliver()
    status, _ = status_of(deployment)
    assert status == DeploymentStatus.SUCCEEDED
    refused = aws.strict.stats()["refused"]
    assert "apigw_domain_needs_issued" not in refused  # the domain was made only once issued
    written = deployment.events.filter(step="api", message__contains="written to hosted zone")
    assert written.count() == 1  # one region wrote the record every region's certificate needed
    assert not RegionDeployment.objects.filter(deployment=deployment, resume_at__isnull=False).exists()
