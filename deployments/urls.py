"""The team web UI's pages (the REST API is under ``api/v1/``, see ``deployments.api.urls``).

Alert links point here: ``settings.HEALTH_URL_PATH`` and ``settings.DEPLOYMENT_URL_PATH``.
"""

from django.contrib.auth import views as auth_views
from django.urls import path

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
    path("", views.app_list, name="home"),
    path("apps/<slug:app>/", views.app_detail, name="app"),
    path("apps/<slug:app>/health/", views.app_health_page, name="health"),
    path("apps/<slug:app>/stages/<slug:stage>/rollback/", views.stage_rollback, name="rollback"),
    path("apps/<slug:app>/stages/<slug:stage>/unpin/", views.stage_unpin, name="unpin"),
    path("deployments/<int:pk>/", views.deployment_detail, name="deployment"),
]
