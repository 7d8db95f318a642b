"""Django admin for teams, members, tokens, the audit log and alert channels.

Also the masking every admin of this project uses: encrypted values are write-only (an empty
input keeps the stored value) and never rendered, token hashes are never shown, and logs and
history are read-only.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db import models

from . import services
from .crypto import EncryptedTextField
from .models import ApiToken, AuditEntry, Channel, Membership, Notification, NotificationAttempt, Team

KEEP_HELP = "Write-only: the stored value is never shown. Leave blank to keep it."


def encrypted_field_names(model: type[models.Model]) -> list[str]:
    return [f.name for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]


class WriteOnlySecretsForm(forms.ModelForm):
    """A ModelForm whose ``write_only`` fields render empty and keep the stored value when left
    blank on an existing object."""

    write_only: tuple[str, ...] = ()

    def clean(self):
        cleaned = super().clean()
        for name in self.write_only:
            if name in cleaned and not cleaned[name] and (self.instance.pk or self._has_default(name)):
                # Not in cleaned_data: construct_instance leaves the stored (or default) value.
                del cleaned[name]
        return cleaned

    def _has_default(self, name: str) -> bool:
        return self.instance._meta.get_field(name).has_default()


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that never renders its value: for multi-line secrets such as SSH keys."""

    def format_value(self, value):
        return None


class MaskedSecretsAdmin(admin.ModelAdmin):
    """Encrypted fields become write-only password inputs (``multiline_secrets``: write-only
    textareas); nothing encrypted is ever rendered."""

    form = WriteOnlySecretsForm
    multiline_secrets: tuple[str, ...] = ()

    def write_only_fields(self, request, obj=None) -> list[str]:
        return encrypted_field_names(self.model)

    def get_form(self, request, obj=None, change=False, **kwargs):
        write_only = self.write_only_fields(request, obj)
        widgets = dict(kwargs.pop("widgets", None) or {})
        for name in write_only:
            widgets[name] = (
                WriteOnlyTextarea(attrs={"rows": 4, "autocomplete": "off", "spellcheck": "false"})
                if name in self.multiline_secrets
                else forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
            )
        form = super().get_form(request, obj, change=change, widgets=widgets, **kwargs)
        form.write_only = tuple(write_only)
        for name in write_only:
            if name in form.base_fields:
                field = form.base_fields[name]
                field.help_text = KEEP_HELP if obj is not None or self._has_default(name) else "Write-only."
                field.required = obj is None and not self.model._meta.get_field(name).blank
                field.strip = False
                # Fields with a callable default also render their value in a hidden
                # "initial-" input, which would put the secret in the page.
                field.show_hidden_initial = False
        return form

    def _has_default(self, name: str) -> bool:
        return self.model._meta.get_field(name).has_default()


class ReadOnlyAdmin(admin.ModelAdmin):
    """History and logs: viewable, never added, changed or deleted here. Encrypted fields are
    left out of the page entirely."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_exclude(self, request, obj=None):
        return [*(super().get_exclude(request, obj) or ()), *encrypted_field_names(self.model)]


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    readonly_fields = ["created_at"]
    autocomplete_fields = ["user"]


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    readonly_fields = ["created_at"]
    list_display = ["slug", "name", "created_at"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    readonly_fields = ["created_at"]
    list_display = ["user", "team", "role", "created_at"]
    list_filter = ["role", "team"]
    search_fields = ["user__username", "team__slug"]
    autocomplete_fields = ["user", "team"]


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Only the prefix is ever shown. Adding a token shows the raw value once, in a message."""

    list_display = ["name", "prefix", "team", "role", "app", "expires_at", "last_used_at", "revoked_at"]
    list_filter = ["role", "team"]
    search_fields = ["name", "prefix", "team__slug"]
    readonly_fields = ["prefix", "last_used_at", "created_by", "created_at"]
    fields = ["team", "name", "role", "app", "stages", "expires_at", "revoked_at", *readonly_fields]
    actions = ["revoke"]

    def get_readonly_fields(self, request, obj=None):
        # Who a token belongs to is fixed once it exists.
        return [*self.readonly_fields, "team", "app"] if obj is not None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            super().save_model(request, obj, form, change)
            return
        token, raw = services.create_api_token(
            team=obj.team,
            name=obj.name,
            role=obj.role,
            app=obj.app,
            stages=obj.stages or (),
            expires_at=obj.expires_at,
            created_by=request.user,
        )
        obj.pk, obj.prefix, obj.token_hash = token.pk, token.prefix, token.token_hash
        obj._state.adding = False
        messages.warning(request, f"Token {token.name}: {raw} — copy it now, it is not shown again.")

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request, queryset):
        for token in queryset:
            services.revoke_api_token(token=token)
        messages.success(request, f"Revoked {queryset.count()} token(s).")


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "team", "actor", "action", "object_type", "object_repr", "ip"]
    list_filter = ["team", "action", "object_type"]
    search_fields = ["actor", "action", "object_repr", "object_id"]
    date_hierarchy = "created_at"


@admin.register(Channel)
class ChannelAdmin(MaskedSecretsAdmin):
    readonly_fields = ["created_at"]
    list_display = ["__str__", "team", "kind", "name", "enabled", "disabled_reason"]
    list_filter = ["kind", "enabled", "team"]
    search_fields = ["name", "team__slug"]
    filter_horizontal = ["apps"]


@admin.register(Notification)
class NotificationAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "channel", "event", "status", "attempts", "response_code", "sent_at"]
    list_filter = ["status", "event"]


class NotificationAttemptInline(admin.TabularInline):
    model = NotificationAttempt
    extra = 0
    can_delete = False
    fields = ["number", "status", "response_code", "error", "duration_ms", "created_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


NotificationAdmin.inlines = [NotificationAttemptInline]


@admin.register(NotificationAttempt)
class NotificationAttemptAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "notification", "number", "status", "response_code", "duration_ms"]
    list_filter = ["status"]
