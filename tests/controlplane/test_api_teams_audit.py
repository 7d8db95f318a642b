from rest_framework.test import APIClient

from controlplane import audit
from controlplane.choices import Role
from tests.factories import AppFactory, MembershipFactory, TeamFactory, UserFactory


def test_teams_lists_the_callers_teams_with_its_role(db):
    user = UserFactory(username="erin")
    MembershipFactory(team=TeamFactory(slug="acme"), user=user, role=Role.ADMIN)
    MembershipFactory(team=TeamFactory(slug="globex"), user=user, role=Role.VIEWER)
    TeamFactory(slug="initech")
    client = APIClient()
    client.force_login(user)

    body = client.get("/api/v1/teams/").json()

    assert [(t["slug"], t["role"]) for t in body["results"]] == [("acme", "admin"), ("globex", "viewer")]


def test_a_token_sees_its_own_team_only(api_for, team, other_team):
    body = api_for(team, role=Role.VIEWER).get("/api/v1/teams/").json()

    assert [(t["slug"], t["role"]) for t in body["results"]] == [("acme", "viewer")]


def test_audit_log_shows_the_callers_team_newest_first(api_for, team, other_team):
    api = api_for(team, role=Role.ADMIN)
    api.post("/api/v1/tokens/", {"name": "first"}, format="json")
    api.post("/api/v1/tokens/", {"name": "second"}, format="json")
    audit.record(team=other_team, principal=None, action="app.create", object_type="app")

    body = api_for(team, role=Role.VIEWER).get("/api/v1/audit/").json()

    assert [(e["action"], e["changes"]["name"]) for e in body["results"]] == [
        ("token.create", "second"),
        ("token.create", "first"),
    ]
    assert all(e["team"] == "acme" for e in body["results"])
    assert body["results"][0]["actor"].startswith("token:")


def test_audit_log_filters_by_team(db):
    user = UserFactory(username="frank")
    acme, globex = TeamFactory(slug="acme"), TeamFactory(slug="globex")
    MembershipFactory(team=acme, user=user, role=Role.VIEWER)
    MembershipFactory(team=globex, user=user, role=Role.VIEWER)
    audit.record(team=acme, principal=None, action="a.one", object_type="x")
    audit.record(team=globex, principal=None, action="g.one", object_type="x")
    client = APIClient()
    client.force_login(user)

    everything = client.get("/api/v1/audit/").json()["results"]
    only_globex = client.get("/api/v1/audit/", {"team": "globex"}).json()["results"]

    assert sorted(e["action"] for e in everything) == ["a.one", "g.one"]
    assert [e["action"] for e in only_globex] == ["g.one"]


def test_app_scoped_token_sees_only_its_apps_audit_entries(api_for, team):
    shop, billing = AppFactory(team=team, slug="shop"), AppFactory(team=team, slug="billing")
    audit.record(team=team, principal=None, action="app.update", obj=shop)
    audit.record(team=team, principal=None, action="app.update", obj=billing)
    audit.record(team=team, principal=None, action="team.update", object_type="team")

    body = api_for(team, role=Role.VIEWER, app=shop).get("/api/v1/audit/").json()

    assert [(e["action"], e["app"]) for e in body["results"]] == [("app.update", "shop")]


def test_audit_log_is_paginated(api_for, team):
    for n in range(5):
        audit.record(team=team, principal=None, action=f"x.{n}", object_type="x")
    api = api_for(team, role=Role.VIEWER)

    first = api.get("/api/v1/audit/", {"limit": 3}).json()
    rest = api.get(first["next"]).json()

    assert [e["action"] for e in first["results"]] == ["x.4", "x.3", "x.2"]
    assert [e["action"] for e in rest["results"]] == ["x.1", "x.0"] and rest["next"] is None
