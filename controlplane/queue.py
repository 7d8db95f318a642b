"""The one way work is handed to the workers: ``enqueue(task name, ids, countdown=...)``.

A message goes out after the current transaction commits (at once outside one), so a worker
never looks for a row it cannot see yet. The task is found by name in the Celery app's registry
(filled by autodiscovery of ``workers/``), so nothing that enqueues imports the tasks. A broker
that cannot be reached is logged, never raised: the database holds the work, and the periodic
sweepers (the deployment reaper, the notification requeue) send it again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.db import transaction

from .celery import app

log = logging.getLogger("controlplane.queue")


def task(name: str):
    """The registered task called ``name``; raises KeyError for a name no task has."""
    if name not in app.tasks:
        app.loader.import_default_modules()  # runs the autodiscovery of workers/ once
    return app.tasks[name]


def enqueue(name: str, ids: int | Iterable[int], *, countdown: float = 0) -> None:
    """Send one ``name(id)`` message per id after commit, ``countdown`` seconds from then."""
    pks = [ids] if isinstance(ids, int) else list(ids)
    if not pks:
        return
    target = task(name)  # an unknown name fails here, in the caller, not after commit

    def send() -> None:
        for pk in pks:
            try:
                target.apply_async((pk,), countdown=countdown or None)
            except Exception:  # noqa: BLE001 - broker down: the row is the record; a sweeper re-sends
                log.warning("broker unavailable: %s(%s) not sent; the periodic sweep will send it", name, pk)

    transaction.on_commit(send)
