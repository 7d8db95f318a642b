"""The team web UI's pages (the REST API is under ``api/v1/``, see ``deployments.api.urls``).

Alert links point here: ``settings.HEALTH_URL_PATH`` and ``settings.DEPLOYMENT_URL_PATH``.
"""

from django.contrib.auth import views as auth_views
from django.urls import path

from controlplane import views as team_views

from . import views

app_name = "ui"

urlpatterns = [
    path(
        "login/",
        auth_views.LoginView.as_view(
            template_name="registration/login.html", redirect_authenticated_user=True
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(next_page="ui:login"), name="logout"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("", views.app_list, name="home"),
    path("apps/new/", views.app_create, name="app-create"),
    path("apps/<slug:app>/", views.app_detail, name="app"),
    path("apps/<slug:app>/health/", views.app_health_page, name="health"),
    path("apps/<slug:app>/deployments/", views.deployment_list, name="deployments"),
    path("apps/<slug:app>/deploy/", views.deploy, name="deploy"),
    path("apps/<slug:app>/promote/", views.promote_stage, name="promote"),
    path("apps/<slug:app>/stages/new/", views.stage_form, name="stage-create"),
    path("apps/<slug:app>/stages/<slug:stage>/", views.stage_form, name="stage-edit"),
    path("apps/<slug:app>/delete/", views.app_delete, name="app-delete"),
    path("apps/<slug:app>/stages/<slug:stage>/delete/", views.stage_delete, name="stage-delete"),
    path("apps/<slug:app>/stages/<slug:stage>/rollback/", views.stage_rollback, name="rollback"),
    path("apps/<slug:app>/stages/<slug:stage>/unpin/", views.stage_unpin, name="unpin"),
    path("apps/<slug:app>/env/", views.env_page, name="env"),
    path("apps/<slug:app>/env/new/", views.env_create, name="env-create"),
    path("apps/<slug:app>/env/<int:env_id>/", views.env_edit, name="env-edit"),
    path("apps/<slug:app>/env/<int:env_id>/delete/", views.env_delete, name="env-delete"),
    path("deployments/<int:pk>/", views.deployment_detail, name="deployment"),
    path("deployments/<int:pk>/cancel/", views.deployment_cancel, name="deployment-cancel"),
    path("deployments/<int:pk>/retry/", views.deployment_retry, name="deployment-retry"),
    path("team/channels/", team_views.channel_list, name="channels"),
    path("team/channels/<int:pk>/test/", team_views.channel_test, name="channel-test"),
    path("team/channels/<int:pk>/enabled/", team_views.channel_toggle, name="channel-toggle"),
    path("team/channels/<int:pk>/delete/", team_views.channel_delete, name="channel-delete"),
    path("team/tokens/", team_views.token_list, name="tokens"),
    path("team/tokens/<int:pk>/revoke/", team_views.token_revoke, name="token-revoke"),
    path("team/audit/", team_views.audit_log, name="audit"),
]
