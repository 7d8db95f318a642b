"""Apps, their stages and env vars.

Each view finds the object among those the caller may see (another team's is a 404), checks the
role its verb needs (403), validates the input and calls one service.
"""

from __future__ import annotations

from django.db import transaction
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import PermissionDenied
from rest_framework.response import Response

from controlplane.access import principal_for
from controlplane.api.common import errors, ordered_pagination
from controlplane.choices import Role
from controlplane.errors import NotFound
from controlplane.selectors import team_to_manage
from deployments import selectors
from deployments.models import App, EnvVar, Stage
from deployments.services import apps as services
from deployments.services.git_credentials import set_git_credential

from .deployments import DeploymentSerializer, deployment_queryset
from .serializers import (
    AppCreateSerializer,
    AppSerializer,
    AppUpdateSerializer,
    EnvVarCreateSerializer,
    EnvVarSerializer,
    EnvVarUpdateSerializer,
    StageCreateSerializer,
    StageSerializer,
    StageUpdateSerializer,
    WebhookSecretSerializer,
)

APP_PARAM = OpenApiParameter("app", str, OpenApiParameter.PATH, description="The app's slug.")
STAGE_PARAM = OpenApiParameter("stage", str, OpenApiParameter.PATH, description="The stage's name.")
ENV_ID_PARAM = OpenApiParameter("id", int, OpenApiParameter.PATH, description="The env var's id.")
TEAM_PARAM = OpenApiParameter(
    "team", str, description="Team slug; needed only when two of your teams have an app of that slug."
)


def _team_param(request) -> str | None:
    return request.query_params.get("team") or None


class AppScopedMixin:
    """Views under ``apps/{app}/``: the app among those the caller sees, or 404."""

    def get_app(self) -> App:
        if not hasattr(self, "_app"):
            principal = principal_for(self.request)
            self._app = selectors.app_for(
                principal=principal, slug=self.kwargs["app"], team=_team_param(self.request)
            )
        return self._app

    def check_app_role(self, role: str, *, stage: str | None = None) -> None:
        """403 unless the caller may act with ``role`` on the app (for ``stage``)."""
        if not principal_for(self.request).can(role, app=self.get_app(), stage=stage):
            self.permission_denied(self.request)


class AppViewSet(viewsets.GenericViewSet):
    """Apps the caller's teams own (an app-scoped token sees its app only)."""

    serializer_class = AppSerializer
    pagination_class = ordered_pagination("slug", "id")
    lookup_url_kwarg = "app"
    lookup_value_regex = r"[^/.]+"
    required_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "create": Role.ADMIN,
        "partial_update": Role.DEPLOYER,
        "destroy": Role.ADMIN,
        "rotate_webhook_secret": Role.ADMIN,
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return App.objects.none()
        return selectors.apps_for(principal_for(self.request))

    def get_object(self) -> App:
        app = selectors.app_for(
            principal=principal_for(self.request),
            slug=self.kwargs["app"],
            team=_team_param(self.request),
            queryset=self.get_queryset(),
        )
        self.check_object_permissions(self.request, app)
        return app

    def _body(self, app: App, *, reveal: bool, status_code: int = status.HTTP_200_OK) -> Response:
        context = {**self.get_serializer_context(), "reveal_secret_of": {app.pk} if reveal else set()}
        return Response(AppSerializer(app, context=context).data, status=status_code)

    def _fresh(self, app: App) -> App:
        return self.get_queryset().get(pk=app.pk)

    @extend_schema(
        summary="List apps",
        parameters=[OpenApiParameter("team", str, description="Only this team's apps (slug).")],
        responses={200: AppSerializer(many=True), **errors(401)},
    )
    def list(self, request):
        qs = self.get_queryset()
        if _team_param(request):
            qs = qs.filter(team__slug=_team_param(request))
        page = self.paginate_queryset(qs)
        # What every stage of the page's apps serves, in two queries for the whole page.
        states = selectors.stage_states(stage.pk for app in page for stage in app.stages.all())
        context = {**self.get_serializer_context(), "stage_states": states}
        return self.get_paginated_response(self.get_serializer(page, many=True, context=context).data)

    @extend_schema(
        summary="Create an app",
        description="Admins only. The answer holds the app's git-push webhook secret.",
        request=AppCreateSerializer,
        responses={201: AppSerializer, **errors(400, 401, 403)},
    )
    def create(self, request):
        principal = principal_for(request)
        team_slug = request.data.get("team") if isinstance(request.data, dict) else None
        team = team_to_manage(principal, slug=str(team_slug) if team_slug not in (None, "") else None)
        if not principal.can(Role.ADMIN, team_id=team.pk):
            raise PermissionDenied("Only team admins create apps.")
        serializer = AppCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = {k: v for k, v in serializer.validated_data.items() if k != "team"}
        credential = data.pop("git_credential", None)
        with transaction.atomic():
            app = services.create_app(principal=principal, team=team, data=data, request=request)
            if credential:
                set_git_credential(principal=principal, app=app, value=credential, request=request)
        return self._body(self._fresh(app), reveal=True, status_code=status.HTTP_201_CREATED)

    @extend_schema(
        summary="One app",
        parameters=[APP_PARAM, TEAM_PARAM],
        responses={200: AppSerializer, **errors(401, 404)},
    )
    def retrieve(self, request, app=None):
        obj = self.get_object()
        return self._body(obj, reveal=principal_for(request).can(Role.ADMIN, app=obj))

    @extend_schema(
        summary="Change an app",
        description="Deployers change the config; changing `regions` or `git_credential` needs an "
        "admin. It applies from the next deployment.",
        parameters=[APP_PARAM, TEAM_PARAM],
        request=AppUpdateSerializer,
        responses={200: AppSerializer, **errors(400, 401, 403, 404)},
    )
    def partial_update(self, request, app=None):
        obj = self.get_object()
        serializer = AppUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        principal = principal_for(request)
        data = dict(serializer.validated_data)
        credential = data.pop("git_credential", None)
        with transaction.atomic():
            if data or credential is None:
                obj = services.update_app(principal=principal, app=obj, data=data, request=request)
            if credential is not None:
                set_git_credential(principal=principal, app=obj, value=credential, request=request)
        return self._body(self._fresh(obj), reveal=principal.can(Role.ADMIN, app=obj))

    @extend_schema(
        summary="Delete an app",
        description="Admins only. An app that still serves in any region (or whose last teardown "
        "failed) is refused (409 `app_is_live`, naming the regions in `regions`) unless "
        "`force=true`: then every stage, the function and its API are taken down in every region "
        "by a deployment of kind `teardown`, answered with 202 so it can be followed; the app is "
        "deleted once it succeeds (its deployments then answer 404). A teardown that fails leaves "
        "the app in place; delete it with `force=true` again to retry.",
        parameters=[
            APP_PARAM,
            TEAM_PARAM,
            OpenApiParameter(
                "force", bool, description="Take whatever still serves down first, then delete."
            ),
        ],
        responses={204: None, 202: DeploymentSerializer, **errors(401, 403, 404, 409)},
    )
    def destroy(self, request, app=None):
        obj = self.get_object()
        force = request.query_params.get("force", "").lower() in ("1", "true", "yes")
        deployment = services.delete_app(
            principal=principal_for(request), app=obj, force=force, request=request
        )
        return _deleted_or_teardown(request, deployment)

    @extend_schema(
        summary="Rotate the webhook secret",
        description="Admins only. Answers the new secret, once; the old one stops working at once.",
        parameters=[APP_PARAM, TEAM_PARAM],
        request=None,
        responses={200: WebhookSecretSerializer, **errors(401, 403, 404)},
    )
    @action(detail=True, methods=["post"], url_path="rotate-webhook-secret")
    def rotate_webhook_secret(self, request, app=None):
        obj = self.get_object()
        secret = services.rotate_webhook_secret(principal=principal_for(request), app=obj, request=request)
        return Response({"webhook_secret": secret})


@extend_schema(parameters=[APP_PARAM, TEAM_PARAM])
class StageViewSet(AppScopedMixin, viewsets.GenericViewSet):
    """Stages of an app: the Lambda alias, auto-deploy branch, domain and rollout policy."""

    serializer_class = StageSerializer
    pagination_class = ordered_pagination("name")
    lookup_url_kwarg = "stage"
    lookup_value_regex = r"[^/.]+"
    required_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "create": Role.DEPLOYER,
        "partial_update": Role.DEPLOYER,
        "destroy": Role.ADMIN,
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Stage.objects.none()
        return (
            Stage.objects.filter(app=self.get_app())
            .select_related("app")
            .prefetch_related("placements__placement__region")
        )

    def get_object(self) -> Stage:
        stage = self.get_queryset().filter(name=self.kwargs["stage"]).first()
        if stage is None:
            raise NotFound(f"{self.get_app().slug} has no stage '{self.kwargs['stage']}'.")
        self.check_object_permissions(self.request, stage)
        return stage

    def _body(self, stage: Stage, status_code: int = status.HTTP_200_OK) -> Response:
        fresh = self.get_queryset().get(pk=stage.pk)
        return Response(
            StageSerializer(fresh, context=self.get_serializer_context()).data, status=status_code
        )

    @extend_schema(
        summary="List an app's stages", responses={200: StageSerializer(many=True), **errors(401, 404)}
    )
    def list(self, request, app=None):
        self.check_app_role(Role.VIEWER)
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Add a stage",
        request=StageCreateSerializer,
        responses={201: StageSerializer, **errors(400, 401, 403, 404)},
    )
    def create(self, request, app=None):
        name = request.data.get("name") if isinstance(request.data, dict) else None
        self.check_app_role(Role.DEPLOYER, stage=name if isinstance(name, str) else None)
        serializer = StageCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        stage = services.create_stage(
            principal=principal_for(request),
            app=self.get_app(),
            name=data.pop("name"),
            data=data,
            request=request,
        )
        return self._body(stage, status.HTTP_201_CREATED)

    @extend_schema(
        summary="One stage", parameters=[STAGE_PARAM], responses={200: StageSerializer, **errors(401, 404)}
    )
    def retrieve(self, request, app=None, stage=None):
        return self._body(self.get_object())

    @extend_schema(
        summary="Change a stage",
        parameters=[STAGE_PARAM],
        request=StageUpdateSerializer,
        responses={200: StageSerializer, **errors(400, 401, 403, 404)},
    )
    def partial_update(self, request, app=None, stage=None):
        obj = self.get_object()
        serializer = StageUpdateSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        obj = services.update_stage(
            principal=principal_for(request), stage=obj, data=dict(serializer.validated_data), request=request
        )
        return self._body(obj)

    @extend_schema(
        summary="Delete a stage",
        description="Admins only. Its releases and deployment log go with it. A stage that still "
        "serves in any region (or whose last teardown failed) is refused (409 `stage_is_live`, "
        "naming the regions in `regions`) unless `force=true`: then its alias, the versions only "
        "it published, its API stage, custom domain, certificate, Route 53 record and health "
        "check (and the function and API when no other stage is left in a region) are taken "
        "down by a deployment of kind `teardown`, answered with 202 so it can be followed; the "
        "stage is deleted once it succeeds. A teardown that fails leaves the stage in place; "
        "delete it with `force=true` again to retry.",
        parameters=[
            STAGE_PARAM,
            OpenApiParameter(
                "force", bool, description="Take whatever still serves down first, then delete."
            ),
        ],
        responses={204: None, 202: DeploymentSerializer, **errors(401, 403, 404, 409)},
    )
    def destroy(self, request, app=None, stage=None):
        force = request.query_params.get("force", "").lower() in ("1", "true", "yes")
        deployment = services.delete_stage(
            principal=principal_for(request), stage=self.get_object(), force=force, request=request
        )
        return _deleted_or_teardown(request, deployment)


@extend_schema(parameters=[APP_PARAM, TEAM_PARAM])
class EnvVarViewSet(AppScopedMixin, viewsets.GenericViewSet):
    """Env vars of an app, narrowed to a stage and/or region or not. Secret values never come back."""

    serializer_class = EnvVarSerializer
    pagination_class = ordered_pagination("key", "id")
    lookup_url_kwarg = "id"
    lookup_value_regex = r"[0-9]+"
    required_roles = {
        "list": Role.VIEWER,
        "retrieve": Role.VIEWER,
        "create": Role.DEPLOYER,
        "partial_update": Role.DEPLOYER,
        "destroy": Role.DEPLOYER,
    }

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return EnvVar.objects.none()
        return selectors.env_vars_of(app=self.get_app())

    def get_object(self) -> EnvVar:
        env_var = self.get_queryset().filter(pk=self.kwargs["id"]).first()
        if env_var is None:
            raise NotFound(f"{self.get_app().slug} has no env var {self.kwargs['id']}.")
        self.check_object_permissions(self.request, env_var)
        return env_var

    def get_serializer_context(self):
        context = super().get_serializer_context()
        if not getattr(self, "swagger_fake_view", False) and "app" in self.kwargs:
            context["app"] = self.get_app()
        return context

    @extend_schema(
        summary="List an app's env vars",
        parameters=[
            OpenApiParameter(
                "stage", str, description="Only vars set for exactly this stage ('' : all-stage vars)."
            ),
            OpenApiParameter(
                "region", str, description="Only vars set for exactly this region ('' : all-region vars)."
            ),
            OpenApiParameter("key", str, description="Only this key."),
        ],
        responses={200: EnvVarSerializer(many=True), **errors(401, 404)},
    )
    def list(self, request, app=None):
        self.check_app_role(Role.VIEWER)
        qs = self.get_queryset()
        params = request.query_params
        if "stage" in params:
            qs = qs.filter(stage__name=params["stage"]) if params["stage"] else qs.filter(stage__isnull=True)
        if "region" in params:
            qs = (
                qs.filter(region__code=params["region"])
                if params["region"]
                else qs.filter(region__isnull=True)
            )
        if params.get("key"):
            qs = qs.filter(key=params["key"])
        page = self.paginate_queryset(qs)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    @extend_schema(
        summary="Set an env var",
        description="Takes effect at each stage's next deployment. Refused (`env_too_large`) when the "
        "env of any stage in any region would pass Lambda's 4 KB.",
        request=EnvVarCreateSerializer,
        responses={201: EnvVarSerializer, **errors(400, 401, 403, 404)},
    )
    def create(self, request, app=None):
        self.check_app_role(Role.DEPLOYER)
        serializer = EnvVarCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        env_var = services.set_env_var(
            principal=principal_for(request), app=self.get_app(), request=request, **serializer.validated_data
        )
        return Response(self.get_serializer(env_var).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        summary="One env var",
        parameters=[ENV_ID_PARAM],
        responses={200: EnvVarSerializer, **errors(401, 404)},
    )
    def retrieve(self, request, app=None, id=None):
        return Response(self.get_serializer(self.get_object()).data)

    @extend_schema(
        summary="Change an env var",
        parameters=[ENV_ID_PARAM],
        request=EnvVarUpdateSerializer,
        responses={200: EnvVarSerializer, **errors(400, 401, 403, 404)},
    )
    def partial_update(self, request, app=None, id=None):
        env_var = self.get_object()
        serializer = EnvVarUpdateSerializer(
            data=request.data, partial=True, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        env_var = services.update_env_var(
            principal=principal_for(request), env_var=env_var, request=request, **serializer.validated_data
        )
        return Response(self.get_serializer(env_var).data)

    @extend_schema(
        summary="Delete an env var",
        parameters=[ENV_ID_PARAM],
        responses={204: None, **errors(401, 403, 404)},
    )
    def destroy(self, request, app=None, id=None):
        services.delete_env_var(principal=principal_for(request), env_var=self.get_object(), request=request)
        return Response(status=status.HTTP_204_NO_CONTENT)


def _deleted_or_teardown(request, deployment) -> Response:
    """204 when the object was deleted at once; 202 with the teardown deployment that takes it
    down first (the object is deleted when it succeeds)."""
    if deployment is None:
        return Response(status=status.HTTP_204_NO_CONTENT)
    body = DeploymentSerializer(
        deployment_queryset().get(pk=deployment.pk), context={"request": request}
    ).data
    return Response(body, status=status.HTTP_202_ACCEPTED)
