from rest_framework.routers import SimpleRouter

from . import channels, views

router = SimpleRouter()
router.register("teams", views.TeamViewSet, basename="team")
router.register("tokens", views.ApiTokenViewSet, basename="token")
router.register("audit", views.AuditEntryViewSet, basename="audit")
router.register("channels", channels.ChannelViewSet, basename="channel")

urlpatterns = [*router.urls]
