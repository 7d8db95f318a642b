"""Deployments API: create (202), list, detail, the live log, cancel."""

from __future__ import annotations

import math

import django_filters
from django.core.validators import RegexValidator
from django.db.models import Prefetch
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.views import APIView

from controlplane import access
from controlplane.access import principal_for
from controlplane.api.common import StrictSerializer
from controlplane.api.schema import error_response
from controlplane.choices import Role
from controlplane.pagination import int_parameter

from ..choices import DeploymentKind, DeploymentStatus
from ..events import LONG_POLL_MAX_S, wait_for_log
from ..models import App, Artifact, Deployment, DeploymentEvent, RegionDeployment, Stage
from ..selectors import app_for
from ..services.deployments import cancel_deployment, create_deployment, deploy_config

SHA_RE = r"^[0-9a-fA-F]{7,64}$"
MAX_SEQ = 2**31 - 1  # an event's seq is a 32-bit integer column


def visible_app(request, slug: str) -> App:
    """The app by slug if the caller may see it; another team's app is a 404."""
    return app_for(principal=principal_for(request), slug=slug, team=request.query_params.get("team"))


def require(request, role: str, *, app: App, stage: str | None = None) -> None:
    access.require(principal_for(request), role, app=app, stage=stage)


def visible_deployment(request, pk: int) -> Deployment:
    apps = App.objects.visible_to(principal_for(request))
    return get_object_or_404(
        Deployment.objects.filter(app__in=apps).select_related("app", "stage", "release"), pk=pk
    )


# --- Serializers --------------------------------------------------------------------------------


class CommitInSerializer(StrictSerializer):
    sha = serializers.RegexField(SHA_RE, required=False, allow_blank=True)
    branch = serializers.CharField(max_length=255, required=False, allow_blank=True)
    message = serializers.CharField(max_length=10000, required=False, allow_blank=True)
    author = serializers.CharField(max_length=255, required=False, allow_blank=True)
    url = serializers.URLField(max_length=500, required=False, allow_blank=True)


class DeploymentCreateSerializer(StrictSerializer):
    stage = serializers.CharField(max_length=64)
    artifact = serializers.IntegerField(required=False, min_value=1)
    ref = serializers.RegexField(SHA_RE, required=False, allow_blank=True)
    commit = CommitInSerializer(required=False)
    force = serializers.BooleanField(required=False, default=False)
    kind = serializers.ChoiceField(
        choices=["deploy", "config"], default="deploy",
        help_text="'config' ships the stage's current artifact with the current env and config.",
    )  # fmt: skip

    def validate(self, attrs):
        if attrs["kind"] == "config":
            if attrs.get("artifact") or attrs.get("ref"):
                raise serializers.ValidationError("A config deployment takes no artifact or ref.")
        elif bool(attrs.get("artifact")) == bool(attrs.get("ref")):
            raise serializers.ValidationError("Give exactly one of 'artifact' (an id) or 'ref' (a git sha).")
        return attrs


_datetime = serializers.DateTimeField().to_representation  # as every DateTimeField shows one


class RegionDeploymentSerializer(serializers.ModelSerializer):
    region = serializers.CharField(source="region.code")
    canary_until = serializers.DateTimeField(
        source="resume_at", read_only=True, allow_null=True,
        help_text="When the region's canary bake ends (null without a canary).",
    )  # fmt: skip

    class Meta:
        model = RegionDeployment
        fields = [
            "region", "status", "wave", "step", "version", "previous_version", "attempts",
            "started_at", "finished_at", "canary_until", "error", "error_code",
        ]  # fmt: skip

    def to_representation(self, instance) -> dict:
        # What the declared fields give, built directly: a page of deployments has 150 of these,
        # and the generic field-by-field path was a third of the list's CPU.
        return {
            "region": instance.region.code, "status": instance.status, "wave": instance.wave,
            "step": instance.step, "version": instance.version,
            "previous_version": instance.previous_version, "attempts": instance.attempts,
            "started_at": _datetime(instance.started_at), "finished_at": _datetime(instance.finished_at),
            "canary_until": _datetime(instance.resume_at), "error": instance.error,
            "error_code": instance.error_code,
        }  # fmt: skip


class CommitOutSerializer(serializers.Serializer):
    sha = serializers.CharField(source="commit_sha")
    short_sha = serializers.SerializerMethodField()
    branch = serializers.CharField(source="commit_branch")
    message = serializers.CharField(source="commit_message")
    author = serializers.CharField(source="commit_author")
    url = serializers.CharField(source="commit_url")
    count = serializers.IntegerField(source="commit_count", allow_null=True)
    compare_url = serializers.CharField()
    replaced_sha = serializers.SerializerMethodField(help_text="The commit this deployment replaced.")

    def get_short_sha(self, obj) -> str:
        return obj.commit_sha[:7]

    def get_replaced_sha(self, obj) -> str:
        return obj.previous_release.commit_sha if obj.previous_release_id else ""


class DeploymentSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    app = serializers.CharField(source="app.slug")
    stage = serializers.CharField(source="stage.name")
    release = serializers.SerializerMethodField()
    previous_release = serializers.SerializerMethodField()
    commit = CommitOutSerializer(source="*")
    regions = RegionDeploymentSerializer(many=True)

    class Meta:
        model = Deployment
        fields = [
            "id", "url", "app", "stage", "kind", "status", "release", "previous_release", "ref",
            "commit", "triggered_by", "force", "cancel_requested", "error", "created_at",
            "started_at", "finished_at", "regions",
        ]  # fmt: skip

    def get_url(self, obj) -> str:
        return reverse("deployment-detail", args=[obj.pk], request=self.context.get("request"))

    def _release(self, release) -> dict | None:
        if release is None:
            return None
        source = release.source_release
        return {
            "id": release.pk,
            "number": release.number,
            "artifact_sha256": release.artifact.sha256,
            # Promote: the other stage's release; config: the release whose artifact was re-shipped.
            "source_release": (
                {"id": source.pk, "number": source.number, "stage": source.stage.name} if source else None
            ),
        }

    def get_release(self, obj) -> dict | None:
        return self._release(obj.release)

    def get_previous_release(self, obj) -> dict | None:
        return self._release(obj.previous_release)


class EventSerializer(serializers.ModelSerializer):
    region = serializers.CharField(source="region.code", allow_null=True, default=None)

    class Meta:
        model = DeploymentEvent
        fields = ["seq", "created_at", "level", "region", "step", "message", "duration_ms"]


EVENT_COLUMNS = ("seq", "created_at", "level", "region__code", "step", "message", "duration_ms")


def event_rows(rows) -> list[dict]:
    """EventSerializer's output for ``values_list(*EVENT_COLUMNS)`` rows, built directly (a page
    is up to 1,000 lines, followed every second by every open log)."""
    return [
        {"seq": seq, "created_at": _datetime(created_at), "level": level, "region": region,
         "step": step, "message": message, "duration_ms": duration_ms}
        for seq, created_at, level, region, step, message, duration_ms in rows
    ]  # fmt: skip


class EventPageSerializer(serializers.Serializer):
    results = EventSerializer(many=True)
    last_seq = serializers.IntegerField()
    status = serializers.CharField()
    finished = serializers.BooleanField()


# --- Views --------------------------------------------------------------------------------------


class DeploymentFilter(django_filters.FilterSet):
    stage = django_filters.CharFilter(field_name="stage__name", help_text="Only this stage's deployments.")
    status = django_filters.ChoiceFilter(choices=DeploymentStatus.choices)
    sha = django_filters.CharFilter(
        method="filter_sha",
        max_length=64,
        validators=[RegexValidator(r"^\s*[0-9a-fA-F]{4,64}\s*$", "Must be 4 to 64 hex digits of a sha.")],
        help_text="Deployments of commits whose sha starts with this (4 to 64 hex digits).",
    )
    kind = django_filters.ChoiceFilter(choices=DeploymentKind.choices)

    class Meta:
        model = Deployment
        fields = ["stage", "status", "sha", "kind"]

    def filter_sha(self, queryset, name, value):
        # Shas are stored lowercase (commit_fields): a case-sensitive prefix match of the lowercased
        # value finds the same rows and can use the commit_sha index (LIKE 'abc%'), which a
        # case-insensitive one (UPPER(...) LIKE UPPER(...)) cannot.
        value = value.strip().lower()
        return queryset.filter(commit_sha__startswith=value) if value else queryset


_RELEASE_COLUMNS = ("number", "artifact__sha256", "source_release__number", "source_release__stage__name")
# What DeploymentSerializer shows, and nothing more: a page of 50 deployments joins 11 rows each,
# and reading (and converting) every column of the app, the stage, three releases (their frozen
# env included) and two artifacts was most of the list's time.
_DEPLOYMENT_COLUMNS = (
    "app__slug", "stage__name", "kind", "status", "ref", "commit_sha", "commit_branch",
    "commit_message", "commit_author", "commit_url", "commit_count", "compare_url", "triggered_by",
    "force", "cancel_requested", "error", "created_at", "started_at", "finished_at",
    *(f"release__{c}" for c in _RELEASE_COLUMNS), *(f"previous_release__{c}" for c in _RELEASE_COLUMNS),
)  # fmt: skip


def deployment_queryset():
    return (
        Deployment.objects.select_related(
            "app",
            "stage",
            "release__artifact",
            "release__source_release__stage",
            "previous_release__artifact",
            "previous_release__source_release__stage",
        )
        .only(*_DEPLOYMENT_COLUMNS)
        .prefetch_related(
            Prefetch(
                "regions",
                queryset=RegionDeployment.objects.select_related("region").only(
                    "deployment_id",
                    "region__code",
                    "status",
                    "wave",
                    "step",
                    "version",
                    "previous_version",
                    "attempts",
                    "started_at",
                    "finished_at",
                    "resume_at",
                    "error",
                    "error_code",
                ),
            )  # fmt: skip
        )
    )


@extend_schema(parameters=[OpenApiParameter("app", str, OpenApiParameter.PATH, description="App slug")])
class AppDeploymentsView(generics.ListAPIView):
    """The app's deployment log, newest first; POST starts a deployment (202)."""

    serializer_class = DeploymentSerializer
    filterset_class = DeploymentFilter
    ordering = "-id"

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Deployment.objects.none()
        return deployment_queryset().filter(app=visible_app(self.request, self.kwargs["app"]))

    @extend_schema(
        request=DeploymentCreateSerializer,
        responses={
            202: DeploymentSerializer,
            409: error_response(
                409, "`stage_pinned` (unless `force`), `artifact_unavailable` (the artifact's bytes are gone)"
            ),
            422: error_response(422, "`idempotency_key_reused` with another body, `build_failed`"),
        },
        parameters=[
            OpenApiParameter(
                "Idempotency-Key",
                str,
                OpenApiParameter.HEADER,
                required=False,
                description="The same key within 24 h returns the first answer.",
            )  # fmt: skip
        ],
    )
    def post(self, request, app: str):
        app_obj = visible_app(request, app)
        body = DeploymentCreateSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        stage = Stage.objects.filter(app=app_obj, name=data["stage"]).first()
        if stage is None:
            raise serializers.ValidationError({"stage": [f"No stage '{data['stage']}' in this app."]})
        require(request, Role.DEPLOYER, app=app_obj, stage=stage.name)
        artifact = None
        if data.get("artifact"):
            artifact = Artifact.objects.filter(app=app_obj, pk=data["artifact"]).first()
            if artifact is None:
                raise serializers.ValidationError({"artifact": ["No such artifact for this app."]})
        key = request.headers.get("Idempotency-Key", "").strip()
        if len(key) > 255:
            raise serializers.ValidationError({"Idempotency-Key": ["At most 255 characters."]})
        if data["kind"] == "config":
            deployment = deploy_config(
                app=app_obj, stage=stage, principal=principal_for(request), force=data["force"],
                idempotency_key=key,
            )  # fmt: skip
            return Response(
                DeploymentSerializer(
                    deployment_queryset().get(pk=deployment.pk), context={"request": request}
                ).data,
                status=status.HTTP_202_ACCEPTED,
            )
        deployment = create_deployment(
            app=app_obj,
            stage=stage,
            principal=principal_for(request),
            artifact=artifact,
            ref=data.get("ref", ""),
            commit=data.get("commit"),
            force=data["force"],
            idempotency_key=key,
        )
        deployment = deployment_queryset().get(pk=deployment.pk)
        return Response(
            DeploymentSerializer(deployment, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class DeploymentDetailView(generics.RetrieveAPIView):
    """One deployment with per-region status and versions."""

    serializer_class = DeploymentSerializer

    def get_object(self):
        visible_deployment(self.request, self.kwargs["pk"])
        return deployment_queryset().get(pk=self.kwargs["pk"])


def refresh_or_404(deployment: Deployment) -> None:
    """Read the deployment's status again; one deleted meanwhile (a finished teardown takes its
    stage or app, and so its deployments, with it) is a 404, as it would be a moment later."""
    try:
        deployment.refresh_from_db(fields=["status", "finished_at"])
    except Deployment.DoesNotExist:
        raise NotFound("No such deployment.")


def long_poll_seconds(raw: str | None) -> float:
    """The ``wait`` of a long-poll in seconds (0 when absent), capped at LONG_POLL_MAX_S.
    Raises a ValidationError naming ``wait`` for anything but a number from 0."""
    if raw is None or raw == "":
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        wait = -1.0
    if not math.isfinite(wait) or wait < 0:
        raise serializers.ValidationError({"wait": [f"A number of seconds from 0 to {LONG_POLL_MAX_S:.0f}."]})
    return min(wait, LONG_POLL_MAX_S)


class DeploymentEventsView(APIView):
    """The log lines after a sequence number (``?after=SEQ``), oldest first, for following live."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "after",
                {"type": "integer", "minimum": 0, "maximum": MAX_SEQ},
                description="Return lines after this seq (default 0).",
            ),
            OpenApiParameter(
                "limit",
                {"type": "integer", "minimum": 1, "maximum": 1000},
                description="At most this many (1 to 1000, default 500).",
            ),
            OpenApiParameter(
                "wait",
                {"type": "number", "minimum": 0},
                description="Long-poll: when there is no line after `after` yet and the deployment has "
                f"not finished, wait up to this many seconds (at most {LONG_POLL_MAX_S:.0f}) for a line or "
                "the finish before answering. Without it (or 0) the answer is immediate.",
            ),
        ],
        responses={200: EventPageSerializer},
    )
    def get(self, request, pk: int):
        deployment = visible_deployment(request, pk)
        after = int_parameter(request, "after", default=0, minimum=0, maximum=MAX_SEQ)
        limit = int_parameter(request, "limit", default=500, minimum=1, maximum=1000)
        wait = long_poll_seconds(request.query_params.get("wait"))
        lines = (
            DeploymentEvent.objects.filter(deployment=deployment, seq__gt=after)
            .order_by("seq")
            .values_list(*EVENT_COLUMNS)[:limit]
        )
        events = list(lines)
        refresh_or_404(deployment)
        if wait and not events and deployment.finished_at is None:
            wait_for_log(deployment.pk, after=after, timeout=wait)
            events = list(lines.all())
            refresh_or_404(deployment)
        return Response(
            {
                "results": event_rows(events),
                "last_seq": events[-1][0] if events else after,
                "status": deployment.status,
                "finished": deployment.finished_at is not None,
            }
        )


class DeploymentCancelView(APIView):
    """Stop regions that have not started; running regions stop before their next step."""

    @extend_schema(
        request=None,
        responses={
            202: DeploymentSerializer,
            409: error_response(409, "The deployment has already finished"),
        },
    )
    def post(self, request, pk: int):
        deployment = visible_deployment(request, pk)
        require(request, Role.DEPLOYER, app=deployment.app, stage=deployment.stage.name)
        deployment = cancel_deployment(deployment=deployment, principal=principal_for(request))
        deployment = deployment_queryset().get(pk=deployment.pk)
        return Response(
            DeploymentSerializer(deployment, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )
