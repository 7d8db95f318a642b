from django.urls import path
from rest_framework.routers import SimpleRouter

from . import health, views

router = SimpleRouter()
router.register("regions", views.RegionViewSet, basename="region")

urlpatterns = [
    *router.urls,
    path("apps/<slug:app>/health/", health.AppHealthView.as_view(), name="app-health"),
]
