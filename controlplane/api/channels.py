"""Alert channels: list and read (viewers), create, change, delete and test (admins), and each
channel's recent deliveries. Targets are credentials: shown masked to everyone after create; a
webhook's signing secret is returned once, by create."""

from __future__ import annotations

from django.db.models import Prefetch
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from controlplane import notify
from controlplane.access import principal_for
from controlplane.channels import backend_for, services
from controlplane.choices import ChannelKind, Role
from controlplane.models import Channel, Notification, NotificationAttempt
from controlplane.selectors import team_to_manage
from deployments.models import App

from .common import StrictSerializer, errors, ordered_pagination

RECENT = 5
EVENT_CHOICES = services.SUBSCRIBABLE_EVENTS


def visible_deliveries(principal, qs=None):
    """Deliveries ``principal`` may read: a token scoped to one app sees only those about it
    (a channel for all apps also carries other apps' alerts)."""
    qs = Notification.objects.all() if qs is None else qs
    app_id = getattr(principal.token, "app_id", None) if principal is not None else None
    return qs.filter(app_id=app_id) if app_id else qs


class NotificationAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = NotificationAttempt
        fields = ["number", "status", "response_code", "error", "duration_ms", "created_at"]
        read_only_fields = fields


class NotificationSerializer(serializers.ModelSerializer):
    title = serializers.SerializerMethodField()
    app = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    attempt_log = NotificationAttemptSerializer(
        many=True, read_only=True, help_text="Every try, oldest first: outcome, answer, error, duration."
    )

    class Meta:
        model = Notification
        fields = [
            "id",
            "event",
            "title",
            "status",
            "attempts",
            "attempt_log",
            "response_code",
            "error",
            "app",
            "deployment",
            "incident",
            "created_at",
            "sent_at",
            "next_attempt_at",
        ]
        read_only_fields = fields

    def get_title(self, obj) -> str:
        return (obj.payload or {}).get("title", "")


class ChannelSerializer(serializers.ModelSerializer):
    team = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    target = serializers.SerializerMethodField(help_text="Masked: the target is a credential.")
    apps = serializers.SlugRelatedField(slug_field="slug", many=True, read_only=True)
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES))
    recent_notifications = serializers.SerializerMethodField()

    class Meta:
        model = Channel
        fields = [
            "id",
            "team",
            "kind",
            "name",
            "target",
            "events",
            "apps",
            "enabled",
            "disabled_reason",
            "created_at",
            "recent_notifications",
        ]
        read_only_fields = fields

    def get_target(self, obj) -> str:
        return backend_for(obj.kind).mask(obj.target)

    @extend_schema_field(NotificationSerializer(many=True))
    def get_recent_notifications(self, obj) -> list[dict]:
        rows = getattr(obj, "recent", None)
        if rows is None:
            rows = list(obj.notifications.prefetch_related("attempt_log").order_by("-id")[:RECENT])
        return NotificationSerializer(rows, many=True).data


class ChannelCreatedSerializer(ChannelSerializer):
    signing_secret = serializers.SerializerMethodField(
        help_text="Webhooks: the HMAC key of X-Controlplane-Signature. Shown only in this answer."
    )

    class Meta(ChannelSerializer.Meta):
        fields = [*ChannelSerializer.Meta.fields, "signing_secret"]
        read_only_fields = fields

    def get_signing_secret(self, obj) -> str | None:
        return self.context.get("signing_secret") or None


class ChannelCreateSerializer(StrictSerializer):
    team = serializers.SlugField(required=False, help_text="Team slug; needed only in several teams.")
    kind = serializers.ChoiceField(choices=ChannelKind.choices)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
    target = serializers.CharField(
        max_length=2000, help_text="Slack webhook URL, webhook URL, email address or E.164 phone number."
    )
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=EVENT_CHOICES), required=False, help_text="Default: all."
    )
    apps = serializers.ListField(
        child=serializers.CharField(max_length=40), required=False, default=list, help_text="Empty: all apps."
    )
    enabled = serializers.BooleanField(required=False, default=True)


class ChannelUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    target = serializers.CharField(max_length=2000, required=False)
    events = serializers.ListField(child=serializers.ChoiceField(choices=EVENT_CHOICES), required=False)
    apps = serializers.ListField(child=serializers.CharField(max_length=40), required=False)
    enabled = serializers.BooleanField(required=False)


class ChannelViewSet(viewsets.GenericViewSet):
    """Where a team's alerts go."""

    serializer_class = ChannelSerializer
    pagination_class = ordered_pagination("-id")
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9]+"
    required_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "notifications": Role.VIEWER,
        "create": Role.ADMIN,
        "partial_update": Role.ADMIN,
        "destroy": Role.ADMIN,
        "test": Role.ADMIN,
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Channel.objects.none()
        principal = principal_for(self.request)
        recent = visible_deliveries(principal).prefetch_related("attempt_log").order_by("-id")[:RECENT]
        return (
            Channel.objects.visible_to(principal)
            .select_related("team")
            .prefetch_related(
                Prefetch("apps", queryset=principal.filter_apps(App.objects.all())),
                Prefetch("notifications", queryset=recent, to_attr="recent"),
            )
        )

    @extend_schema(
        summary="List alert channels",
        parameters=[OpenApiParameter("team", str, description="Only this team's channels (slug).")],
        responses={200: ChannelSerializer(many=True), **errors(401)},
    )
    def list(self, request):
        qs = self.get_queryset()
        if request.query_params.get("team"):
            qs = qs.filter(team__slug=request.query_params["team"])
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(ChannelSerializer(page, many=True).data)

    @extend_schema(summary="One alert channel", responses={200: ChannelSerializer, **errors(401, 404)})
    def retrieve(self, request, id=None):
        return Response(ChannelSerializer(self.get_object()).data)

    @extend_schema(
        summary="Add an alert channel",
        request=ChannelCreateSerializer,
        responses={201: ChannelCreatedSerializer, **errors(400, 401, 403)},
    )
    def create(self, request):
        principal = principal_for(request)
        serializer = ChannelCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        team = team_to_manage(principal, slug=data.get("team") or None)
        channel, secret = services.create_channel(
            principal=principal,
            team=team,
            kind=data["kind"],
            target=data["target"],
            name=data.get("name", ""),
            events=data.get("events"),
            apps=data.get("apps", []),
            enabled=data.get("enabled", True),
            request=request,
        )
        body = ChannelCreatedSerializer(channel, context={"signing_secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="Change an alert channel",
        request=ChannelUpdateSerializer,
        responses={200: ChannelSerializer, **errors(400, 401, 403, 404)},
    )
    def partial_update(self, request, id=None):
        channel = self.get_object()
        serializer = ChannelUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        channel = services.update_channel(
            principal=principal_for(request),
            channel=channel,
            data=dict(serializer.validated_data),
            request=request,
        )
        return Response(ChannelSerializer(self.get_queryset().get(pk=channel.pk)).data)

    @extend_schema(summary="Delete an alert channel", responses={204: None, **errors(401, 403, 404)})
    def destroy(self, request, id=None):
        services.delete_channel(principal=principal_for(request), channel=self.get_object(), request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(
        summary="Send a test message now",
        description="One attempt, answered with its delivery: `status` `sent`, or `failed` with `error`. "
        "A target that is gone (Slack 404/410, a refused address) disables the channel.",
        request=None,
        responses={200: NotificationSerializer, **errors(401, 403, 404)},
    )
    @action(detail=True, methods=["post"])
    def test(self, request, id=None):
        row = notify.send_test(channel=self.get_object())
        return Response(NotificationSerializer(row).data)

    @extend_schema(
        summary="A channel's deliveries, newest first",
        responses={200: NotificationSerializer(many=True), **errors(401, 404)},
    )
    @action(detail=True, methods=["get"], pagination_class=ordered_pagination("-id"))
    def notifications(self, request, id=None):
        channel = self.get_object()
        qs = visible_deliveries(
            principal_for(request),
            channel.notifications.select_related("app").prefetch_related("attempt_log"),
        )
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(NotificationSerializer(page, many=True).data)
