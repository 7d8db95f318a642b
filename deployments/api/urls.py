from django.urls import path
from rest_framework.routers import SimpleRouter

from ..webhooks.views import GitHubWebhookView, GitLabWebhookView
from . import apps, artifacts, deployments, git_host, oidc, releases

router = SimpleRouter()
router.register("apps", apps.AppViewSet, basename="app")
router.register(r"apps/(?P<app>[^/.]+)/stages", apps.StageViewSet, basename="stage")
router.register(r"apps/(?P<app>[^/.]+)/env", apps.EnvVarViewSet, basename="envvar")
router.register(r"apps/(?P<app>[^/.]+)/oidc-policies", oidc.OidcPolicyViewSet, basename="oidc-policy")

urlpatterns = [
    *router.urls,
    path("apps/<slug:app>/artifacts/", artifacts.AppArtifactsView.as_view(), name="app-artifacts"),
    path("auth/oidc/", oidc.OidcExchangeView.as_view(), name="auth-oidc"),
    path("apps/<slug:app>/git-host/", git_host.AppGitHostView.as_view(), name="app-git-host"),
    path("hooks/github/", GitHubWebhookView.as_view(), name="hook-github"),
    path("hooks/gitlab/", GitLabWebhookView.as_view(), name="hook-gitlab"),
    path("apps/<slug:app>/deployments/", deployments.AppDeploymentsView.as_view(), name="app-deployments"),
    path("deployments/<int:pk>/", deployments.DeploymentDetailView.as_view(), name="deployment-detail"),
    path(
        "deployments/<int:pk>/events/", deployments.DeploymentEventsView.as_view(), name="deployment-events"
    ),
    path(
        "deployments/<int:pk>/cancel/", deployments.DeploymentCancelView.as_view(), name="deployment-cancel"
    ),
    path("apps/<slug:app>/rollback/", releases.RollbackView.as_view(), name="app-rollback"),
    path("apps/<slug:app>/promote/", releases.PromoteView.as_view(), name="app-promote"),
    path("apps/<slug:app>/releases/", releases.AppReleasesView.as_view(), name="app-releases"),
    path("releases/<int:pk>/diff/", releases.ReleaseDiffView.as_view(), name="release-diff"),
]
