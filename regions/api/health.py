"""``GET /api/v1/apps/{app}/health/``: per stage and region, status, last probe, latency and
open incident; plus the app's recent incidents."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.access import principal_for
from deployments.selectors import app_for

from ..choices import HealthStatus
from ..health import probe_lease
from ..selectors import app_health


class IncidentSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    region = serializers.CharField(source="stage_placement.placement.region.code")
    stage = serializers.CharField(source="stage_placement.stage.name")
    opened_at = serializers.DateTimeField()
    closed_at = serializers.DateTimeField(allow_null=True)
    open = serializers.SerializerMethodField()
    duration_s = serializers.FloatField()
    reason = serializers.CharField()

    def get_open(self, incident) -> bool:
        return incident.closed_at is None


class LastProbeField(serializers.DateTimeField):
    """While a round probes a placement, ``last_probe_at`` holds the round's claim, which expires
    :func:`~regions.health.probe_lease` seconds after the round started: shown as that start."""

    def to_representation(self, value):
        if value is not None and value > timezone.now():
            value -= timedelta(seconds=probe_lease())
        return super().to_representation(value)


class RegionHealthSerializer(serializers.Serializer):
    region = serializers.CharField()
    stage = serializers.CharField()
    live = serializers.BooleanField()
    version = serializers.CharField(allow_null=True)
    status = serializers.ChoiceField(choices=HealthStatus.choices)
    endpoint = serializers.CharField(allow_null=True)
    last_probe_at = LastProbeField(allow_null=True)
    latency_ms = serializers.FloatField(allow_null=True)
    consecutive_failures = serializers.IntegerField()
    route53_status = serializers.CharField(allow_null=True)
    open_incident = IncidentSerializer(allow_null=True)


class AppHealthSerializer(serializers.Serializer):
    app = serializers.CharField()
    status = serializers.ChoiceField(choices=HealthStatus.choices)
    regions = RegionHealthSerializer(many=True)
    incidents = IncidentSerializer(many=True)


class AppHealthView(APIView):
    """Health of an app in every region it runs in (viewers and up)."""

    @extend_schema(
        responses=AppHealthSerializer,
        parameters=[
            OpenApiParameter("stage", OpenApiTypes.STR, description="Only this stage."),
            OpenApiParameter(
                "team", OpenApiTypes.STR, description="Team slug, when two teams share the app slug."
            ),
        ],
    )
    def get(self, request, app: str):
        found = app_for(principal=principal_for(request), slug=app, team=request.query_params.get("team"))
        data = app_health(app=found, stage=request.query_params.get("stage") or None)
        return Response(AppHealthSerializer(data).data)
