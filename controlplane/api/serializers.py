"""Serializers of teams, tokens and the audit log, and the pieces every API serializer shares."""

from __future__ import annotations

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from controlplane.choices import Role
from controlplane.models import ApiToken, AuditEntry, Team
from deployments.models import stage_name_validator

from .common import StrictSerializer


class TeamSerializer(serializers.ModelSerializer):
    role = serializers.SerializerMethodField(help_text="The caller's role in the team.")

    class Meta:
        model = Team
        fields = ["slug", "name", "role", "created_at"]

    @extend_schema_field(serializers.ChoiceField(choices=Role.choices))
    def get_role(self, team: Team) -> str | None:
        return self.context["principal"].role_in(team.pk)


class ApiTokenSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    active = serializers.BooleanField(source="is_active", read_only=True)

    class Meta:
        model = ApiToken
        fields = [
            "id",
            "team",
            "name",
            "prefix",
            "role",
            "app",
            "stages",
            "expires_at",
            "last_used_at",
            "revoked_at",
            "created_at",
            "active",
        ]
        read_only_fields = fields


class ApiTokenCreatedSerializer(ApiTokenSerializer):
    token = serializers.SerializerMethodField(help_text="The raw token. Shown this once; store it now.")

    class Meta(ApiTokenSerializer.Meta):
        fields = [*ApiTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields

    def get_token(self, obj) -> str:
        return self.context["raw_token"]


class ApiTokenCreateSerializer(StrictSerializer):
    team = serializers.SlugField(required=False, help_text="Needed only when you administer several teams.")
    name = serializers.CharField(max_length=100)
    role = serializers.ChoiceField(choices=Role.choices, default=Role.DEPLOYER)
    app = serializers.CharField(
        required=False, allow_null=True, help_text="Limit the token to this app (slug)."
    )
    stages = serializers.ListField(
        child=serializers.CharField(validators=[stage_name_validator]),
        required=False,
        default=list,
        help_text="Limit what the token may change to these stages (empty: all).",
    )
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("Must be in the future.")
        return value


class AuditEntrySerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    app = serializers.SerializerMethodField()

    class Meta:
        model = AuditEntry
        fields = [
            "id",
            "team",
            "app",
            "actor",
            "action",
            "object_type",
            "object_id",
            "object_repr",
            "changes",
            "ip",
            "created_at",
        ]
        read_only_fields = fields

    def get_app(self, entry: AuditEntry) -> str | None:
        return entry.app.slug if entry.app_id and entry.app else None
