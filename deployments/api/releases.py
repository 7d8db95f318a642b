"""Rollback, promotion, release history and diffs."""

from __future__ import annotations

from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.access import principal_for
from controlplane.api.common import ErrorSerializer, StrictSerializer, errors
from controlplane.choices import Role
from controlplane.errors import InvalidParameter
from controlplane.pagination import int_parameter
from regions.models import StagePlacement

from ..models import App, Release, Stage
from ..services.deployments import promote
from ..services.releases import diff_releases
from ..services.rollback import rollback
from .deployments import DeploymentSerializer, deployment_queryset, require, visible_app

APP_PARAM = OpenApiParameter("app", str, OpenApiParameter.PATH, description="App slug")
MAX_ID = 2**63 - 1


def stage_of(app: App, name: str, field: str = "stage") -> Stage:
    stage = Stage.objects.filter(app=app, name=name).first()
    if stage is None:
        raise serializers.ValidationError({field: [f"No stage '{name}' in this app."]})
    return stage


def accepted(request, deployment) -> Response:
    deployment = deployment_queryset().get(pk=deployment.pk)
    return Response(
        DeploymentSerializer(deployment, context={"request": request}).data,
        status=status.HTTP_202_ACCEPTED,
    )


class RollbackSerializer(StrictSerializer):
    stage = serializers.CharField(max_length=64)
    to = serializers.CharField(
        required=False, allow_blank=True, allow_null=True, max_length=40,
        help_text="'release:ID', 'deployment:ID' (that deployment's release) or a bare ID, which may "
        "be either among this stage's own deployments and releases (400 `ambiguous_target` when it "
        "is both); default the previous release.",
    )  # fmt: skip
    regions = serializers.ListField(child=serializers.CharField(max_length=32), required=False, max_length=64)


class PromoteSerializer(StrictSerializer):
    from_stage = serializers.CharField(max_length=64)
    to_stage = serializers.CharField(max_length=64)
    force = serializers.BooleanField(required=False, default=False)


@extend_schema(parameters=[APP_PARAM])
class RollbackView(APIView):
    """Move the stage alias back to an earlier release's version in every region (or some)."""

    @extend_schema(
        request=RollbackSerializer,
        responses={
            202: DeploymentSerializer,
            **errors(400, 401, 403, 404, 409),
            503: OpenApiResponse(ErrorSerializer, description="AWS briefly unavailable; nothing changed"),
        },
    )
    def post(self, request, app: str):
        app_obj = visible_app(request, app)
        body = RollbackSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        stage = stage_of(app_obj, body.validated_data["stage"])
        require(request, Role.DEPLOYER, app=app_obj, stage=stage.name)
        deployment = rollback(
            app=app_obj,
            stage=stage,
            principal=principal_for(request),
            to=body.validated_data.get("to"),
            regions=body.validated_data.get("regions") or None,
            request=request,
        )
        return accepted(request, deployment)


@extend_schema(parameters=[APP_PARAM])
class PromoteView(APIView):
    """Ship the release running in one stage to another, without rebuilding."""

    @extend_schema(
        request=PromoteSerializer,
        description="409 `stage_diverged` when the source stage's regions run different releases "
        "(unless `force`), 409 `stage_pinned` when the target stage is pinned (unless `force`).",
        responses={202: DeploymentSerializer, **errors(400, 401, 403, 404, 409)},
    )
    def post(self, request, app: str):
        app_obj = visible_app(request, app)
        body = PromoteSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        source = stage_of(app_obj, body.validated_data["from_stage"], "from_stage")
        target = stage_of(app_obj, body.validated_data["to_stage"], "to_stage")
        require(request, Role.DEPLOYER, app=app_obj, stage=target.name)
        deployment = promote(
            app=app_obj, from_stage=source, to_stage=target, principal=principal_for(request),
            force=body.validated_data["force"], request=request,
        )  # fmt: skip
        return accepted(request, deployment)


class ReleaseSerializer(serializers.ModelSerializer):
    stage = serializers.CharField(source="stage.name")
    artifact = serializers.SerializerMethodField()
    commit = serializers.SerializerMethodField()
    source_release = serializers.PrimaryKeyRelatedField(read_only=True)
    live_in = serializers.SerializerMethodField(help_text="Regions whose stage alias runs this release.")

    class Meta:
        model = Release
        fields = [
            "id", "number", "stage", "artifact", "config", "commit", "source_release", "created_by",
            "created_at", "live_in",
        ]  # fmt: skip

    def get_artifact(self, obj) -> dict:
        return {"id": obj.artifact_id, "sha256": obj.artifact.sha256, "size": obj.artifact.size}

    def get_commit(self, obj) -> dict:
        return {
            "sha": obj.commit_sha, "short_sha": obj.commit_sha[:7], "branch": obj.commit_branch,
            "message": obj.commit_message, "author": obj.commit_author, "url": obj.commit_url,
        }  # fmt: skip

    def get_live_in(self, obj) -> list[str]:
        live = self.context.get("live_in")
        if live is None:  # one release alone (a page is read at once: see AppReleasesView)
            live = live_regions([obj])
        return live.get(obj.pk, [])


def live_regions(releases) -> dict[int, list[str]]:
    """``{release id: sorted region codes whose stage alias runs it}`` for ``releases``, in one query."""
    live: dict[int, list[str]] = {}
    rows = StagePlacement.objects.filter(release__in=[r.pk for r in releases]).values_list(
        "release_id", "placement__region__code"
    )
    for release_id, code in rows:
        live.setdefault(release_id, []).append(code)
    return {pk: sorted(codes) for pk, codes in live.items()}


@extend_schema(
    parameters=[APP_PARAM, OpenApiParameter("stage", str, description="Only this stage's releases")]
)
class AppReleasesView(generics.ListAPIView):
    """The app's releases, newest first."""

    serializer_class = ReleaseSerializer

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Release.objects.none()
        app = visible_app(self.request, self.kwargs["app"])
        qs = Release.objects.filter(app=app).select_related("stage", "artifact")
        stage = self.request.query_params.get("stage")
        if stage:
            qs = qs.filter(stage__name=stage)
        return qs

    def get_serializer(self, *args, **kwargs):
        if args and isinstance(args[0], list):  # a page: where each release is live, in one query
            kwargs["context"] = {**self.get_serializer_context(), "live_in": live_regions(args[0])}
        return super().get_serializer(*args, **kwargs)


class ReleaseDiffView(APIView):
    """What changed between two releases: commit range, env keys, config, artifact."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "against",
                OpenApiTypes.INT,
                required=False,
                description="Release id to compare with; default the stage's previous release.",
            ),
        ],  # fmt: skip
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request, pk: int):
        apps = App.objects.visible_to(principal_for(request))
        release = get_object_or_404(
            Release.objects.filter(app__in=apps).select_related("app", "artifact"), pk=pk
        )
        raw = request.query_params.get("against", "")
        if raw:
            against_pk = int_parameter(request, "against", default=0, minimum=1, maximum=MAX_ID)
            against = get_object_or_404(Release.objects.filter(app=release.app), pk=against_pk)
        else:
            against = (
                Release.objects.filter(stage=release.stage, number__lt=release.number)
                .order_by("-number")
                .first()
            )
            if against is None:
                raise InvalidParameter(
                    "against", "This is the stage's first release: give one to compare with."
                )
        return Response(diff_releases(release=release, against=against))
