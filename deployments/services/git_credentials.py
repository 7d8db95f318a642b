"""An app's git credential (a deploy token, ``user:token`` or an SSH private key): set, replaced
or cleared by admins, stored encrypted, never returned and never audited by value."""

from __future__ import annotations

from django.db import transaction

from controlplane import audit
from controlplane.access import ALL_STAGES, Principal, require
from controlplane.choices import Role

from ..models import App


def clean_git_credential(value: str) -> str:
    """The credential as builds use it: surrounding whitespace dropped and an SSH key's line ends
    made ``\\n`` (a key pasted from Windows or wrapped by a form still parses)."""
    return value.replace("\r\n", "\n").replace("\r", "\n").strip()


def set_git_credential(*, principal: Principal | None, app: App, value: str, request=None) -> bool:
    """Store ``value`` (encrypted) as the credential builds of ``app`` fetch with; "" clears it.
    The audit entry says whether it was set, replaced or cleared, never what it is. Returns True
    when it changed. Raises Forbidden (admin needed)."""
    require(principal, Role.ADMIN, app=app, stage=ALL_STAGES)
    value = clean_git_credential(value)
    with transaction.atomic():
        current = App.objects.select_for_update().values_list("git_credential", flat=True).get(pk=app.pk)
        if value == current:
            return False
        app.git_credential = value
        app.save(update_fields=["git_credential"])
        what = "cleared" if not value else ("replaced" if current else "set")
        audit.record(
            team=app.team,
            principal=principal,
            action="app.git_credential",
            obj=app,
            changes={"git_credential": what},
            request=request,
        )
    return True
