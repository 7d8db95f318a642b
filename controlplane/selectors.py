"""Reads of teams, tokens and the audit log that several callers share."""

from __future__ import annotations

from django.db.models import QuerySet

from .access import Principal
from .choices import Role
from .errors import DomainError
from .models import ApiToken, AuditEntry, Team


class TeamRequired(DomainError):
    code = "team_required"
    status_code = 400


def teams_for(principal: Principal) -> QuerySet[Team]:
    """Teams ``principal`` belongs to."""
    return principal.teams().order_by("slug")


def tokens_for(principal: Principal) -> QuerySet[ApiToken]:
    """Tokens of the teams ``principal`` belongs to (managing them needs admin)."""
    return ApiToken.objects.filter(team_id__in=principal.team_ids()).select_related("team", "app")


def audit_entries_for(principal: Principal, *, team: str | None = None) -> QuerySet[AuditEntry]:
    """Audit entries ``principal`` may read, newest first; ``team`` narrows to one team's slug."""
    qs = principal.filter_audit(AuditEntry.objects.select_related("team", "app"))
    if team:
        qs = qs.filter(team__slug=team)
    return qs


def team_to_manage(principal: Principal, *, slug: str | None, role: str = Role.ADMIN) -> Team:
    """The team a team-level write goes to: ``slug`` when given (one of the caller's teams), else
    the only team where the caller has ``role``. Raises TeamRequired when ``slug`` is needed or
    unknown; the role itself is checked by the service."""
    if slug:
        team = principal.teams().filter(slug=slug).first()
        if team is None:
            raise TeamRequired(
                f"You are not a member of a team '{slug}'.", fields={"team": ["Unknown team."]}
            )
        return team
    candidates = principal.manageable_team_ids(role) or principal.team_ids()
    if len(candidates) == 1:
        return Team.objects.get(pk=candidates[0])
    if not candidates:
        raise TeamRequired("You are not a member of any team.", fields={"team": ["No team."]})
    raise TeamRequired(
        "You belong to several teams: say which one with 'team'.", fields={"team": ["Required."]}
    )
