import pytest
from rest_framework.test import APIClient

from controlplane.choices import Role
from controlplane.models import AuditEntry
from regions.models import Region
from tests.factories import AppFactory, RegionFactory, UserFactory

REGIONS = "/api/v1/regions/"


@pytest.fixture
def regions(db):
    RegionFactory(
        code="us-east-1", artifact_bucket="acme-artifacts", role_arn="arn:aws:iam::123456789012:role/deploy"
    )
    RegionFactory(code="eu-west-1", enabled=False)


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEPLOYER])
def test_everyone_reads_regions_without_bucket_or_role(api_for, team, regions, role):
    answer = api_for(team, role=role).get(REGIONS)

    assert answer.status_code == 200
    results = answer.json()["results"]
    assert [(r["code"], r["name"], r["enabled"]) for r in results] == [
        ("eu-west-1", "eu-west-1", False),
        ("us-east-1", "us-east-1", True),
    ]
    assert all(set(r) == {"code", "name", "enabled", "created_at"} for r in results)
    assert "acme-artifacts" not in answer.content.decode()


def test_admins_see_bucket_and_role(api_for, team, regions):
    body = api_for(team, role=Role.ADMIN).get(f"{REGIONS}us-east-1/").json()

    assert body["artifact_bucket"] == "acme-artifacts"
    assert body["role_arn"] == "arn:aws:iam::123456789012:role/deploy"


def test_an_app_scoped_admin_token_is_not_a_region_admin(api_for, team, regions):
    api = api_for(team, role=Role.ADMIN, app=AppFactory(team=team))

    assert "artifact_bucket" not in api.get(f"{REGIONS}us-east-1/").json()
    assert api.patch(f"{REGIONS}us-east-1/", {"enabled": False}, format="json").status_code == 403


def test_admin_adds_a_region_with_its_catalog_name(api_for, team, regions):
    answer = api_for(team, role=Role.ADMIN).post(
        REGIONS, {"code": "eu-north-1", "artifact_bucket": "acme-eun1"}, format="json"
    )

    assert answer.status_code == 201, answer.json()
    region = Region.objects.get(code="eu-north-1")
    assert region.enabled and region.artifact_bucket == "acme-eun1"
    assert region.name == "Europe (Stockholm)"
    assert AuditEntry.objects.filter(action="region.create", team=team).exists()


@pytest.mark.parametrize(
    ("code", "needle"),
    [
        ("us-east", "not an AWS region code"),
        ("zz-mars-1", "not a known AWS region"),
        ("US-EAST-1", "not an AWS"),
    ],
)
def test_bad_region_codes_are_refused(api_for, team, regions, code, needle):
    answer = api_for(team, role=Role.ADMIN).post(REGIONS, {"code": code}, format="json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_region" and needle in answer.json()["detail"]
    assert not Region.objects.filter(code=code).exists()


def test_an_existing_region_cannot_be_added_twice(api_for, team, regions):
    answer = api_for(team, role=Role.ADMIN).post(REGIONS, {"code": "us-east-1"}, format="json")

    assert answer.status_code == 400 and answer.json()["code"] == "invalid_region"


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEPLOYER])
def test_only_admins_add_or_change_regions(api_for, team, regions, role):
    api = api_for(team, role=role)

    assert api.post(REGIONS, {"code": "eu-north-1"}, format="json").status_code == 403
    assert api.patch(f"{REGIONS}us-east-1/", {"enabled": False}, format="json").status_code == 403
    assert not Region.objects.filter(code="eu-north-1").exists()
    assert Region.objects.get(code="us-east-1").enabled


def test_admin_disables_a_region_and_it_is_audited(api_for, team, regions):
    answer = api_for(team, role=Role.ADMIN).patch(f"{REGIONS}us-east-1/", {"enabled": False}, format="json")

    assert answer.status_code == 200 and answer.json()["enabled"] is False
    entry = AuditEntry.objects.get(action="region.update")
    assert entry.changes == {"enabled": [True, False]}


@pytest.mark.parametrize(
    "body", [{"code": "us-east-2"}, {"role_arn": "not-an-arn"}, {"artifact_bucket": "Bad_Bucket"}, {"x": 1}]
)
def test_region_patch_refuses_bad_and_unknown_fields(api_for, team, regions, body):
    answer = api_for(team, role=Role.ADMIN).patch(f"{REGIONS}us-east-1/", body, format="json")

    assert answer.status_code == 400 and answer.json()["code"]
    assert Region.objects.get(code="us-east-1").artifact_bucket == "acme-artifacts"


def test_an_unknown_region_is_a_404(api_for, team, regions):
    api = api_for(team, role=Role.ADMIN)

    assert api.get(f"{REGIONS}ap-east-1/").status_code == 404
    assert api.patch(f"{REGIONS}ap-east-1/", {"enabled": True}, format="json").status_code == 404


def test_a_superuser_without_a_team_manages_regions(db, regions):
    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    client = APIClient()
    client.force_login(root)

    answer = client.patch(f"{REGIONS}eu-west-1/", {"enabled": True}, format="json")

    assert answer.status_code == 200 and Region.objects.get(code="eu-west-1").enabled


def test_region_admin_teams_limits_who_changes_regions(api_for, team, other_team, regions, settings):
    settings.REGION_ADMIN_TEAMS = [team.slug]
    outsider = api_for(other_team, role=Role.ADMIN)
    operator = api_for(team, role=Role.ADMIN)

    refused = outsider.patch(f"{REGIONS}us-east-1/", {"artifact_bucket": "evil-bucket"}, format="json")
    assert refused.status_code == 403
    assert "artifact_bucket" not in outsider.get(f"{REGIONS}us-east-1/").json()
    assert Region.objects.get(code="us-east-1").artifact_bucket == "acme-artifacts"

    allowed = operator.patch(f"{REGIONS}us-east-1/", {"artifact_bucket": "acme-new"}, format="json")
    assert allowed.status_code == 200
    assert Region.objects.get(code="us-east-1").artifact_bucket == "acme-new"
