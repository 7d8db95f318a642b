"""Keyless login from CI: a CI provider's OIDC ID token (GitHub Actions, GitLab CI ``id_tokens``)
exchanged for a short-lived API token scoped to one app, when one of the app's trust policies
matches its claims.

The token is verified with PyJWT: the signature against the issuer's JWKS (found through its
``/.well-known/openid-configuration``, fetched through the outgoing-URL safety checks, cached and
fetched again on an unknown ``kid``), ``iss`` (only issuers some policy names are ever fetched),
``aud`` (``OIDC_AUDIENCE``, by default ``SITE_URL``), ``exp``/``nbf``/``iat`` with a small leeway,
and the algorithm pinned to RS256/ES256 (``none`` and HMAC are refused before any key is read).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from datetime import timedelta
from types import SimpleNamespace

import httpx
import jwt
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from controlplane import audit, urlsafety
from controlplane.access import TokenPrincipal
from controlplane.errors import DomainError
from controlplane.models import ApiToken

from ..models import App, OidcTrustPolicy

log = logging.getLogger(__name__)

ALGORITHMS = ("RS256", "ES256")


class OidcInvalidToken(DomainError):
    code = "oidc_invalid_token"
    status_code = 401


class OidcNoPolicy(DomainError):
    code = "oidc_no_policy"
    status_code = 403


class OidcIssuerUnavailable(DomainError):
    code = "oidc_issuer_unavailable"
    status_code = 503


class OidcAmbiguousApp(DomainError):
    code = "ambiguous_app"
    status_code = 400


# --- The issuer's keys ------------------------------------------------------------------------


@dataclass
class _Keys:
    keys: dict[str, jwt.PyJWK]
    fetched: float


_cache: dict[str, _Keys] = {}
_lock = threading.Lock()


def _get_json(url: str) -> dict:
    try:
        with urlsafety.safe_client(timeout=10) as client:
            response = client.get(url, headers={"Accept": "application/json"})
    except urlsafety.UnsafeURL as exc:
        raise OidcIssuerUnavailable(f"The issuer's URL is refused: {exc.detail}")
    except httpx.HTTPError as exc:
        raise OidcIssuerUnavailable(f"Could not reach the issuer ({url}): {type(exc).__name__}.")
    if response.status_code != 200:
        raise OidcIssuerUnavailable(f"The issuer answered {response.status_code} for {url}.")
    try:
        body = response.json()
    except json.JSONDecodeError:
        raise OidcIssuerUnavailable(f"The issuer's {url} is not JSON.")
    if not isinstance(body, dict):
        raise OidcIssuerUnavailable(f"The issuer's {url} is not a JSON object.")
    return body


def _fetch_keys(issuer: str) -> dict[str, jwt.PyJWK]:
    config = _get_json(issuer.rstrip("/") + "/.well-known/openid-configuration")
    jwks_uri = config.get("jwks_uri")
    if not isinstance(jwks_uri, str) or not jwks_uri:
        raise OidcIssuerUnavailable("The issuer's configuration has no jwks_uri.")
    try:
        keyset = jwt.PyJWKSet.from_dict(_get_json(jwks_uri))
    except jwt.PyJWTError as exc:
        raise OidcIssuerUnavailable(f"The issuer's keys are unusable: {exc}.")
    return {key.key_id: key for key in keyset.keys if key.key_id}


def signing_key(issuer: str, kid: str) -> jwt.PyJWK:
    """The issuer's key ``kid``: from the cache, or fetched (again) when the cache is old or does
    not know it (keys rotate). Refetches for unknown kids are spaced by OIDC_JWKS_MIN_REFRESH_S
    so junk tokens cannot make the control plane hammer the issuer. Raises OidcInvalidToken."""
    now = time.monotonic()
    with _lock:
        cached = _cache.get(issuer)
        stale = cached is None or now - cached.fetched > settings.OIDC_JWKS_CACHE_S
        unknown = cached is not None and kid not in cached.keys
        may_refresh = cached is None or now - cached.fetched >= settings.OIDC_JWKS_MIN_REFRESH_S
        if stale or (unknown and may_refresh):
            cached = _Keys(keys=_fetch_keys(issuer), fetched=now)
            _cache[issuer] = cached
    key = cached.keys.get(kid)
    if key is None:
        raise OidcInvalidToken(f"The issuer has no key '{kid}'.")
    return key


def forget_keys() -> None:
    """Drop every cached key set (tests; an operator after an issuer's emergency rotation)."""
    with _lock:
        _cache.clear()


# --- Verifying and matching -------------------------------------------------------------------


@dataclass(frozen=True)
class CiIdentity:
    """What a policy is matched against, the same for GitHub and GitLab."""

    issuer: str
    subject: str
    repository: str
    ref: str  # refs/heads/<branch> or refs/tags/<tag>
    environment: str
    workflow: str  # the workflow's name (GitHub)
    workflow_file: str  # .github/workflows/deploy.yml, .gitlab-ci.yml
    actor: str
    sha: str
    run_id: str


def _workflow_file(ref_uri: str) -> str:
    """``.github/workflows/deploy.yml`` from ``acme/shop/.github/workflows/deploy.yml@refs/heads/main``
    (GitHub ``workflow_ref``) or ``gitlab.com/acme/shop//.gitlab-ci.yml@refs/heads/main`` (GitLab)."""
    path = ref_uri.split("@", 1)[0]
    if "//" in path:
        return path.split("//", 1)[1]
    parts = path.split("/", 2)
    return parts[2] if len(parts) == 3 else ""


def identity(claims: dict) -> CiIdentity:
    ref = str(claims.get("ref", ""))
    if "project_path" in claims and not ref.startswith("refs/"):  # GitLab: ref + ref_type
        ref = f"refs/{'tags' if claims.get('ref_type') == 'tag' else 'heads'}/{ref}" if ref else ""
    return CiIdentity(
        issuer=str(claims.get("iss", "")),
        subject=str(claims.get("sub", "")),
        repository=str(claims.get("repository") or claims.get("project_path") or ""),
        ref=ref,
        environment=str(claims.get("environment", "")),
        workflow=str(claims.get("workflow", "")),
        workflow_file=_workflow_file(
            str(claims.get("workflow_ref") or claims.get("ci_config_ref_uri") or "")
        ),
        actor=str(claims.get("actor") or claims.get("user_login") or ""),
        sha=str(claims.get("sha", "")),
        run_id=str(claims.get("run_id") or claims.get("pipeline_id") or ""),
    )


def verify(token: str) -> dict:
    """The verified claims of ``token``. Raises OidcInvalidToken (401) or OidcIssuerUnavailable."""
    try:
        header = jwt.get_unverified_header(token)
        unverified = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise OidcInvalidToken("Not a signed JWT.")
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise OidcInvalidToken(f"Algorithm '{alg}' is not accepted (use {' or '.join(ALGORITHMS)}).")
    issuer = unverified.get("iss")
    if (
        not isinstance(issuer, str)
        or not OidcTrustPolicy.objects.filter(issuer=issuer, enabled=True).exists()
    ):
        raise OidcInvalidToken("The token's issuer is not trusted by any policy.")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise OidcInvalidToken("The token names no key (kid).")
    key = signing_key(issuer, kid)
    if key.algorithm_name != alg:
        raise OidcInvalidToken(f"Key '{kid}' is not a {alg} key.")
    try:
        return jwt.decode(
            token,
            key=key.key,
            algorithms=[alg],
            audience=settings.OIDC_AUDIENCE,
            issuer=issuer,
            leeway=settings.OIDC_LEEWAY,
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise OidcInvalidToken("The token has expired.")
    except jwt.InvalidAudienceError:
        raise OidcInvalidToken(
            f"The token is not meant for this installation (aud must be {settings.OIDC_AUDIENCE})."
        )
    except jwt.PyJWTError as exc:
        raise OidcInvalidToken(f"Invalid token: {exc}.")


def _glob(value: str, pattern: str) -> bool:
    return bool(value) and fnmatch.fnmatchcase(value, pattern)


def matches(policy: OidcTrustPolicy, who: CiIdentity) -> bool:
    """Does ``who`` satisfy every condition of ``policy``? (Empty conditions match anything.)"""
    if policy.issuer.rstrip("/") != who.issuer.rstrip("/"):
        return False
    if policy.repository.lower() != who.repository.lower():
        return False
    if policy.ref:
        pattern = policy.ref if policy.ref.startswith("refs/") else f"refs/heads/{policy.ref}"
        if not _glob(who.ref, pattern):
            return False
    if policy.environment and not _glob(who.environment, policy.environment):
        return False
    if policy.workflow and not (
        _glob(who.workflow_file, policy.workflow) or _glob(who.workflow, policy.workflow)
    ):
        return False
    return True


def exchange(*, token: str, app: str, team: str = "", request=None) -> dict:
    """Exchange a CI's ID token for an API token of ``app``. Returns the answer's body (``token``
    shown this once, ``expires_at``, ``app``, ``team``, ``stages``, ``role``, ``policy``). Raises
    OidcInvalidToken (401), OidcNoPolicy (403), OidcAmbiguousApp (400), OidcIssuerUnavailable (503).
    Every exchange, granted or refused for want of a policy, is in the app's team's audit log."""
    claims = verify(token)
    who = identity(claims)
    apps = App.objects.filter(slug=app).select_related("team")
    if team:
        apps = apps.filter(team__slug=team)
    policies = list(
        OidcTrustPolicy.objects.filter(app__in=apps, enabled=True).select_related("app__team").order_by("pk")
    )
    matched = [p for p in policies if matches(p, who)]
    claims_seen = {k: v for k, v in asdict(who).items() if v}
    if not matched:
        for app_obj in {p.app_id: p.app for p in policies}.values():
            audit.record(
                team=app_obj.team,
                principal=SimpleNamespace(
                    label=f"oidc:{who.repository or who.subject}", user=None, token=None
                ),
                action="oidc.refused",
                obj=app_obj,
                changes={"claims": claims_seen},
                request=request,
            )
        raise OidcNoPolicy(
            f"No trust policy of app '{app}' matches this token (repository '{who.repository}', "
            f"ref '{who.ref}', environment '{who.environment or '-'}')."
        )
    if len({p.app_id for p in matched}) > 1:
        raise OidcAmbiguousApp("Apps of several teams have this slug and trust this token: pass 'team'.")
    policy = matched[0]
    app_obj = policy.app
    raw = ApiToken.generate()
    expires_at = timezone.now() + timedelta(seconds=settings.OIDC_TOKEN_TTL)
    with transaction.atomic():
        api_token = ApiToken.objects.create(
            team=app_obj.team,
            app=app_obj,
            name=f"oidc {who.repository}@{who.ref or '-'}"[:100],
            token_hash=ApiToken.hash(raw),
            prefix=raw[:8],
            role=policy.role,
            stages=list(policy.stages or []),
            expires_at=expires_at,
        )
        audit.record(
            team=app_obj.team,
            principal=TokenPrincipal(token=api_token),
            action="oidc.exchange",
            obj=policy,
            changes={"claims": claims_seen, "token": api_token.prefix, "expires_at": expires_at.isoformat()},
            request=request,
            app=app_obj,
        )
    log.info("OIDC exchange for %s by %s (%s), policy %s", app_obj, who.repository, who.ref, policy.pk)
    return {
        "token": raw,
        "expires_at": expires_at,
        "app": app_obj.slug,
        "team": app_obj.team.slug,
        "stages": api_token.stages,
        "role": api_token.role,
        "policy": policy.pk,
    }


# --- Managing policies ------------------------------------------------------------------------

POLICY_FIELDS = (
    "name",
    "issuer",
    "repository",
    "ref",
    "environment",
    "workflow",
    "stages",
    "role",
    "enabled",
)


def create_policy(*, principal, app: App, data: dict, request=None) -> OidcTrustPolicy:
    """A new trust policy for ``app`` (``data``: checked ``POLICY_FIELDS``), audited."""
    with transaction.atomic():
        policy = OidcTrustPolicy.objects.create(
            app=app, created_by=principal.label, **{k: v for k, v in data.items() if k in POLICY_FIELDS}
        )
        audit.record(
            team=app.team, principal=principal, action="oidc_policy.create", obj=policy,
            changes={k: getattr(policy, k) for k in POLICY_FIELDS}, request=request,
        )  # fmt: skip
    return policy


def update_policy(*, principal, policy: OidcTrustPolicy, data: dict, request=None) -> OidcTrustPolicy:
    changes = {
        k: [getattr(policy, k), v] for k, v in data.items() if k in POLICY_FIELDS and getattr(policy, k) != v
    }
    if not changes:
        return policy
    with transaction.atomic():
        OidcTrustPolicy.objects.filter(pk=policy.pk).update(**{k: v[1] for k, v in changes.items()})
        policy.refresh_from_db()
        audit.record(
            team=policy.app.team, principal=principal, action="oidc_policy.update", obj=policy,
            changes=changes, request=request,
        )  # fmt: skip
    return policy


def delete_policy(*, principal, policy: OidcTrustPolicy, request=None) -> None:
    with transaction.atomic():
        audit.record(
            team=policy.app.team, principal=principal, action="oidc_policy.delete", obj=policy,
            changes={"repository": policy.repository, "issuer": policy.issuer}, request=request,
        )  # fmt: skip
        policy.delete()
