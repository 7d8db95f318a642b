"""Builders and fixtures for health and alert tests: live stage placements pointed at local
servers, channels aimed at local receivers, and delivering what is pending the way a worker
would. Test modules import the fixtures they use."""

from __future__ import annotations

import pytest
from django.test import override_settings

from controlplane import notify
from controlplane.channels import services as channel_services
from controlplane.choices import NotificationStatus
from controlplane.models import Channel, Notification
from regions.models import AppRegion, StagePlacement
from tests.factories import AppFactory, RegionFactory, StageFactory

from .receivers import HttpServer, SmtpServer


def live_placement(
    *, app, region: str, stage=None, endpoint_url: str = "", version: str = "3"
) -> StagePlacement:
    """``app``'s stage (production by default) live in ``region`` at ``endpoint_url``."""
    stage = stage or app.stages.filter(name="production").first() or StageFactory(app=app, name="production")
    placement, _ = AppRegion.objects.get_or_create(app=app, region=RegionFactory(code=region))
    return StagePlacement.objects.create(
        placement=placement, stage=stage, version=version, endpoint_url=endpoint_url
    )


def make_app(team, slug: str = "api", **kwargs):
    return AppFactory(team=team, slug=slug, health_path="/health", **kwargs)


def make_channel(team, kind: str, target: str, **kwargs) -> Channel:
    channel, secret = channel_services.create_channel(
        principal=None, team=team, kind=kind, target=target, **kwargs
    )
    channel.raw_signing_secret = secret
    return channel


def deliver_pending(*, rounds: int = 1) -> list[notify.DeliveryOutcome]:
    """Deliver every pending notification once per round, as workers would, in id order."""
    outcomes = []
    for _ in range(rounds):
        for pk in (
            Notification.objects.filter(status=NotificationStatus.PENDING)
            .order_by("pk")
            .values_list("pk", flat=True)
        ):
            outcomes.append(notify.deliver_notification(notification_id=pk))
    return outcomes


@pytest.fixture
def http_server():
    """A local HTTP server; ``http_server()`` makes another, all stopped after the test."""
    servers: list[HttpServer] = []

    def make() -> HttpServer:
        server = HttpServer()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def slack(http_server) -> HttpServer:
    """A local Slack incoming-webhook receiver (answers 200 "ok")."""
    return http_server()


@pytest.fixture
def smtp_server():
    """A real SMTP server on loopback, with Django's SMTP backend pointed at it."""
    server = SmtpServer()
    with override_settings(
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=server.port,
        EMAIL_USE_TLS=False,
        EMAIL_HOST_USER="",
        EMAIL_HOST_PASSWORD="",
    ):
        yield server
    server.stop()
