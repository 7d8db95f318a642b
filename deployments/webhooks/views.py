"""The webhook endpoints. Git hosts authenticate with a signature (GitHub) or a token (GitLab), not
with an API token, so these views take no authentication and answer everything themselves."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from controlplane.api.common import ErrorSerializer

from .providers import GITHUB, GITLAB
from .service import receive


class StageOutcomeSerializer(serializers.Serializer):
    app = serializers.CharField()
    team = serializers.CharField()
    stage = serializers.CharField()
    outcome = serializers.ChoiceField(choices=["queued", "pinned", "failed"])
    deployment = serializers.IntegerField(required=False, help_text="The deployment created for this stage.")
    url = serializers.CharField(required=False)
    code = serializers.CharField(required=False, help_text="Why it failed (an error code).")
    detail = serializers.CharField(required=False)


class WebhookAnswerSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=["accepted", "pinned", "ignored", "duplicate", "pong"],
        help_text="accepted: deployments started; pinned: recorded, the stage is pinned; ignored: verified "
        "but nothing to do (see detail); duplicate: this delivery id was received before; pong: ping.",
    )
    detail = serializers.CharField()
    outcome = serializers.CharField(required=False)
    deployments = StageOutcomeSerializer(many=True)


def _errors() -> dict:
    return {
        400: OpenApiResponse(
            ErrorSerializer,
            description="The body is not a JSON object, or not a push, or a field holds a NUL",
        ),
        401: OpenApiResponse(ErrorSerializer, description="Missing or wrong signature/token"),
        413: OpenApiResponse(ErrorSerializer, description="Body over 5 MB"),
    }


class _WebhookView(APIView):
    authentication_classes = ()
    permission_classes = (AllowAny,)
    throttle_classes = ()
    provider = GITHUB

    def post(self, request):
        # The raw bytes are what is signed: read them from Django's request, never DRF's parsed data.
        return receive(self.provider, request._request)


class GitHubWebhookView(_WebhookView):
    provider = GITHUB

    @extend_schema(
        summary="GitHub push webhook",
        description="Point a GitHub webhook (content type application/json) here with the app's "
        "webhook_secret as its secret. Handles `ping` and `push`; deliveries are verified with "
        "X-Hub-Signature-256 and deduplicated by X-GitHub-Delivery.",
        auth=[],
        request={"application/json": OpenApiTypes.OBJECT},
        parameters=[
            OpenApiParameter("X-Hub-Signature-256", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("X-GitHub-Event", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("X-GitHub-Delivery", str, OpenApiParameter.HEADER, required=True),
        ],
        responses={200: WebhookAnswerSerializer, 202: WebhookAnswerSerializer, **_errors()},
    )
    def post(self, request):
        return super().post(request)


class GitLabWebhookView(_WebhookView):
    provider = GITLAB

    @extend_schema(
        summary="GitLab push webhook",
        description="Point a GitLab webhook (push and tag push events) here with the app's "
        "webhook_secret as its secret token. Deliveries are verified with X-Gitlab-Token and "
        "deduplicated by X-Gitlab-Event-UUID.",
        auth=[],
        request={"application/json": OpenApiTypes.OBJECT},
        parameters=[
            OpenApiParameter("X-Gitlab-Token", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("X-Gitlab-Event", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("X-Gitlab-Event-UUID", str, OpenApiParameter.HEADER, required=False),
        ],
        responses={202: WebhookAnswerSerializer, **_errors()},
    )
    def post(self, request):
        return super().post(request)
