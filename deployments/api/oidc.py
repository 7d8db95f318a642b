"""Keyless login from CI: the OIDC exchange, and the per-app trust policies admins manage."""

from __future__ import annotations

import re

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers, status, viewsets
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane import urlsafety
from controlplane.access import principal_for
from controlplane.api.common import ErrorSerializer, StrictSerializer, errors, ordered_pagination
from controlplane.choices import Role
from controlplane.errors import NotFound

from ..models import GITHUB_ACTIONS_ISSUER, OidcTrustPolicy, Stage
from ..services import oidc
from .apps import AppScopedMixin

REPOSITORY_RE = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")


class OidcExchangeSerializer(StrictSerializer):
    token = serializers.CharField(max_length=20000, help_text="The CI provider's OIDC ID token (a JWT).")
    app = serializers.SlugField(max_length=40, help_text="The app to log in to.")
    team = serializers.SlugField(max_length=63, required=False, allow_blank=True)


class OidcExchangeView(APIView):
    """Exchange a CI provider's OIDC ID token for a short-lived API token of one app."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        summary="Log in from CI with an OIDC ID token",
        description="No API token needed: the body's `token` is the CI's ID token (GitHub Actions with "
        "`id-token: write`, GitLab CI `id_tokens`), whose `aud` must be this installation "
        "(`OIDC_AUDIENCE`, by default `SITE_URL`). When one of the app's trust policies matches its "
        "claims, the answer holds an API token scoped to the app and the policy's stages, valid for at "
        "most 15 minutes. `401 oidc_invalid_token` for a token that does not verify (signature, issuer, "
        "audience, expiry, algorithm), `403 oidc_no_policy` when no policy matches.",
        request=OidcExchangeSerializer,
        responses={
            200: inline_serializer(
                "OidcExchangeAnswer",
                {
                    "token": serializers.CharField(help_text="Use as `Authorization: Bearer`. Shown once."),
                    "expires_at": serializers.DateTimeField(),
                    "app": serializers.CharField(),
                    "team": serializers.CharField(),
                    "stages": serializers.ListField(child=serializers.CharField()),
                    "role": serializers.CharField(),
                    "policy": serializers.IntegerField(),
                },
            ),
            401: ErrorSerializer,
            403: ErrorSerializer,
            **errors(400),
        },
    )
    def post(self, request):
        body = OidcExchangeSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        answer = oidc.exchange(
            token=data["token"], app=data["app"], team=data.get("team", ""), request=request
        )
        return Response(answer, headers={"Cache-Control": "no-store"})


class OidcPolicySerializer(serializers.ModelSerializer):
    class Meta:
        model = OidcTrustPolicy
        fields = [
            "id", "name", "issuer", "repository", "ref", "environment", "workflow", "stages", "role",
            "enabled", "created_by", "created_at",
        ]  # fmt: skip
        read_only_fields = fields


class OidcPolicyInputSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    issuer = serializers.CharField(
        max_length=500, required=False, default=GITHUB_ACTIONS_ISSUER,
        help_text="The OIDC issuer: GitHub Actions by default; GitLab: https://gitlab.com or your own.",
    )  # fmt: skip
    repository = serializers.CharField(
        max_length=255, help_text="owner/name (GitHub), group/project (GitLab)."
    )
    ref = serializers.CharField(
        max_length=255, required=False, allow_blank=True,
        help_text="A branch glob ('main', 'release/*') or a full ref glob ('refs/tags/v*'); empty: any.",
    )  # fmt: skip
    environment = serializers.CharField(max_length=255, required=False, allow_blank=True)
    workflow = serializers.CharField(
        max_length=255, required=False, allow_blank=True,
        help_text="A glob on the workflow file ('.github/workflows/deploy.yml') or its name; empty: any.",
    )  # fmt: skip
    stages = serializers.ListField(child=serializers.CharField(max_length=64), required=False, default=list)
    role = serializers.CharField(
        required=False, default=Role.DEPLOYER, help_text="The exchanged token's role: deployer or viewer."
    )
    enabled = serializers.BooleanField(required=False, default=True)

    def validate_issuer(self, value: str) -> str:
        value = value.rstrip("/")
        urlsafety.check_url(value)
        return value

    def validate_role(self, value: str) -> str:
        if value not in (Role.VIEWER, Role.DEPLOYER):
            raise serializers.ValidationError("A trust policy grants 'deployer' or 'viewer'.")
        return value

    def validate_repository(self, value: str) -> str:
        if not REPOSITORY_RE.match(value):
            raise serializers.ValidationError("Use owner/name (GitHub) or group/project (GitLab).")
        return value

    def validate_stages(self, names: list[str]) -> list[str]:
        app = self.context["app"]
        known = set(Stage.objects.filter(app=app).values_list("name", flat=True))
        unknown = sorted(set(names) - known)
        if unknown:
            raise serializers.ValidationError(f"The app has no stage {', '.join(unknown)}.")
        return sorted(set(names))


POLICY_ID = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The policy's id.")


class OidcPolicyViewSet(AppScopedMixin, viewsets.GenericViewSet):
    """An app's OIDC trust policies: which CI jobs may log in as the app without a stored secret."""

    serializer_class = OidcPolicySerializer
    pagination_class = ordered_pagination("id")
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9]+"
    required_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "create": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return OidcTrustPolicy.objects.none()
        return OidcTrustPolicy.objects.filter(app=self.get_app()).select_related("app__team").order_by("id")

    def get_object(self) -> OidcTrustPolicy:
        policy = self.get_queryset().filter(pk=self.kwargs["id"]).first()
        if policy is None:
            raise NotFound(f"{self.get_app().slug} has no trust policy {self.kwargs['id']}.")
        self.check_object_permissions(self.request, policy)
        return policy

    @extend_schema(
        summary="List an app's OIDC trust policies", responses={200: OidcPolicySerializer(many=True)}
    )
    def list(self, request, app=None):
        self.check_app_role(Role.VIEWER)
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Trust a CI job (admins)",
        request=OidcPolicyInputSerializer,
        responses={201: OidcPolicySerializer, **errors(400, 401, 403, 404)},
    )
    def create(self, request, app=None):
        self.check_app_role(Role.ADMIN)
        body = OidcPolicyInputSerializer(data=request.data, context={"app": self.get_app()})
        body.is_valid(raise_exception=True)
        policy = oidc.create_policy(
            principal=principal_for(request),
            app=self.get_app(),
            data=dict(body.validated_data),
            request=request,
        )
        return Response(OidcPolicySerializer(policy).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="One OIDC trust policy", parameters=[POLICY_ID], responses={200: OidcPolicySerializer}
    )
    def retrieve(self, request, app=None, id=None):
        return Response(OidcPolicySerializer(self.get_object()).data)

    @extend_schema(
        summary="Change an OIDC trust policy (admins)",
        parameters=[POLICY_ID],
        request=OidcPolicyInputSerializer,
        responses={200: OidcPolicySerializer, **errors(400, 401, 403, 404)},
    )
    def partial_update(self, request, app=None, id=None):
        policy = self.get_object()
        body = OidcPolicyInputSerializer(data=request.data, partial=True, context={"app": self.get_app()})
        body.is_valid(raise_exception=True)
        policy = oidc.update_policy(
            principal=principal_for(request), policy=policy, data=dict(body.validated_data), request=request
        )
        return Response(OidcPolicySerializer(policy).data)

    @extend_schema(
        summary="Delete an OIDC trust policy (admins)", parameters=[POLICY_ID], responses={204: None}
    )
    def destroy(self, request, app=None, id=None):
        oidc.delete_policy(principal=principal_for(request), policy=self.get_object(), request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)
