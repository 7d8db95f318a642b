from __future__ import annotations

from rest_framework import permissions

from .access import principal_for
from .choices import Role


class TeamRolePermission(permissions.BasePermission):
    """Authenticated callers only; the role a verb needs comes from the view's ``required_roles``
    (default: viewers read, deployers write). Object checks go through the principal, so a token
    scoped to one app or some stages is held to that scope."""

    default_roles = {"GET": Role.VIEWER, "HEAD": Role.VIEWER, "OPTIONS": Role.VIEWER}

    def required_role(self, request, view) -> str:
        roles = getattr(view, "required_roles", {})
        action = getattr(view, "action", None)
        if action and action in roles:
            return roles[action]
        return roles.get(request.method, self.default_roles.get(request.method, Role.DEPLOYER))

    def has_permission(self, request, view) -> bool:
        return principal_for(request) is not None

    def has_object_permission(self, request, view, obj) -> bool:
        principal = principal_for(request)
        role = self.required_role(request, view)
        from deployments.models import App, Stage

        app = obj if isinstance(obj, App) else getattr(obj, "app", None)
        stage = obj if isinstance(obj, Stage) else getattr(obj, "stage", None)
        if app is not None:
            return principal.can(role, app=app, stage=stage.name if stage is not None else None)
        return principal.can(role, team_id=getattr(obj, "team_id", None))
