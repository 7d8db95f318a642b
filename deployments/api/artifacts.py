"""Uploading an artifact: a zip checked against Lambda's rules and stored content-addressed."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane import access
from controlplane.access import principal_for
from controlplane.api.common import ErrorSerializer, StrictSerializer, errors
from controlplane.choices import Role
from controlplane.parsers import MultiPartParser

from .. import artifacts
from ..models import Artifact
from ..selectors import app_for

# Multipart framing around the file: a body this much over the zip limit cannot hold a valid zip.
MULTIPART_SLACK = 64 * 1024


class ArtifactUploadSerializer(StrictSerializer):
    file = serializers.FileField(help_text="The zip: your function's code, the handler's module at its top.")
    sha256 = serializers.RegexField(
        r"^[0-9a-fA-F]{64}$",
        required=False,
        allow_blank=True,
        help_text="The zip's sha256 (hex). When given, an upload that arrives different is refused.",
    )


class ArtifactSerializer(serializers.ModelSerializer):
    deduplicated = serializers.SerializerMethodField(
        help_text="True when this app already had these exact bytes: the existing artifact is returned."
    )

    class Meta:
        model = Artifact
        fields = ["id", "sha256", "size", "unzipped_size", "source", "tree_sha", "created_at", "deduplicated"]

    def get_deduplicated(self, artifact) -> bool:
        return bool(getattr(artifact, "deduplicated", False))


class AppArtifactsView(APIView):
    """Upload a zip for an app; deploy it by passing its ``id`` as ``artifact`` to the deployments API."""

    parser_classes = [MultiPartParser]
    max_request_body = artifacts.MAX_ZIPPED_BYTES + MULTIPART_SLACK

    @extend_schema(
        summary="Upload an artifact",
        description="Multipart upload of a zip (field `file`, optional `sha256`). Answers 201 with the "
        "new artifact, or 200 with `deduplicated: true` and the existing one when this app already has "
        "the same bytes. Refused: not a zip (`invalid_artifact`), paths leaving the zip "
        "(`unsafe_artifact`), over 50 MB zipped or 250 MB unzipped (413 `artifact_too_large`), the "
        "handler's module missing (`handler_missing`), a different sha256 (`checksum_mismatch`).",
        parameters=[OpenApiParameter("app", str, OpenApiParameter.PATH, description="The app's slug.")],
        request={"multipart/form-data": ArtifactUploadSerializer},
        responses={
            201: ArtifactSerializer,
            200: ArtifactSerializer,
            413: OpenApiResponse(ErrorSerializer, description="Over Lambda's size limits"),
            **errors(400, 401, 403, 404),
        },
    )
    def post(self, request, app: str):
        principal = principal_for(request)
        app_obj = app_for(principal=principal, slug=app, team=request.query_params.get("team"))
        # Checked before the body is read: a viewer's 50 MB upload is refused without spooling it.
        access.require(principal, Role.DEPLOYER, app=app_obj)
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > artifacts.MAX_ZIPPED_BYTES + MULTIPART_SLACK:
            raise artifacts.ArtifactTooLarge(
                f"The upload is over Lambda's limit of {artifacts.MAX_ZIPPED_BYTES // artifacts.MB} MB "
                "for a function's code."
            )
        body = ArtifactUploadSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        artifact = artifacts.store_artifact(
            app=app_obj,
            fileobj=body.validated_data["file"],
            expected_sha256=body.validated_data.get("sha256", ""),
            principal=principal,
            request=request,
        )
        return Response(
            ArtifactSerializer(artifact).data,
            status=status.HTTP_200_OK if artifact.deduplicated else status.HTTP_201_CREATED,
        )
