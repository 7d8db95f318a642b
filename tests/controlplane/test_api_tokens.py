from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from controlplane.choices import Role
from controlplane.models import ApiToken, AuditEntry
from tests.factories import (
    ApiTokenFactory,
    AppFactory,
    MembershipFactory,
    StageFactory,
    TeamFactory,
    UserFactory,
)

TOKENS = "/api/v1/tokens/"


def bearer(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
    return client


def test_admin_creates_a_token_and_sees_the_raw_value_once(api_for, team):
    admin = api_for(team, role=Role.ADMIN)

    created = admin.post(TOKENS, {"name": "ci", "role": "deployer"}, format="json")
    listed = admin.get(TOKENS)

    assert created.status_code == 201, created.json()
    raw = created.json()["token"]
    assert raw.startswith("cp_") and created.json()["prefix"] == raw[:8]
    row = next(t for t in listed.json()["results"] if t["name"] == "ci")
    assert set(row) == {
        "id", "team", "name", "prefix", "role", "app", "stages", "expires_at",
        "last_used_at", "revoked_at", "created_at", "active",
    }  # fmt: skip
    assert raw not in listed.content.decode()
    assert bearer(raw).get("/api/v1/apps/").status_code == 200
    entry = AuditEntry.objects.get(action="token.create")
    assert raw not in str(entry.changes)


def test_the_database_never_holds_a_raw_token(api_for, team):
    raw = api_for(team, role=Role.ADMIN).post(TOKENS, {"name": "ci"}, format="json").json()["token"]

    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM controlplane_apitoken")
        rows = cursor.fetchall()
        cursor.execute("SELECT * FROM controlplane_auditentry")
        rows += cursor.fetchall()
    assert rows
    for row in rows:
        for column in row:
            assert raw not in str(column)
            assert raw[8:] not in str(column)


def test_a_token_scoped_to_an_app_and_stages_with_an_expiry(api_for, team):
    app = AppFactory(team=team, slug="shop")
    StageFactory(app=app, name="staging")
    expires = (timezone.now() + timedelta(days=30)).isoformat()

    created = api_for(team, role=Role.ADMIN).post(
        TOKENS,
        {"name": "shop-ci", "role": "deployer", "app": "shop", "stages": ["staging"], "expires_at": expires},
        format="json",
    )

    assert created.status_code == 201, created.json()
    body = created.json()
    assert (body["app"], body["stages"], body["role"]) == ("shop", ["staging"], "deployer")
    token = ApiToken.objects.get(pk=body["id"])
    assert token.app == app and token.expires_at is not None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "x", "app": "nope"}, "app"),
        ({"name": "x", "role": "owner"}, "role"),
        ({"name": "x", "stages": ["bad-name"]}, "stages"),
        ({"name": "x", "expires_at": "2000-01-01T00:00:00Z"}, "expires_at"),
        ({"name": "x", "secret": "y"}, "secret"),
        ({}, "name"),
    ],
)
def test_bad_token_requests_are_refused(api_for, team, body, field):
    answer = api_for(team, role=Role.ADMIN).post(TOKENS, body, format="json")

    assert answer.status_code == 400
    assert field in answer.json()["fields"]
    assert ApiToken.objects.count() == 1  # only the caller's own


def test_a_token_cannot_be_scoped_to_another_teams_app(api_for, team, other_team):
    AppFactory(team=other_team, slug="theirs")

    answer = api_for(team, role=Role.ADMIN).post(TOKENS, {"name": "x", "app": "theirs"}, format="json")

    assert answer.status_code == 400 and "app" in answer.json()["fields"]


@pytest.mark.parametrize("role", [Role.VIEWER, Role.DEPLOYER])
def test_only_admins_manage_tokens(api_for, team, role):
    victim = ApiTokenFactory(team=team, role=Role.DEPLOYER)
    api = api_for(team, role=role)

    assert api.get(TOKENS).status_code == 403
    assert api.post(TOKENS, {"name": "x"}, format="json").status_code == 403
    assert api.delete(f"{TOKENS}{victim.pk}/").status_code == 403
    victim.refresh_from_db()
    assert victim.revoked_at is None


def test_an_app_scoped_admin_token_manages_no_tokens(api_for, team):
    app = AppFactory(team=team)
    api = api_for(team, role=Role.ADMIN, app=app)

    assert api.get(TOKENS).status_code == 403
    assert api.post(TOKENS, {"name": "x"}, format="json").status_code == 403


def test_revoking_a_token_stops_it_at_once_and_keeps_it_listed(api_for, team):
    admin = api_for(team, role=Role.ADMIN)
    victim = ApiTokenFactory(team=team, role=Role.DEPLOYER)
    assert bearer(victim.raw).get("/api/v1/apps/").status_code == 200

    answer = admin.delete(f"{TOKENS}{victim.pk}/")

    assert answer.status_code == 204
    assert bearer(victim.raw).get("/api/v1/apps/").status_code == 401
    row = next(t for t in admin.get(TOKENS).json()["results"] if t["id"] == victim.pk)
    assert row["revoked_at"] is not None and row["active"] is False
    assert AuditEntry.objects.filter(action="token.revoke", object_id=str(victim.pk)).exists()


def test_another_teams_token_is_not_found(api_for, team, other_team):
    theirs = ApiTokenFactory(team=other_team, role=Role.ADMIN)

    answer = api_for(team, role=Role.ADMIN).delete(f"{TOKENS}{theirs.pk}/")

    assert answer.status_code == 404 and answer.json()["code"] == "not_found"
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


def test_token_list_shows_only_the_teams_tokens(api_for, team, other_team):
    ApiTokenFactory(team=other_team, name="theirs")
    ApiTokenFactory(team=team, name="ours")

    names = [t["name"] for t in api_for(team, role=Role.ADMIN).get(TOKENS).json()["results"]]

    assert "ours" in names and "theirs" not in names


def test_a_user_admin_of_two_teams_names_the_team_for_a_new_token(db):
    user = UserFactory(username="dana")
    for slug in ("acme", "globex"):
        MembershipFactory(team=TeamFactory(slug=slug), user=user, role=Role.ADMIN)
    client = APIClient()
    client.force_login(user)

    unnamed = client.post(TOKENS, {"name": "ci"}, format="json")
    named = client.post(TOKENS, {"name": "ci", "team": "globex"}, format="json")

    assert unnamed.status_code == 400 and unnamed.json()["code"] == "team_required"
    assert named.status_code == 201 and named.json()["team"] == "globex"
    assert ApiToken.objects.get().created_by == user
