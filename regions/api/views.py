"""Regions of the installation: everyone reads them, team admins add and change them."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import permissions, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from controlplane.access import principal_for
from controlplane.api.common import errors, ordered_pagination
from controlplane.errors import Forbidden, NotFound
from regions import readiness, services
from regions.models import Region

from .serializers import (
    RegionCreateSerializer,
    RegionReadinessSerializer,
    RegionSerializer,
    RegionUpdateSerializer,
)

CODE_PARAM = OpenApiParameter(
    "code", str, OpenApiParameter.PATH, description="Region code, like 'us-east-1'."
)


class RegionPermission(permissions.BasePermission):
    """Any authenticated caller reads; writes need a team admin (regions serve every team)."""

    message = "Only team admins manage the installation's regions."

    def has_permission(self, request, view) -> bool:
        principal = principal_for(request)
        if principal is None:
            return False
        return request.method in permissions.SAFE_METHODS or principal.can_manage_regions()


class RegionViewSet(viewsets.GenericViewSet):
    serializer_class = RegionSerializer
    permission_classes = [RegionPermission]
    pagination_class = ordered_pagination("code")
    lookup_field = "code"
    lookup_value_regex = r"[a-z0-9-]+"

    def get_queryset(self):
        return Region.objects.all()

    def get_serializer_context(self):
        principal = principal_for(self.request) if self.request is not None else None
        return {
            **super().get_serializer_context(),
            "show_admin_fields": principal is not None and principal.can_manage_regions(),
        }

    def _region(self, code: str) -> Region:
        region = Region.objects.filter(code=code).first()
        if region is None:
            raise NotFound(f"No region '{code}' on this installation.")
        return region

    @extend_schema(summary="List regions", responses={200: RegionSerializer(many=True), **errors(401)})
    def list(self, request):
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="One region", parameters=[CODE_PARAM], responses={200: RegionSerializer, **errors(401, 404)}
    )
    def retrieve(self, request, code=None):
        return Response(self.get_serializer(self._region(code)).data)

    @extend_schema(
        summary="Add a region",
        request=RegionCreateSerializer,
        responses={201: RegionSerializer, **errors(400, 401, 403)},
    )
    def create(self, request):
        serializer = RegionCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        region = services.create_region(
            principal=principal_for(request), request=request, **serializer.validated_data
        )
        return Response(self.get_serializer(region).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change a region",
        parameters=[CODE_PARAM],
        request=RegionUpdateSerializer,
        responses={200: RegionSerializer, **errors(400, 401, 403, 404)},
    )
    def partial_update(self, request, code=None):
        region = self._region(code)
        serializer = RegionUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        region = services.update_region(
            principal=principal_for(request), region=region, data=serializer.validated_data, request=request
        )
        return Response(self.get_serializer(region).data)

    @extend_schema(
        summary="Check a region is ready for deploys",
        description="Admins only. Credentials and the role to assume, the artifact bucket, the Lambda "
        "execution role, access to the hosted zones of the stages deployed there, the ACM certificate "
        "quota and the account's Lambda concurrency: a line per check, ok or what to fix. Calls AWS.",
        parameters=[CODE_PARAM],
        responses={200: RegionReadinessSerializer, **errors(401, 403, 404)},
    )
    @action(detail=True, methods=["get"], url_path="check")
    def check(self, request, code=None):
        if not principal_for(request).can_manage_regions():
            raise Forbidden("Only team admins check the installation's regions.")
        region = self._region(code)
        checks = [c.as_dict() for c in readiness.check_region(region)]
        body = {"region": region.code, "ok": all(c["ok"] for c in checks), "checks": checks}
        return Response(RegionReadinessSerializer(body).data)
