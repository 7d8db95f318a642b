from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.choices import Role
from deployments.models import App
from tests.factories import ApiTokenFactory, AppFactory, EnvVarFactory, RegionFactory, StageFactory

# Every endpoint this part of the API serves, with a body a permitted caller could send.
ENDPOINTS = [
    ("get", "/api/v1/teams/", None),
    ("get", "/api/v1/tokens/", None),
    ("post", "/api/v1/tokens/", {"name": "ci"}),
    ("delete", "/api/v1/tokens/{token}/", None),
    ("get", "/api/v1/audit/", None),
    ("get", "/api/v1/regions/", None),
    ("post", "/api/v1/regions/", {"code": "eu-north-1"}),
    ("get", "/api/v1/regions/us-east-1/", None),
    ("patch", "/api/v1/regions/us-east-1/", {"enabled": False}),
    ("get", "/api/v1/apps/", None),
    ("post", "/api/v1/apps/", {"slug": "x", "runtime": "python3.12", "regions": ["us-east-1"]}),
    ("get", "/api/v1/apps/shop/", None),
    ("patch", "/api/v1/apps/shop/", {"memory_mb": 1024}),
    ("delete", "/api/v1/apps/shop/", None),
    ("post", "/api/v1/apps/shop/rotate-webhook-secret/", None),
    ("get", "/api/v1/apps/shop/stages/", None),
    ("post", "/api/v1/apps/shop/stages/", {"name": "qa"}),
    ("get", "/api/v1/apps/shop/stages/production/", None),
    ("patch", "/api/v1/apps/shop/stages/production/", {"branch": "x"}),
    ("delete", "/api/v1/apps/shop/stages/production/", None),
    ("get", "/api/v1/apps/shop/env/", None),
    ("post", "/api/v1/apps/shop/env/", {"key": "XX", "value": "1"}),
    ("get", "/api/v1/apps/shop/env/{env}/", None),
    ("patch", "/api/v1/apps/shop/env/{env}/", {"value": "2"}),
    ("delete", "/api/v1/apps/shop/env/{env}/", None),
]


@pytest.fixture
def world(team):
    RegionFactory(code="us-east-1")
    app = AppFactory(team=team, slug="shop")
    StageFactory(app=app, name="production")
    env = EnvVarFactory(app=app, key="MODE", value="live")
    token = ApiTokenFactory(team=team, role=Role.ADMIN)
    return {"app": app, "env": env.pk, "token": token.pk}


def _call(client, method, path, body, world):
    url = path.format(env=world["env"], token=world["token"])
    return getattr(client, method)(url, body, format="json")


def _unchanged(world):
    app = App.objects.get(pk=world["app"].pk)
    assert app.memory_mb == 256 and app.stages.count() == 1 and app.env_vars.get().value == "live"


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_no_credentials_is_a_401(world, method, path, body):
    answer = _call(APIClient(), method, path, body, world)

    assert answer.status_code == 401
    assert answer.json()["code"] == "not_authenticated"
    assert answer["WWW-Authenticate"] == "Bearer"
    _unchanged(world)


@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS)
def test_a_wrong_token_is_a_401(world, method, path, body):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer cp_not-a-real-token")

    answer = _call(client, method, path, body, world)

    assert answer.status_code == 401
    assert answer.json()["code"] == "authentication_failed"
    _unchanged(world)


@pytest.mark.parametrize(
    "token_kwargs",
    [
        {"expires_at": timezone.now() - timedelta(seconds=1)},
        {"revoked_at": timezone.now() - timedelta(minutes=5)},
    ],
    ids=["expired", "revoked"],
)
@pytest.mark.parametrize(("method", "path", "body"), ENDPOINTS[:3] + ENDPOINTS[11:14])
def test_an_expired_or_revoked_token_is_a_401(world, team, token_kwargs, method, path, body):
    token = ApiTokenFactory(team=team, role=Role.ADMIN, **token_kwargs)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token.raw}")

    answer = _call(client, method, path, body, world)

    assert answer.status_code == 401
    assert answer.json()["code"] == "authentication_failed"
    _unchanged(world)


def test_a_malformed_authorization_header_is_a_401(world):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer two parts")

    answer = client.get("/api/v1/apps/")

    assert answer.status_code == 401 and answer.json()["code"] == "authentication_failed"


def test_a_valid_token_records_when_it_was_last_used(api_for, team, world):
    api = api_for(team, role=Role.VIEWER)

    assert api.get("/api/v1/apps/").status_code == 200

    api.token.refresh_from_db()
    assert api.token.last_used_at is not None
