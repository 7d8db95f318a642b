"""Teams, memberships, API tokens and re-encryption of secrets: every write, with its audit entry."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

from django.apps import apps as django_apps
from django.contrib.auth import get_user_model
from django.db import models, transaction
from django.db.models.functions import Cast
from django.utils import timezone

from . import audit
from .access import Principal, require
from .choices import Role
from .crypto import EncryptedTextField, InvalidToken, rotate
from .errors import DomainError
from .models import ApiToken, Membership, Team

TOKEN_PREFIX_LENGTH = 8  # "cp_" and 5 random characters: enough to tell tokens apart in a list


TEAM_SLUG_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class InvalidTeamSlug(DomainError):
    code = "invalid_team_slug"
    status_code = 400


class InvalidTokenScope(DomainError):
    code = "invalid_token_scope"
    status_code = 400


def ensure_team(*, slug: str, name: str = "", principal: Principal | None = None) -> tuple[Team, bool]:
    """The team with ``slug``, created when missing. Returns ``(team, created)``."""
    if not TEAM_SLUG_RE.match(slug or ""):
        raise InvalidTeamSlug(
            f"'{slug}' is not a valid team slug: lowercase letters, digits and hyphens, starting with a "
            "letter or digit, at most 63 characters."
        )
    with transaction.atomic():
        team, created = Team.objects.get_or_create(slug=slug, defaults={"name": name or slug.title()})
        if created:
            audit.record(team=team, principal=principal, action="team.create", obj=team)
    return team, created


def ensure_user(
    *, username: str, email: str = "", password: str | None = None
) -> tuple[models.Model, bool, str | None]:
    """The user ``username``, created when missing (never a superuser or staff). ``password``,
    when given, is set. Returns ``(user, created, generated)``: ``generated`` is a new random
    password when the user was created without one (for the caller to hand over once), else None."""
    user_model = get_user_model()
    generated = None
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(username=username, defaults={"email": email})
        if email and user.email != email:
            user.email = email
        if password is None and created:
            password = generated = secrets.token_urlsafe(18)
        if password is not None:
            user.set_password(password)
        user.save()
    return user, created, generated


def set_membership(
    *, team: Team, user, role: str, principal: Principal | None = None, request=None
) -> Membership:
    """Give ``user`` ``role`` in ``team`` (creating or changing the membership)."""
    require(principal, Role.ADMIN, team_id=team.pk)
    with transaction.atomic():
        membership, created = Membership.objects.get_or_create(team=team, user=user, defaults={"role": role})
        if created or membership.role != role:
            before = None if created else membership.role
            membership.role = role
            membership.save(update_fields=["role"])
            audit.record(
                team=team,
                principal=principal,
                action="membership.create" if created else "membership.update",
                obj=membership,
                changes={"user": user.get_username(), "role": [before, role]},
                request=request,
            )
    return membership


def create_api_token(
    *,
    team: Team,
    name: str,
    role: str = Role.DEPLOYER,
    app=None,
    stages: Iterable[str] = (),
    expires_at: datetime | None = None,
    created_by=None,
    principal: Principal | None = None,
    request=None,
) -> tuple[ApiToken, str]:
    """Create a token; returns ``(token, raw)``. Only the SHA-256 of ``raw`` is stored, so the raw
    value exists only in this return value. Raises InvalidTokenScope for an app of another team,
    an unknown role or an expiry in the past; Forbidden when ``principal`` is not a team admin."""
    require(principal, Role.ADMIN, team_id=team.pk)
    if role not in Role.values:
        raise InvalidTokenScope(f"'{role}' is not a role: use one of {', '.join(Role.values)}.")
    if app is not None and app.team_id != team.pk:
        raise InvalidTokenScope("The app belongs to another team.")
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidTokenScope(
            "The expiry is in the past.", fields={"expires_at": ["Must be in the future."]}
        )
    raw = ApiToken.generate()
    with transaction.atomic():
        token = ApiToken.objects.create(
            team=team,
            name=name,
            role=role,
            app=app,
            stages=sorted(set(stages)),
            expires_at=expires_at,
            created_by=created_by,
            token_hash=ApiToken.hash(raw),
            prefix=raw[:TOKEN_PREFIX_LENGTH],
        )
        audit.record(
            team=team,
            principal=principal,
            action="token.create",
            obj=token,
            changes={"name": name, "role": role, "app": app.slug if app else None, "stages": token.stages},
            request=request,
        )
    return token, raw


def revoke_api_token(*, token: ApiToken, principal: Principal | None = None, request=None) -> ApiToken:
    """Revoke ``token`` (it stops authenticating at once); revoking twice keeps the first time."""
    require(principal, Role.ADMIN, team_id=token.team_id)
    with transaction.atomic():
        if token.revoked_at is None:
            token.revoked_at = timezone.now()
            token.save(update_fields=["revoked_at"])
            audit.record(
                team=token.team, principal=principal, action="token.revoke", obj=token, request=request
            )
    return token


@dataclass
class ReencryptResult:
    """What ``reencrypt_secrets`` did, per ``app_label.Model.field``."""

    counts: dict[str, int] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)  # label: pks no key decrypts


def encrypted_fields() -> Iterator[tuple[type[models.Model], models.Field]]:
    """Every (model, field) of the project holding an EncryptedTextField, from the app registry."""
    for model in django_apps.get_models():
        for f in model._meta.concrete_fields:
            if isinstance(f, EncryptedTextField):
                yield model, f


def reencrypt_secrets(*, batch_size: int = 500) -> ReencryptResult:
    """Re-encrypt every encrypted value of every model with the newest key (``ENCRYPTION_KEYS[0]``).

    Works on the stored ciphertexts (never decrypting into Python objects or saving models, so
    ``updated_at`` and other fields stay as they were), in batches of ``batch_size`` rows, one
    transaction per batch. Values no configured key decrypts are left alone and reported."""
    result = ReencryptResult()
    for model, f in encrypted_fields():
        label = f"{model._meta.label}.{f.name}"
        count = 0
        failures: list[str] = []
        last_pk = None
        # Cast to plain text so the ORM hands back the ciphertext instead of decrypting it.
        rows = (
            model._default_manager.exclude(**{f.attname: ""})
            .exclude(**{f"{f.attname}__isnull": True})
            .annotate(_ciphertext=Cast(f.attname, output_field=models.TextField()))
            .order_by("pk")
        )
        while True:
            batch_qs = rows if last_pk is None else rows.filter(pk__gt=last_pk)
            batch = list(batch_qs.values_list("pk", "_ciphertext")[:batch_size])
            if not batch:
                break
            with transaction.atomic():
                for pk, ciphertext in batch:
                    try:
                        fresh = rotate(ciphertext)
                    except InvalidToken:
                        failures.append(str(pk))
                        continue
                    model._default_manager.filter(pk=pk).update(
                        **{f.attname: models.Value(fresh, output_field=models.TextField())}
                    )
                    count += 1
            last_pk = batch[-1][0]
        result.counts[label] = count
        if failures:
            result.failures[label] = failures
    return result
