"""Serializers of apps, stages and env vars: output shapes and the checked input of each write."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from controlplane.api.common import StrictSerializer
from deployments.choices import LAMBDA_RUNTIMES
from deployments.models import App, EnvVar, Stage, slug_validator, stage_name_validator
from deployments.selectors import region_summaries
from regions.catalog import validate_region_code
from regions.endpoints import global_endpoint, resolve_endpoint
from regions.models import Region

# --- Output -----------------------------------------------------------------------------------


class StageSummarySerializer(serializers.ModelSerializer):
    class Meta:
        model = Stage
        fields = ["name", "branch", "domain", "pinned"]
        read_only_fields = fields


HEALTH_CHOICES = ["up", "down", "unknown"]


class AppRegionStageSerializer(serializers.Serializer):
    version = serializers.CharField(
        allow_null=True, help_text="The Lambda version the stage alias points at."
    )
    endpoint = serializers.URLField(allow_null=True)
    health = serializers.ChoiceField(choices=HEALTH_CHOICES)


class AppRegionStageStateSerializer(AppRegionStageSerializer):
    release = serializers.IntegerField(
        allow_null=True, help_text="The number of the release the stage serves here (the current release)."
    )
    deploy_status = serializers.CharField(
        help_text="The status, in this region, of the last deployment that shipped that release."
    )
    warning = serializers.CharField(
        help_text="Non-empty when this region serves a release whose deploy failed or was not verified."
    )


class AppRegionSummarySerializer(serializers.Serializer):
    """An app in one region (read-only; documents ``deployments.selectors.region_summaries``)."""

    region = serializers.CharField()
    endpoint = serializers.URLField(allow_null=True, help_text="The regional API endpoint.")
    health = serializers.ChoiceField(choices=HEALTH_CHOICES, help_text="The worst of its stages' health.")
    versions = serializers.DictField(
        child=serializers.CharField(allow_null=True), help_text="{stage: the Lambda version it runs}"
    )
    stages = serializers.DictField(child=AppRegionStageStateSerializer(), help_text="{stage: its state here}")


class StageRegionSerializer(AppRegionStageSerializer):
    region = serializers.CharField()


class AppSerializer(serializers.ModelSerializer):
    """An app. ``webhook_secret`` is shown only to admins, in the detail and the create answer."""

    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    url = serializers.SerializerMethodField()
    stages = StageSummarySerializer(many=True, read_only=True)
    regions = serializers.SerializerMethodField()
    webhook_secret = serializers.SerializerMethodField(
        help_text="The git-push webhook secret; null unless you are an admin viewing one app."
    )
    webhook_secret_masked = serializers.SerializerMethodField()
    git_credential_set = serializers.SerializerMethodField(
        help_text="Whether builds fetch the repository with a git credential. The credential itself "
        "is write-only: no answer ever contains it."
    )

    class Meta:
        model = App
        fields = [
            "slug",
            "team",
            "url",
            "name",
            "repo_url",
            "runtime",
            "handler",
            "memory_mb",
            "timeout_s",
            "health_path",
            "health_expected_status",
            "health_expected_text",
            "build_command",
            "build_output_dir",
            "build_network",
            "stages",
            "regions",
            "webhook_secret",
            "webhook_secret_masked",
            "git_credential_set",
            "created_at",
        ]
        read_only_fields = fields

    def get_url(self, app: App) -> str:
        return reverse("app-detail", kwargs={"app": app.slug}, request=self.context.get("request"))

    @extend_schema_field(AppRegionSummarySerializer(many=True))
    def get_regions(self, app: App) -> list[dict]:
        return region_summaries(app, states=self.context.get("stage_states"))

    def _reveal(self, app: App) -> bool:
        return app.pk in self.context.get("reveal_secret_of", ())

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_webhook_secret(self, app: App) -> str | None:
        return app.webhook_secret if self._reveal(app) else None

    def get_webhook_secret_masked(self, app: App) -> bool:
        return not self._reveal(app)

    def get_git_credential_set(self, app: App) -> bool:
        return bool(app.git_credential)


class WebhookSecretSerializer(serializers.Serializer):
    webhook_secret = serializers.CharField(help_text="The new secret. Shown this once.")


class StageSerializer(serializers.ModelSerializer):
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    regions = serializers.SerializerMethodField()
    global_url = serializers.SerializerMethodField(
        help_text="Where the stage's domain answers (latency-routed to the nearest healthy region); "
        "null without a domain."
    )

    class Meta:
        model = Stage
        fields = [
            "name",
            "app",
            "branch",
            "domain",
            "global_url",
            "hosted_zone_id",
            "rollout",
            "pinned",
            "pinned_reason",
            "pinned_at",
            "regions",
            "created_at",
        ]
        read_only_fields = fields

    def get_global_url(self, stage: Stage) -> str | None:
        return global_endpoint(stage.domain) or None

    @extend_schema_field(StageRegionSerializer(many=True))
    def get_regions(self, stage: Stage) -> list[dict]:
        return [
            {
                "region": sp.placement.region.code,
                "version": sp.version or None,
                "endpoint": resolve_endpoint(sp) or None,
                "health": sp.health_status,
            }
            for sp in stage.placements.all()
        ]


class EnvVarSerializer(serializers.ModelSerializer):
    """An env var. A secret's value is never returned: ``value`` is null and ``masked`` true."""

    stage = serializers.SlugRelatedField(slug_field="name", read_only=True, allow_null=True)
    region = serializers.SlugRelatedField(slug_field="code", read_only=True, allow_null=True)
    value = serializers.SerializerMethodField()
    masked = serializers.SerializerMethodField()

    class Meta:
        model = EnvVar
        fields = ["id", "key", "value", "masked", "secret", "stage", "region", "created_at", "updated_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_value(self, env_var: EnvVar) -> str | None:
        return None if env_var.secret else env_var.value

    def get_masked(self, env_var: EnvVar) -> bool:
        return env_var.secret


# --- Input ------------------------------------------------------------------------------------

MAX_GIT_CREDENTIAL = 16_000  # an RSA-4096 private key in PEM is about 3.3 KB


def _check_region_code(code: str) -> str:
    problem = validate_region_code(code)
    if problem:
        raise serializers.ValidationError(problem)
    return code


class AppUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    repo_url = serializers.CharField(max_length=500, required=False, allow_blank=True)
    runtime = serializers.CharField(required=False, help_text=f"One of: {', '.join(LAMBDA_RUNTIMES)}.")
    handler = serializers.CharField(max_length=128, required=False)
    memory_mb = serializers.IntegerField(min_value=128, max_value=10240, required=False)
    timeout_s = serializers.IntegerField(min_value=1, max_value=900, required=False)
    health_path = serializers.RegexField(
        r"^/\S*$", max_length=200, required=False, error_messages={"invalid": "Must start with '/'."}
    )
    health_expected_status = serializers.IntegerField(min_value=100, max_value=599, required=False)
    health_expected_text = serializers.CharField(max_length=255, required=False, allow_blank=True)
    build_command = serializers.CharField(max_length=1000, required=False, allow_blank=True)
    build_output_dir = serializers.CharField(max_length=200, required=False, allow_blank=True)
    build_network = serializers.BooleanField(
        required=False,
        help_text="Whether the build may reach public addresses (through the sandbox's proxy) to fetch "
        "dependencies; never loopback, private or metadata addresses. Default true.",
    )
    git_credential = serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        trim_whitespace=False,
        max_length=MAX_GIT_CREDENTIAL,
        style={"input_type": "password"},
        help_text="Write-only; admins only. What builds fetch repo_url with: a token, `user:token`, or "
        "an SSH private key (PEM/OpenSSH, newlines kept). Stored encrypted and never returned (see "
        '`git_credential_set`); "" removes it.',
    )
    regions = serializers.ListField(
        child=serializers.CharField(max_length=32, validators=[_check_region_code]),
        required=False,
        help_text="Region codes; every one must be enabled. Changing them needs an admin.",
    )

    def validate_git_credential(self, value: str) -> str:
        if "PRIVATE KEY-----" in value and "-----END" not in value:
            raise serializers.ValidationError(
                "This looks like the start of an SSH private key without its END line; send the whole "
                "key with its newlines."
            )
        return value

    def validate_runtime(self, value: str) -> str:
        if value not in LAMBDA_RUNTIMES:
            raise serializers.ValidationError(
                f"'{value}' is not a supported Lambda runtime: use one of {', '.join(LAMBDA_RUNTIMES)}."
            )
        return value


class AppCreateSerializer(AppUpdateSerializer):
    team = serializers.SlugField(required=False, help_text="Needed only when you administer several teams.")
    slug = serializers.CharField(max_length=40, validators=[slug_validator])
    runtime = serializers.CharField(help_text=f"One of: {', '.join(LAMBDA_RUNTIMES)}.")
    regions = serializers.ListField(
        child=serializers.CharField(max_length=32, validators=[_check_region_code]),
        min_length=1,
        help_text="Region codes; every one must be enabled.",
    )


class StageUpdateSerializer(StrictSerializer):
    branch = serializers.CharField(max_length=255, required=False, allow_blank=True)
    domain = serializers.CharField(max_length=253, required=False, allow_blank=True)
    hosted_zone_id = serializers.CharField(max_length=64, required=False, allow_blank=True)
    rollout = serializers.JSONField(
        required=False,
        help_text='{"waves": [["us-east-1"], ["*"]], "bake_s": 0-3600, "on_failure": "leave" | "rollback", '
        '"canary": {"percent": 1-99, "bake_s": 0-3600}, "keep_failed": false}',
    )
    pinned = serializers.BooleanField(required=False)
    pinned_reason = serializers.CharField(max_length=500, required=False, allow_blank=True)


class StageCreateSerializer(StageUpdateSerializer):
    name = serializers.CharField(max_length=64, validators=[stage_name_validator])


class EnvVarUpdateSerializer(StrictSerializer):
    # Key rules (Lambda's) are the service's, so a bad key answers ``invalid_env_var``.
    key = serializers.CharField(required=False, allow_blank=True)
    value = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    secret = serializers.BooleanField(required=False)
    stage = serializers.CharField(
        required=False, allow_null=True, help_text="A stage name; null: all stages."
    )
    region = serializers.CharField(
        required=False, allow_null=True, help_text="A region code; null: all regions."
    )

    def validate_stage(self, name: str | None) -> Stage | None:
        if name is None:
            return None
        stage = Stage.objects.filter(app=self.context["app"], name=name).first()
        if stage is None:
            raise serializers.ValidationError(f"The app has no stage '{name}'.")
        return stage

    def validate_region(self, code: str | None) -> Region | None:
        if code is None:
            return None
        region = Region.objects.filter(code=code, placements__app=self.context["app"]).first()
        if region is None:
            raise serializers.ValidationError(f"'{code}' is not one of the app's regions.")
        return region


class EnvVarCreateSerializer(EnvVarUpdateSerializer):
    key = serializers.CharField(allow_blank=True)
    value = serializers.CharField(allow_blank=True, trim_whitespace=False)
    secret = serializers.BooleanField(default=False)
    stage = serializers.CharField(
        required=False, allow_null=True, default=None, help_text="A stage name; null: all stages."
    )
    region = serializers.CharField(
        required=False, allow_null=True, default=None, help_text="A region code; null: all regions."
    )
