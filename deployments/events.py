"""The deployment log: ordered rows, written as work happens, for following a deploy live."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from .choices import EventLevel
from .models import Deployment, DeploymentEvent

logger = logging.getLogger("controlplane.deployments")

# A follower's long-poll (``GET .../events/?wait=``): the longest it may wait, and how often the
# deployment row is read meanwhile (its log counter and finish time, by primary key; the database
# connection is idle in between). The interval is the most a new line waits to be seen.
LONG_POLL_MAX_S = 30.0
LONG_POLL_INTERVAL_S = 0.05


def log_event(
    *,
    deployment_id: int,
    message: str,
    region_id: int | None = None,
    level: str = EventLevel.INFO,
    step: str = "",
    duration_ms: int | None = None,
) -> DeploymentEvent:
    """Append one line to a deployment's log and return it.

    Sequence numbers come from a counter on the deployment row, bumped under the row's write
    lock, so regions logging in parallel never share or skip a number. (A region's sign of life
    is its heartbeat, which only the engine's ``states`` writes.) Callers must never pass secret
    values.
    """
    now = timezone.now()
    message = message[:10000]
    if connection.vendor == "postgresql":
        event = _insert_in_one_statement(deployment_id, region_id, level, step, message, duration_ms, now)
    else:
        event = _insert_in_a_transaction(deployment_id, region_id, level, step, message, duration_ms, now)
    logger.log(
        logging.WARNING if level in (EventLevel.WARNING, EventLevel.ERROR) else logging.INFO,
        "deployment %s%s: %s",
        deployment_id,
        f" [{step}]" if step else "",
        message[:500],
    )
    return event


@dataclass(frozen=True)
class EventLine:
    """One line of :func:`log_events`."""

    message: str
    region_id: int | None = None
    level: str = EventLevel.INFO
    step: str = ""
    duration_ms: int | None = None


def log_events(*, deployment_id: int, lines: list[EventLine]) -> list[DeploymentEvent]:
    """Append ``lines`` to a deployment's log in order, with consecutive sequence numbers, in
    one transaction of two statements (the regions of a rollback log their moves at once)."""
    if not lines:
        return []
    now = timezone.now()
    with transaction.atomic():
        updated = Deployment.objects.filter(pk=deployment_id).update(last_seq=F("last_seq") + len(lines))
        if not updated:
            raise Deployment.DoesNotExist(f"deployment {deployment_id} does not exist")
        last = Deployment.objects.filter(pk=deployment_id).values_list("last_seq", flat=True).get()
        events = DeploymentEvent.objects.bulk_create(
            [
                DeploymentEvent(
                    deployment_id=deployment_id,
                    region_id=line.region_id,
                    seq=last - len(lines) + 1 + n,
                    level=line.level,
                    step=line.step,
                    message=line.message[:10000],
                    duration_ms=line.duration_ms,
                    created_at=now,
                )  # fmt: skip
                for n, line in enumerate(lines)
            ]
        )
    for line in lines:
        logger.log(
            logging.WARNING if line.level in (EventLevel.WARNING, EventLevel.ERROR) else logging.INFO,
            "deployment %s%s: %s", deployment_id, f" [{line.step}]" if line.step else "", line.message[:500],
        )  # fmt: skip
    return events


def _tables() -> tuple[str, str, str]:
    q = connection.ops.quote_name
    return q(Deployment._meta.db_table), q(DeploymentEvent._meta.db_table), _COLUMNS


_COLUMNS = "(deployment_id, region_id, seq, level, step, message, duration_ms, created_at)"


def _insert_in_a_transaction(
    deployment_id, region_id, level, step, message, duration_ms, now
) -> DeploymentEvent:
    """SQLite (and any other database): bump the counter and insert the line in one
    transaction, in plain statements (the ORM took longer to build them than SQLite to
    run them, once per line of every region)."""
    deployments, events, columns = _tables()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {deployments} SET last_seq = last_seq + 1 WHERE id = %s",  # noqa: S608 - tables only
            [deployment_id],
        )
        if not cursor.rowcount:
            raise Deployment.DoesNotExist(f"deployment {deployment_id} does not exist")
        cursor.execute(f"SELECT last_seq FROM {deployments} WHERE id = %s", [deployment_id])  # noqa: S608
        (seq,) = cursor.fetchone()
        cursor.execute(
            f"INSERT INTO {events} {columns} VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",  # noqa: S608
            [deployment_id, region_id, seq, level, step, message, duration_ms,
             connection.ops.adapt_datetimefield_value(now)],
        )  # fmt: skip
        event_id = cursor.lastrowid
    return DeploymentEvent(
        id=event_id, deployment_id=deployment_id, region_id=region_id, seq=seq, level=level,
        step=step, message=message, duration_ms=duration_ms, created_at=now,
    )  # fmt: skip


def _insert_in_one_statement(
    deployment_id, region_id, level, step, message, duration_ms, now
) -> DeploymentEvent:
    """PostgreSQL: bump the counter and insert the line in one statement,
    so the deployment row is locked only while the statement runs (not across round trips from a
    busy worker, while every region of the deployment waits to log)."""
    deployments, events, columns = _tables()
    params: list = [deployment_id]
    # Only table names are formatted in (from the models); every value is a parameter.
    sql = (
        f"WITH seq AS (UPDATE {deployments} SET last_seq = last_seq + 1 WHERE id = %s RETURNING last_seq)"  # noqa: S608
        f" INSERT INTO {events} {columns} "
        "SELECT %s, %s, seq.last_seq, %s, %s, %s, %s, %s FROM seq RETURNING id, seq"
    )
    params += [deployment_id, region_id, level, step, message, duration_ms, now]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise Deployment.DoesNotExist(f"deployment {deployment_id} does not exist")
    return DeploymentEvent(
        id=row[0], deployment_id=deployment_id, region_id=region_id, seq=row[1], level=level,
        step=step, message=message, duration_ms=duration_ms, created_at=now,
    )  # fmt: skip


def wait_for_log(deployment_id: int, *, after: int, timeout: float) -> None:
    """Return as soon as the deployment's log has a line after sequence number ``after`` or the
    deployment has finished (or does not exist), and at the latest after ``timeout`` seconds
    (capped at LONG_POLL_MAX_S).

    It reads the deployment row's counter, which every new line bumps in the line's own
    transaction: a line is visible to the follower's next read as soon as the counter is."""
    deadline = time.monotonic() + min(max(timeout, 0.0), LONG_POLL_MAX_S)
    rows = Deployment.objects.filter(pk=deployment_id).values_list("last_seq", "finished_at")
    while True:
        row = rows.first()
        if row is None or row[0] > after or row[1] is not None:
            return
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(LONG_POLL_INTERVAL_S, left))
