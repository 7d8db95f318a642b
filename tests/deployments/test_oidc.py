"""Keyless login from CI: OIDC ID tokens from a local issuer (its JWKS served on loopback),
exchanged for short-lived app-scoped API tokens by the app's trust policies."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.choices import Role
from controlplane.models import ApiToken, AuditEntry
from deployments.models import OidcTrustPolicy
from deployments.services.oidc import forget_keys
from tests.factories import AppFactory, StageFactory
from tests.support.oidc import Issuer

AUD = "https://deploy.example.com"
URL = "/api/v1/auth/oidc/"


@pytest.fixture(scope="module")
def issuer():
    server = Issuer()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _fresh_keys(settings, issuer):
    settings.OIDC_AUDIENCE = AUD
    settings.OIDC_JWKS_MIN_REFRESH_S = 0
    issuer.hidden.clear()
    forget_keys()
    yield
    forget_keys()


@pytest.fixture
def shop(team, issuer):
    app = AppFactory(team=team, slug="shop")
    StageFactory(app=app, name="production")
    StageFactory(app=app, name="staging", branch="develop")
    OidcTrustPolicy.objects.create(
        app=app, issuer=issuer.url, repository="acme/shop", ref="main", environment="production",
        workflow=".github/workflows/deploy.yml", stages=["production"],
    )  # fmt: skip
    return app


def exchange(client, token: str, app: str = "shop"):
    return client.post(URL, {"token": token, "app": app}, format="json")


def test_a_valid_github_token_gets_a_short_lived_token_for_the_app_and_its_stages(
    anon_api, shop, issuer, team, other_team
):
    before = timezone.now()
    answer = exchange(anon_api, issuer.sign(issuer.claims(audience=AUD)))
    assert answer.status_code == 200, answer.json()
    body = answer.json()
    assert (body["app"], body["team"], body["stages"], body["role"]) == (
        "shop",
        "acme",
        ["production"],
        "deployer",
    )
    expires = parse_datetime(body["expires_at"])
    assert before + timedelta(minutes=14) < expires <= timezone.now() + timedelta(minutes=15)
    assert answer["Cache-Control"] == "no-store"

    anon_api.credentials(HTTP_AUTHORIZATION=f"Bearer {body['token']}")
    assert anon_api.get("/api/v1/apps/shop/").status_code == 200
    other = AppFactory(team=team, slug="blog")
    assert anon_api.get(f"/api/v1/apps/{other.slug}/").status_code == 404  # scoped to one app
    staging = anon_api.post(
        "/api/v1/apps/shop/env/", {"key": "A", "value": "1", "stage": "staging"}, format="json"
    )
    assert staging.status_code == 403  # and to the policy's stages
    token = ApiToken.objects.get(prefix=body["token"][:8])
    token.expires_at = timezone.now() - timedelta(seconds=1)
    token.save()
    assert anon_api.get("/api/v1/apps/shop/").status_code == 401

    entry = AuditEntry.objects.get(action="oidc.exchange")
    assert entry.team == team and entry.app == shop
    claims = entry.changes["claims"]
    assert claims["repository"] == "acme/shop" and claims["ref"] == "refs/heads/main"
    assert claims["environment"] == "production" and claims["workflow_file"] == ".github/workflows/deploy.yml"
    assert body["token"] not in str(entry.changes)


def test_a_gitlab_es256_token_matches_a_gitlab_policy(anon_api, team, issuer):
    app = AppFactory(team=team, slug="shop")
    OidcTrustPolicy.objects.create(app=app, issuer=issuer.url, repository="acme/shop", ref="main",
                                   workflow=".gitlab-ci.yml")  # fmt: skip
    answer = exchange(anon_api, issuer.sign(issuer.gitlab_claims(audience=AUD), kid="ec-1"))
    assert answer.status_code == 200, answer.json()
    assert answer.json()["stages"] == []


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"exp": 1_000_000, "iat": 999_000, "nbf": 999_000}, "expired"),
        ({"aud": "https://someone-else.example.com"}, "not meant for this installation"),
        ({"iss": "https://token.actions.example.net"}, "issuer is not trusted"),
    ],
)
def test_expired_wrong_audience_and_wrong_issuer_are_401(anon_api, shop, issuer, claims, reason):
    answer = exchange(anon_api, issuer.sign(issuer.claims(audience=AUD, **claims)))
    assert answer.status_code == 401
    assert answer.json()["code"] == "oidc_invalid_token" and reason in answer.json()["detail"]
    assert not ApiToken.objects.exists()


def test_alg_none_and_hs256_with_the_public_key_as_secret_are_401(anon_api, shop, issuer):
    claims = issuer.claims(audience=AUD)
    hits = issuer.jwks_hits
    for token in (issuer.unsigned(claims), issuer.forge_hs256_with_public_key(claims)):
        answer = exchange(anon_api, token)
        assert answer.status_code == 401, token
        assert answer.json()["code"] == "oidc_invalid_token" and "not accepted" in answer.json()["detail"]
    assert issuer.jwks_hits == hits  # refused before any key is fetched
    assert not ApiToken.objects.exists()


def test_an_unknown_kid_fetches_the_keys_again_once(anon_api, shop, issuer):
    assert exchange(anon_api, issuer.sign(issuer.claims(audience=AUD))).status_code == 200
    hits = issuer.jwks_hits
    assert exchange(anon_api, issuer.sign(issuer.claims(audience=AUD))).status_code == 200
    assert issuer.jwks_hits == hits  # cached
    issuer.add_key("rsa-2")  # the issuer rotates its keys
    assert exchange(anon_api, issuer.sign(issuer.claims(audience=AUD), kid="rsa-2")).status_code == 200
    assert issuer.jwks_hits == hits + 1
    issuer.hidden.add("rsa-3")
    issuer.add_key("rsa-3")  # signed with a key the issuer does not publish
    answer = exchange(anon_api, issuer.sign(issuer.claims(audience=AUD), kid="rsa-3"))
    assert answer.status_code == 401 and "no key 'rsa-3'" in answer.json()["detail"]


@pytest.mark.parametrize(
    "claims",
    [
        {"repository": "mallory/shop"},
        {"ref": "refs/heads/feature"},
        {"environment": "staging"},
        {"workflow_ref": "acme/shop/.github/workflows/other.yml@refs/heads/main", "workflow": "Other"},
    ],
)
def test_a_token_no_policy_matches_is_403_and_audited(anon_api, shop, issuer, claims):
    answer = exchange(anon_api, issuer.sign(issuer.claims(audience=AUD, **claims)))
    assert answer.status_code == 403
    assert answer.json()["code"] == "oidc_no_policy"
    assert not ApiToken.objects.exists()
    refused = AuditEntry.objects.get(action="oidc.refused")
    assert (
        refused.app == shop
        and refused.changes["claims"]["subject"] == "repo:acme/shop:environment:production"
    )


def test_a_token_for_an_app_that_does_not_exist_is_403_like_no_policy(anon_api, shop, issuer):
    answer = exchange(anon_api, issuer.sign(issuer.claims(audience=AUD)), app="nope")
    assert answer.status_code == 403 and answer.json()["code"] == "oidc_no_policy"


def test_garbage_is_401_and_a_missing_field_400(anon_api, shop):
    assert exchange(anon_api, "not-a-jwt").status_code == 401
    missing = anon_api.post(URL, {"app": "shop"}, format="json")
    assert missing.status_code == 400 and missing.json()["code"] == "invalid"


def test_admins_manage_policies_others_cannot(api_for, team, other_team, issuer):
    app = AppFactory(team=team, slug="shop")
    StageFactory(app=app, name="production")
    admin = api_for(team, role=Role.ADMIN)
    created = admin.post(
        "/api/v1/apps/shop/oidc-policies/",
        {"repository": "acme/shop", "ref": "refs/tags/v*", "stages": ["production"]},
        format="json",
    )
    assert created.status_code == 201, created.json()
    body = created.json()
    assert body["issuer"] == "https://token.actions.githubusercontent.com" and body["role"] == "deployer"
    assert AuditEntry.objects.filter(action="oidc_policy.create").count() == 1
    path = f"/api/v1/apps/shop/oidc-policies/{body['id']}/"
    assert admin.patch(path, {"enabled": False}, format="json").json()["enabled"] is False

    deployer = api_for(team, role=Role.DEPLOYER)
    assert deployer.get("/api/v1/apps/shop/oidc-policies/").json()["results"][0]["id"] == body["id"]
    assert (
        deployer.post("/api/v1/apps/shop/oidc-policies/", {"repository": "a/b"}, format="json").status_code
        == 403
    )
    assert deployer.delete(path).status_code == 403
    assert api_for(other_team, role=Role.ADMIN).get(path).status_code == 404

    bad = admin.post(
        "/api/v1/apps/shop/oidc-policies/", {"repository": "no slash", "stages": ["qa"]}, format="json"
    )
    assert bad.status_code == 400 and set(bad.json()["fields"]) == {"repository", "stages"}
    assert admin.delete(path).status_code == 204
    assert not OidcTrustPolicy.objects.exists()
