"""Malformed requests get a 4xx JSON answer with a stable code, never a 500."""

from __future__ import annotations

import base64

import pytest

from controlplane.choices import Role
from tests.factories import AppFactory


@pytest.fixture
def api(api_for, team):
    AppFactory(team=team, slug="shop")
    return api_for(team, role=Role.ADMIN)


@pytest.mark.parametrize("header", ["   ", "Bearer", "Bearer a b", "\t"])
def test_blank_or_malformed_authorization_is_a_401(anon_api, team, header):
    answer = anon_api.get("/api/v1/apps/", HTTP_AUTHORIZATION=header)

    assert answer.status_code == 401
    assert answer.json()["code"] in ("not_authenticated", "authentication_failed")


def _cursor(raw: str) -> str:
    return base64.b64encode(raw.encode()).decode()


@pytest.mark.parametrize("path", ["/api/v1/audit/", "/api/v1/tokens/", "/api/v1/apps/shop/deployments/"])
@pytest.mark.parametrize("cursor", [_cursor("p=abc"), _cursor("p=1%002"), "%%%not-base64", _cursor("o=x")])
def test_a_tampered_cursor_is_a_400(api, path, cursor):
    answer = api.get(path, {"cursor": cursor})

    assert answer.status_code == 400, answer.content
    assert answer.json()["code"] == "invalid_cursor"


def test_a_handed_out_cursor_still_pages(api, team):
    for n in range(3):
        api.post("/api/v1/apps/shop/env/", {"key": f"KEY_{n}", "value": "v"}, format="json")
    first = api.get("/api/v1/audit/", {"limit": 2}).json()
    assert len(first["results"]) == 2 and first["next"]
    second = api.get(first["next"]).json()
    assert second["results"] and second["results"][0]["id"] < first["results"][-1]["id"]


def test_json_nested_too_deep_is_a_400(api):
    body = "[" * 100_000 + "]" * 100_000

    answer = api.post("/api/v1/apps/", data=body, content_type="application/json")

    assert answer.status_code == 400
    assert answer.json()["code"] == "malformed_request"


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/apps/%00/",
        "/api/v1/apps/shop/stages/a%00/",
        "/api/v1/apps/?team=%00",
        "/api/v1/audit/?team=a%00b",
        "/api/v1/apps/shop/env/?key=%00",
    ],
)
def test_a_nul_character_in_the_url_is_a_400(api, url):
    answer = api.get(url)

    assert answer.status_code == 400
    assert answer.json()["code"] == "invalid_characters"
