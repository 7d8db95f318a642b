"""``/healthz`` tells a load balancer whether this process reaches its database and its broker."""

from __future__ import annotations

import time

import pytest
from django.conf import settings
from django.db import connection

from controlplane.celery import app

pytestmark = pytest.mark.django_db


def configured_transport() -> str:
    return "redis" if settings.CELERY_BROKER_URL.startswith("redis") else "filesystem"


def test_healthz_is_ok_when_database_and_configured_broker_answer(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": {"ok": True, "detail": connection.vendor},
        "broker": {"ok": True, "detail": configured_transport()},
    }


def test_healthz_answers_head_requests_from_probes(client):
    assert client.head("/healthz").status_code == 200


def test_healthz_is_503_quickly_when_redis_is_unreachable(client, monkeypatch):
    # Port 1 on loopback: nothing listens, the connection is refused.
    monkeypatch.setitem(app.conf, "broker_url", "redis://127.0.0.1:1/0")
    monkeypatch.setitem(app.conf, "broker_transport_options", {})

    started = time.monotonic()
    response = client.get("/healthz")
    elapsed = time.monotonic() - started

    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["database"]["ok"] is True
    assert body["broker"]["ok"] is False
    assert body["broker"]["detail"].startswith("redis: ")
    assert elapsed < 3, f"/healthz took {elapsed:.1f}s with the broker down"


def test_healthz_is_503_when_the_filesystem_queue_folder_is_gone(client, monkeypatch, tmp_path):
    missing = str(tmp_path / "deleted-queue")
    monkeypatch.setitem(app.conf, "broker_url", "filesystem://")
    monkeypatch.setitem(
        app.conf,
        "broker_transport_options",
        {"data_folder_in": missing, "data_folder_out": missing, "control_folder": str(tmp_path)},
    )

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["broker"] == {
        "ok": False,
        "detail": f"filesystem: data_folder_in {missing!r} is not a writable folder",
    }


def test_healthz_needs_no_credentials_and_leaks_no_broker_address(anon_api):
    response = anon_api.get("/healthz")

    assert response.status_code == 200
    assert "127.0.0.1" not in response.content.decode()
    assert "6379" not in response.content.decode()
