"""Regions of the installation; the bucket and role are shown to admins only."""

from __future__ import annotations

from rest_framework import serializers

from controlplane.api.common import StrictSerializer
from regions.models import Region

ADMIN_ONLY_FIELDS = ("artifact_bucket", "role_arn")


class RegionSerializer(serializers.ModelSerializer):
    # Not required in the schema: they are left out for callers who are not admins.
    artifact_bucket = serializers.CharField(required=False, help_text="Admins only.")
    role_arn = serializers.CharField(required=False, help_text="Admins only.")

    class Meta:
        model = Region
        fields = ["code", "name", "enabled", "artifact_bucket", "role_arn", "created_at"]
        read_only_fields = ["code", "name", "enabled", "created_at"]

    def to_representation(self, region):
        data = super().to_representation(region)
        if not self.context.get("show_admin_fields"):
            for name in ADMIN_ONLY_FIELDS:
                data.pop(name, None)
        return data


class RegionUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)
    artifact_bucket = serializers.RegexField(
        r"^([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])?$",
        required=False,
        allow_blank=True,
        help_text="The S3 bucket for artifacts in this region (empty: controlplane-artifacts-<code>).",
    )
    role_arn = serializers.RegexField(
        r"^(arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512})?$",
        required=False,
        allow_blank=True,
        help_text="An IAM role to assume for every call in this region (empty: none).",
    )


class RegionCreateSerializer(RegionUpdateSerializer):
    code = serializers.CharField(max_length=32, help_text="An AWS region code, like 'eu-west-1'.")


class ReadinessCheckSerializer(serializers.Serializer):
    name = serializers.CharField(help_text="What was checked, e.g. 'artifact bucket'.")
    ok = serializers.BooleanField()
    detail = serializers.CharField(help_text="What was found.")
    fix = serializers.CharField(help_text="What to do when not ok ('' when ok).")


class RegionReadinessSerializer(serializers.Serializer):
    region = serializers.CharField()
    ok = serializers.BooleanField(help_text="Every check passed.")
    checks = ReadinessCheckSerializer(many=True)
