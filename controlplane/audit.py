"""Writing the audit log: one function, called by services."""

from __future__ import annotations

from .models import AuditEntry


def client_ip(request) -> str | None:
    if request is None:
        return None
    return request.META.get("REMOTE_ADDR") or None


def record(
    *,
    team,
    principal,
    action: str,
    obj=None,
    object_type: str = "",
    changes: dict | None = None,
    request=None,
    app=None,
) -> AuditEntry:
    """Record that ``principal`` did ``action`` to ``obj``. ``changes`` must never hold a secret
    value: env var entries list keys only. ``app`` defaults to ``obj`` itself when it is an app,
    or to ``obj.app``."""
    return AuditEntry.objects.create(
        team=team,
        actor=principal.label if principal is not None else "system",
        user=getattr(principal, "user", None) if getattr(principal, "user", None) is not None else None,
        token=getattr(principal, "token", None),
        action=action,
        object_type=object_type or (obj._meta.model_name if obj is not None else ""),
        object_id=str(obj.pk) if obj is not None and obj.pk is not None else "",
        object_repr=str(obj)[:200] if obj is not None else "",
        changes=changes or {},
        ip=client_ip(request),
        app=app if app is not None else _app_of(obj),
    )


def _app_of(obj):
    from deployments.models import App

    if obj is None or isinstance(obj, App):
        return obj if obj is not None and obj.pk is not None else None
    app = getattr(obj, "app", None)
    return app if isinstance(app, App) else None
