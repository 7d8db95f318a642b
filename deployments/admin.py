"""Django admin for apps, stages and env vars (editable; secrets write-only) and the deployment
history (read-only: releases, deployments and their log are records, changed only by the engine)."""

from django import forms
from django.contrib import admin

from controlplane.access import UserPrincipal
from controlplane.admin import MaskedSecretsAdmin, ReadOnlyAdmin, WriteOnlySecretsForm
from controlplane.errors import DomainError

from .models import (
    App,
    Artifact,
    Deployment,
    DeploymentEvent,
    EnvVar,
    GitHostConnection,
    GitHostDeployment,
    GitHostPost,
    GitHostPostAttempt,
    OidcTrustPolicy,
    RegionDeployment,
    Release,
    Stage,
    WebhookDelivery,
)
from .services.apps import check_env_var, record_env_change

MASK = "••••••"


class StageInline(admin.TabularInline):
    model = Stage
    extra = 0
    fields = ["name", "branch", "domain", "pinned"]
    show_change_link = True


@admin.register(App)
class AppAdmin(MaskedSecretsAdmin):
    readonly_fields = ["created_at"]
    list_display = ["slug", "team", "runtime", "memory_mb", "timeout_s", "created_at"]
    list_filter = ["team", "runtime"]
    search_fields = ["slug", "name", "repo_url"]
    inlines = [StageInline]
    # A token or a whole SSH private key, newlines included.
    multiline_secrets = ("git_credential",)


@admin.register(Stage)
class StageAdmin(admin.ModelAdmin):
    readonly_fields = ["created_at"]
    list_display = ["__str__", "branch", "domain", "pinned", "pinned_at"]
    list_filter = ["pinned"]
    search_fields = ["app__slug", "name", "domain"]


@admin.register(OidcTrustPolicy)
class OidcTrustPolicyAdmin(admin.ModelAdmin):
    """Which CI jobs may log in as an app with an OIDC ID token (see the exchange's audit entries)."""

    readonly_fields = ["created_by", "created_at"]
    list_display = ["__str__", "issuer", "environment", "workflow", "stages", "role", "enabled"]
    list_filter = ["enabled", "issuer"]
    search_fields = ["app__slug", "repository", "name"]
    raw_id_fields = ["app"]


@admin.register(GitHostConnection)
class GitHostConnectionAdmin(MaskedSecretsAdmin):
    """Where an app's deployments are reported (GitHub or GitLab) and with which credential."""

    readonly_fields = ["created_at"]
    list_display = ["__str__", "provider", "api_url", "repository", "enabled", "disabled_reason"]
    list_filter = ["provider", "enabled"]
    search_fields = ["app__slug", "repository"]
    raw_id_fields = ["app"]
    # A token, or a GitHub App's whole private key.
    multiline_secrets = ("credential",)


class GitHostPostAttemptInline(admin.TabularInline):
    model = GitHostPostAttempt
    extra = 0
    can_delete = False
    readonly_fields = ["number", "status", "response_code", "error", "duration_ms", "created_at"]

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(GitHostPost)
class GitHostPostAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "state", "status", "attempts", "response_code", "created_at", "sent_at"]
    list_filter = ["status", "state"]
    inlines = [GitHostPostAttemptInline]


@admin.register(GitHostPostAttempt)
class GitHostPostAttemptAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "status", "response_code", "duration_ms", "created_at"]


@admin.register(GitHostDeployment)
class GitHostDeploymentAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "provider", "external_id", "created_at"]


class EnvVarForm(WriteOnlySecretsForm):
    def clean(self):
        cleaned = super().clean()
        was_secret = self.instance.pk is not None and self.instance.secret
        if was_secret and not cleaned.get("secret") and "value" not in cleaned:
            # Clearing the flag would show the stored secret: ask for a new value instead.
            self.add_error("value", "Set a new value to make this variable non-secret.")
        return cleaned

    def _post_clean(self):
        # The instance now holds the submitted values: apply the API's rules to it (Lambda's key
        # rule, the app's stages and regions, duplicates, the 4 KB limit).
        super()._post_clean()
        if self.errors or getattr(self.instance, "app_id", None) is None:
            return
        try:
            check_env_var(self.instance)
        except DomainError as exc:
            self.add_error(None, exc.detail)


@admin.register(EnvVar)
class EnvVarAdmin(MaskedSecretsAdmin):
    """A plain variable's value is shown and edited as text; a secret's is write-only."""

    form = EnvVarForm
    list_display = ["key", "app", "stage", "region", "secret", "shown_value", "updated_at"]
    list_filter = ["secret", "app__team"]
    search_fields = ["key", "app__slug"]
    readonly_fields = ["created_at", "updated_at"]

    def write_only_fields(self, request, obj=None) -> list[str]:
        return ["value"] if obj is not None and obj.secret else []

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None or not obj.secret:
            kwargs.setdefault("widgets", {})["value"] = forms.Textarea(attrs={"rows": 2})
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        record_env_change(env_var=obj, principal=UserPrincipal(user=request.user), created=not change,
                          request=request)  # fmt: skip

    @admin.display(description="value")
    def shown_value(self, env_var: EnvVar) -> str:
        return MASK if env_var.secret else env_var.value


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "size", "source", "created_at"]
    list_filter = ["source"]
    search_fields = ["app__slug", "sha256"]


@admin.register(Release)
class ReleaseAdmin(ReadOnlyAdmin):
    """``env_snapshot`` (encrypted) is never shown; the secret keys' names are."""

    list_display = ["__str__", "commit_sha", "commit_branch", "created_by", "created_at"]
    search_fields = ["app__slug", "commit_sha"]


class RegionDeploymentInline(admin.TabularInline):
    model = RegionDeployment
    extra = 0
    can_delete = False
    fields = ["region", "status", "wave", "version", "previous_version", "step", "error", "finished_at"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = ["pk", "app", "stage", "kind", "status", "commit_sha", "triggered_by", "created_at"]
    list_filter = ["status", "kind"]
    search_fields = ["app__slug", "commit_sha", "triggered_by"]
    inlines = [RegionDeploymentInline]


@admin.register(RegionDeployment)
class RegionDeploymentAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "region", "status", "version", "previous_version", "step", "finished_at"]
    list_filter = ["status"]


@admin.register(DeploymentEvent)
class DeploymentEventAdmin(ReadOnlyAdmin):
    list_display = ["deployment", "seq", "region", "level", "step", "short_message", "created_at"]
    list_filter = ["level"]

    @admin.display(description="message")
    def short_message(self, event: DeploymentEvent) -> str:
        return event.message[:120]


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "provider", "delivery_id", "event", "app", "outcome", "detail"]
    list_filter = ["provider", "outcome"]
