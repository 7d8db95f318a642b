"""Teams, API tokens and the audit log."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from controlplane import selectors, services
from controlplane.access import principal_for
from controlplane.choices import Role
from controlplane.models import ApiToken, AuditEntry, Team
from deployments.models import App

from .common import errors, ordered_pagination
from .serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenCreateSerializer,
    ApiTokenSerializer,
    AuditEntrySerializer,
    TeamSerializer,
)


class TeamViewSet(viewsets.GenericViewSet):
    """The caller's teams and its role in each."""

    serializer_class = TeamSerializer
    pagination_class = ordered_pagination("slug")

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Team.objects.none()
        return selectors.teams_for(principal_for(self.request))

    def get_serializer_context(self):
        return {**super().get_serializer_context(), "principal": principal_for(self.request)}

    @extend_schema(summary="List your teams", responses={200: TeamSerializer(many=True), **errors(401)})
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


class ApiTokenViewSet(viewsets.GenericViewSet):
    """A team's API tokens (admins only). The raw token is shown once, when it is created."""

    serializer_class = ApiTokenSerializer
    pagination_class = ordered_pagination("-id")
    required_roles = {"list": Role.ADMIN, "create": Role.ADMIN, "destroy": Role.ADMIN}
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9]+"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ApiToken.objects.none()
        return selectors.tokens_for(principal_for(self.request))

    @extend_schema(
        summary="List the tokens of the teams you administer",
        parameters=[OpenApiParameter("team", str, description="Only this team's tokens (slug).")],
        responses={200: ApiTokenSerializer(many=True), **errors(401, 403)},
    )
    def list(self, request):
        principal = principal_for(request)
        team_ids = principal.manageable_team_ids(Role.ADMIN)
        if not team_ids:
            raise PermissionDenied("Only team admins see the team's tokens.")
        qs = self.get_queryset().filter(team_id__in=team_ids)
        if request.query_params.get("team"):
            qs = qs.filter(team__slug=request.query_params["team"])
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(ApiTokenSerializer(page, many=True).data)

    @extend_schema(
        summary="Create a token",
        request=ApiTokenCreateSerializer,
        responses={201: ApiTokenCreatedSerializer, **errors(400, 401, 403)},
    )
    def create(self, request):
        principal = principal_for(request)
        team = selectors.team_to_manage(principal, slug=_str_or_none(request.data, "team"))
        if not principal.can(Role.ADMIN, team_id=team.pk):
            raise PermissionDenied("Only team admins create tokens.")
        serializer = ApiTokenCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        app = None
        if data.get("app"):
            app = App.objects.visible_to(principal).filter(team=team, slug=data["app"]).first()
            if app is None:
                raise services.InvalidTokenScope(
                    f"The team has no app '{data['app']}'.", fields={"app": ["Unknown app."]}
                )
        token, raw = services.create_api_token(
            team=team,
            name=data["name"],
            role=data["role"],
            app=app,
            stages=data.get("stages", []),
            expires_at=data.get("expires_at"),
            created_by=getattr(principal, "user", None),
            principal=principal,
            request=request,
        )
        body = ApiTokenCreatedSerializer(token, context={"raw_token": raw}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Revoke a token",
        parameters=[OpenApiParameter("id", int, OpenApiParameter.PATH)],
        description="The token stops working at once; it stays listed with its `revoked_at`.",
        responses={204: None, **errors(401, 403, 404)},
    )
    def destroy(self, request, id=None):
        token = self.get_object()
        services.revoke_api_token(token=token, principal=principal_for(request), request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AuditEntryViewSet(viewsets.GenericViewSet):
    """Who did what in the caller's teams, newest first."""

    serializer_class = AuditEntrySerializer
    pagination_class = ordered_pagination("-id")

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return AuditEntry.objects.none()
        return selectors.audit_entries_for(
            principal_for(self.request), team=self.request.query_params.get("team") or None
        )

    @extend_schema(
        summary="The audit log",
        parameters=[OpenApiParameter("team", str, description="Only this team's entries (slug).")],
        responses={200: AuditEntrySerializer(many=True), **errors(401)},
    )
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)


def _str_or_none(data, key: str) -> str | None:
    value = data.get(key) if hasattr(data, "get") else None
    return str(value) if value not in (None, "") else None
