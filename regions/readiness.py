"""Is the installation ready for a first real deploy to a region? The values each check needs,
from the database and settings; the checks themselves are in :mod:`regions.aws.readiness`.
``manage.py check_aws`` and ``GET /api/v1/regions/{code}/check/`` call :func:`check_region`."""

from __future__ import annotations

from django.conf import settings

from deployments.models import Stage

from .aws.readiness import Check
from .aws.readiness import check_region as check_aws_region
from .models import Region


def hosted_zones(region: Region) -> list[str]:
    """The hosted zones of the stages with a domain whose apps run in ``region``."""
    zones = (
        Stage.objects.filter(app__placements__region=region)
        .exclude(domain="")
        .exclude(hosted_zone_id="")
        .values_list("hosted_zone_id", flat=True)
        .distinct()
    )
    return sorted({zone.rsplit("/", 1)[-1] for zone in zones})


def check_region(region: Region) -> list[Check]:
    return check_aws_region(
        region.code,
        role_arn=region.role_arn,
        bucket=region.bucket,
        execution_role_arn=settings.AWS_LAMBDA_ROLE_ARN,
        hosted_zone_ids=hosted_zones(region),
    )
