import pytest
from django.test import Client

from controlplane.choices import Role
from tests.factories import (
    AppFactory,
    AppRegionFactory,
    EnvVarFactory,
    MembershipFactory,
    RegionFactory,
    StageFactory,
    UserFactory,
)
from tests.support.deploys import boto

from .ui_support import SECRET, UI_REGIONS

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


# --- The web UI's tests ---------------------------------------------------------------------


@pytest.fixture
def app(team):
    """``acme/shop`` in two regions with a production stage, a plain and a secret env var."""
    app = AppFactory(team=team, slug="shop", name="Shop")
    for code in UI_REGIONS:
        AppRegionFactory(app=app, region=RegionFactory(code=code))
    StageFactory(app=app, name="production", domain="shop.example.com")
    EnvVarFactory(app=app, key="GREETING", value="hello-plain")
    EnvVarFactory(app=app, key="DB_PASSWORD", value=SECRET, secret=True)
    return app


@pytest.fixture
def foreign_app(other_team):
    app = AppFactory(team=other_team, slug="intranet")
    AppRegionFactory(app=app, region=RegionFactory(code="us-east-1"))
    StageFactory(app=app, name="production")
    return app


@pytest.fixture
def browser_for(db):
    """``browser_for(team, role)``: a Django test client signed in as a new member of ``team``."""

    def make(team, role: str = Role.DEPLOYER) -> Client:
        user = UserFactory()
        MembershipFactory(team=team, user=user, role=role)
        client = Client()
        client.force_login(user)
        client.user = user
        return client

    return make
