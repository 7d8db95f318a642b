"""An app's git host connection: where its deployments are reported (GitHub or GitLab)."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane import urlsafety
from controlplane.access import principal_for
from controlplane.api.common import StrictSerializer, errors
from controlplane.choices import Role
from controlplane.errors import NotFound

from .. import git_host
from ..choices import GitHostProvider
from ..models import GitHostConnection
from .apps import AppScopedMixin
from .oidc import REPOSITORY_RE

MAX_CREDENTIAL = 16_000  # a GitHub App's private key in PEM is under 2 KB


class GitHostSerializer(serializers.ModelSerializer):
    credential_set = serializers.SerializerMethodField(help_text="The credential itself is write-only.")

    class Meta:
        model = GitHostConnection
        fields = [
            "provider", "api_url", "repository", "github_app_id", "installation_id", "enabled",
            "disabled_reason", "credential_set", "created_at",
        ]  # fmt: skip
        read_only_fields = fields

    def get_credential_set(self, conn) -> bool:
        return bool(conn.credential)


class GitHostInputSerializer(StrictSerializer):
    provider = serializers.ChoiceField(choices=GitHostProvider.choices, required=False)
    api_url = serializers.CharField(max_length=500, required=False, allow_blank=True)
    repository = serializers.CharField(max_length=255, required=False, allow_blank=True)
    credential = serializers.CharField(
        max_length=MAX_CREDENTIAL, required=False, trim_whitespace=False, write_only=True,
        help_text="A token (GitHub: Deployments and Commit statuses read/write; GitLab: api scope), "
        "or the GitHub App's private key (PEM) with github_app_id and installation_id.",
    )  # fmt: skip
    github_app_id = serializers.RegexField(r"^\d{0,20}$", required=False, allow_blank=True)
    installation_id = serializers.RegexField(r"^\d{0,20}$", required=False, allow_blank=True)
    enabled = serializers.BooleanField(required=False)

    def validate_api_url(self, value: str) -> str:
        if value:
            urlsafety.check_url(value)
        return value.rstrip("/")

    def validate_repository(self, value: str) -> str:
        if value and not REPOSITORY_RE.match(value):
            raise serializers.ValidationError("Use owner/name (GitHub) or group/project (GitLab).")
        return value

    def validate(self, attrs):
        existing = self.context.get("existing")
        merged = {
            k: attrs.get(k, getattr(existing, k, ""))
            for k in ("provider", "credential", "github_app_id", "installation_id")
        }
        if not merged["provider"]:
            raise serializers.ValidationError({"provider": ["Required: github or gitlab."]})
        if not merged["credential"]:
            raise serializers.ValidationError({"credential": ["Required."]})
        if bool(merged["github_app_id"]) != bool(merged["installation_id"]):
            raise serializers.ValidationError("A GitHub App needs both github_app_id and installation_id.")
        if merged["github_app_id"] and merged["provider"] != GitHostProvider.GITHUB:
            raise serializers.ValidationError({"github_app_id": ["Only for GitHub."]})
        return attrs


class AppGitHostView(AppScopedMixin, APIView):
    """``GET``: the app's connection (viewers); ``PUT``: set it, ``DELETE``: remove it (admins)."""

    def _conn(self) -> GitHostConnection:
        conn = GitHostConnection.objects.filter(app=self.get_app()).first()
        if conn is None:
            raise NotFound(f"{self.get_app().slug} reports to no git host.")
        return conn

    @extend_schema(
        summary="The app's git host connection", responses={200: GitHostSerializer, **errors(401, 404)}
    )
    def get(self, request, app: str):
        self.check_app_role(Role.VIEWER)
        return Response(GitHostSerializer(self._conn()).data)

    @extend_schema(
        summary="Report the app's deployments to GitHub or GitLab (admins)",
        request=GitHostInputSerializer,
        responses={200: GitHostSerializer, **errors(400, 401, 403, 404)},
    )
    def put(self, request, app: str):
        self.check_app_role(Role.ADMIN)
        existing = GitHostConnection.objects.filter(app=self.get_app()).first()
        body = GitHostInputSerializer(data=request.data, context={"existing": existing})
        body.is_valid(raise_exception=True)
        conn = git_host.set_connection(
            principal=principal_for(request),
            app=self.get_app(),
            data=dict(body.validated_data),
            request=request,
        )
        return Response(GitHostSerializer(conn).data)

    @extend_schema(
        summary="Stop reporting to the git host (admins)", responses={204: None, **errors(401, 403, 404)}
    )
    def delete(self, request, app: str):
        self.check_app_role(Role.ADMIN)
        self._conn()
        git_host.delete_connection(principal=principal_for(request), app=self.get_app(), request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)
