import pytest

from tests.factories import AppFactory, AppRegionFactory, EnvVarFactory, RegionFactory, StageFactory
from tests.support.deploys import boto

REGIONS = ["us-east-1", "eu-west-1", "ap-southeast-2"]


@pytest.fixture
def app_3_regions(team, aws):
    """An app in 3 regions with a production stage (domain + hosted zone), a staging stage and
    env vars at every level, one of them secret."""
    route53 = boto("route53", "us-east-1", aws)
    zone = route53.create_hosted_zone(Name="example.com", CallerReference="t1")["HostedZone"]["Id"]
    app = AppFactory(team=team, slug="shop", runtime="python3.12", handler="app.handler")
    regions = [RegionFactory(code=code) for code in REGIONS]
    for region in regions:
        AppRegionFactory(app=app, region=region)
    production = StageFactory(
        app=app, name="production", domain="shop.example.com", hosted_zone_id=zone.split("/")[-1]
    )
    staging = StageFactory(app=app, name="staging", branch="develop")
    EnvVarFactory(app=app, key="GREETING", value="hello")
    EnvVarFactory(app=app, key="GREETING", value="bonjour", region=regions[1])
    EnvVarFactory(app=app, key="STAGE_NAME", value="production", stage=production)
    EnvVarFactory(app=app, key="STAGE_NAME", value="staging", stage=staging)
    EnvVarFactory(app=app, key="DB_PASSWORD", value="s3cr3t-value", secret=True)
    return app
