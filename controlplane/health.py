"""``/healthz``: is the database reachable, is the broker reachable."""

from __future__ import annotations

import os

from django.db import connection
from django.http import JsonResponse
from django.views.decorators.http import require_safe

# A load balancer or orchestrator polls this often; an unreachable broker must answer quickly
# rather than hang on kombu's default retry-forever connection policy.
BROKER_TIMEOUT = 2.0


def _database() -> tuple[bool, str]:
    """Returns (reachable, vendor name or the error's class name)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return True, connection.vendor
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return False, type(exc).__name__


def _broker() -> tuple[bool, str]:
    """Returns (reachable, transport name, plus the error's class name when unreachable).

    The broker is the Celery app's current ``broker_url``. The filesystem transport needs no
    server, so "reachable" there means its queue folders exist and are writable.
    """
    from .celery import app

    conn = app.connection_for_write(connect_timeout=BROKER_TIMEOUT)
    transport = conn.transport.driver_name
    try:
        with conn:
            conn.ensure_connection(max_retries=0, timeout=BROKER_TIMEOUT)
            if transport == "filesystem":
                options = conn.transport_options
                for key in ("data_folder_in", "data_folder_out"):
                    folder = options.get(key, "")
                    if not (os.path.isdir(folder) and os.access(folder, os.W_OK)):
                        return False, f"{transport}: {key} {folder!r} is not a writable folder"
        return True, transport
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return False, f"{transport}: {type(exc).__name__}"


@require_safe
def healthz(request):
    """200 when the database and the broker are both reachable, otherwise 503; JSON either way."""
    db_ok, db_info = _database()
    broker_ok, broker_info = _broker()
    ok = db_ok and broker_ok
    return JsonResponse(
        {
            "status": "ok" if ok else "unavailable",
            "database": {"ok": db_ok, "detail": db_info},
            "broker": {"ok": broker_ok, "detail": broker_info},
        },
        status=200 if ok else 503,
    )
