"""Who may see and do what: the one place team scoping is decided.

A principal is a signed-in user (roles from memberships) or an API token (one team, one role,
maybe one app and some stages). Views ask the principal; they never filter by team by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from django.db.models import QuerySet

from .choices import ROLE_RANK, Role
from .models import ApiToken, Membership, Team

# ``stage=ALL_STAGES`` asks about a change that reaches every stage of an app (an app-wide env
# var, the app's own config): a token limited to some stages may not make it.
ALL_STAGES = "*"


class Principal:
    label: str = "anonymous"
    user = None
    token: ApiToken | None = None

    def role_in(self, team_id: int) -> str | None:
        raise NotImplementedError

    def team_ids(self) -> list[int]:
        raise NotImplementedError

    def filter_apps(self, qs: QuerySet) -> QuerySet:
        return qs.filter(team_id__in=self.team_ids())

    def teams(self) -> QuerySet:
        return Team.objects.filter(pk__in=self.team_ids())

    def has_role(self, role: str, *, team_id: int) -> bool:
        have = self.role_in(team_id)
        return have is not None and ROLE_RANK[have] >= ROLE_RANK[role]

    def can(self, role: str, *, app=None, team_id: int | None = None, stage: str | None = None) -> bool:
        """May this principal act with ``role`` on ``app`` (or the team), for ``stage`` if given?"""
        team_id = app.team_id if app is not None else team_id
        return team_id is not None and self.has_role(role, team_id=team_id)

    def admin_team_ids(self) -> list[int]:
        return [t for t in self.team_ids() if self.has_role(Role.ADMIN, team_id=t)]

    def manageable_team_ids(self, role: str) -> list[int]:
        """Teams in which this principal may act with ``role`` on team-wide things (tokens, apps)."""
        return [t for t in self.team_ids() if self.can(role, team_id=t)]

    def can_manage_regions(self) -> bool:
        """Regions belong to the installation: a team admin (not app-scoped) manages them, of any
        team or, when ``REGION_ADMIN_TEAMS`` names teams, only of those (installations shared by
        teams that must not redirect each other's artifacts to a bucket or role of their own)."""
        from django.conf import settings

        teams = self.manageable_team_ids(Role.ADMIN)
        allowed = list(getattr(settings, "REGION_ADMIN_TEAMS", []))
        if allowed and teams:
            return Team.objects.filter(pk__in=teams, slug__in=allowed).exists()
        return bool(teams)

    def filter_audit(self, qs: QuerySet) -> QuerySet:
        """Audit entries this principal may read."""
        return qs.filter(team_id__in=self.team_ids())


@dataclass
class UserPrincipal(Principal):
    user: object = None

    @cached_property
    def _roles(self) -> dict[int, str]:
        return dict(Membership.objects.filter(user=self.user).values_list("team_id", "role"))

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"user:{self.user.get_username()}"

    def role_in(self, team_id: int) -> str | None:
        return self._roles.get(team_id)

    def team_ids(self) -> list[int]:
        return list(self._roles)

    def can_manage_regions(self) -> bool:
        return bool(getattr(self.user, "is_superuser", False)) or super().can_manage_regions()


@dataclass
class TokenPrincipal(Principal):
    token: ApiToken = field(default=None)  # type: ignore[assignment]

    @property
    def label(self) -> str:  # type: ignore[override]
        return f"token:{self.token.name} ({self.token.prefix})"

    def role_in(self, team_id: int) -> str | None:
        return self.token.role if team_id == self.token.team_id else None

    def team_ids(self) -> list[int]:
        return [self.token.team_id]

    def filter_apps(self, qs: QuerySet) -> QuerySet:
        qs = qs.filter(team_id=self.token.team_id)
        if self.token.app_id:
            qs = qs.filter(pk=self.token.app_id)
        return qs

    def filter_audit(self, qs: QuerySet) -> QuerySet:
        qs = qs.filter(team_id=self.token.team_id)
        if self.token.app_id:
            qs = qs.filter(app_id=self.token.app_id)
        return qs

    def can(self, role: str, *, app=None, team_id: int | None = None, stage: str | None = None) -> bool:
        if not super().can(role, app=app, team_id=team_id, stage=stage):
            return False
        if self.token.app_id and (app is None or app.pk != self.token.app_id):
            # An app-scoped token manages nothing team-wide.
            return role == Role.VIEWER and app is None
        # Stage limits narrow what the token changes; it still reads every stage of its apps.
        if stage is not None and self.token.stages and ROLE_RANK[role] > ROLE_RANK[Role.VIEWER]:
            return stage != ALL_STAGES and stage in self.token.stages
        return True


def require(principal: Principal | None, role: str, *, app=None, team_id=None, stage=None) -> None:
    """Raise Forbidden unless ``principal`` may act with ``role`` (``None`` is the system itself:
    management commands and internal jobs)."""
    # Imported here: errors imports DRF, whose settings import the permissions that import this module.
    from .errors import Forbidden

    if principal is not None and not principal.can(role, app=app, team_id=team_id, stage=stage):
        raise Forbidden("You do not have permission to perform this action.")


def principal_for(request) -> Principal | None:
    """The principal behind a DRF or Django request (cached on it), or None when anonymous."""
    cached = getattr(request, "_principal", None)
    if cached is not None:
        return cached
    auth = getattr(request, "auth", None)
    if isinstance(auth, ApiToken):
        principal: Principal | None = TokenPrincipal(token=auth)
    elif getattr(request, "user", None) is not None and request.user.is_authenticated:
        principal = UserPrincipal(user=request.user)
    else:
        principal = None
    request._principal = principal
    return principal


@dataclass
class SystemPrincipal(Principal):
    """The control plane acting on its own behalf (git-push webhooks, the reaper, policies).
    It is trusted for the one team it acts in."""

    name: str = "system"
    team_id: int | None = None

    @property
    def label(self) -> str:  # type: ignore[override]
        return self.name

    def role_in(self, team_id: int) -> str | None:
        return Role.DEPLOYER if team_id == self.team_id else None

    def team_ids(self) -> list[int]:
        return [self.team_id] if self.team_id is not None else []
