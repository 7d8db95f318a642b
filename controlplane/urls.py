from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from . import health

handler400 = "controlplane.errors.handler400"
handler403 = "controlplane.errors.handler403"
handler404 = "controlplane.errors.handler404"
handler500 = "controlplane.errors.handler500"

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # Swagger UI from the sidecar's static files; its start-up script is served as a file
    # (/api/docs/?script), not inline, so the page keeps the Content-Security-Policy.
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(url_name="schema", template_name="controlplane/swagger_ui.html"),
        name="docs",
    ),
    path("api/v1/", include("controlplane.api.urls")),
    path("api/v1/", include("regions.api.urls")),
    path("api/v1/", include("deployments.api.urls")),
    path("", include("deployments.urls")),  # the team web UI
]
