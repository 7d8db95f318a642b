"""Celery entry points: take ids, call down (the deploy engine, health, notification delivery),
decide retries. Nothing imports this module: work is enqueued by task name through
``controlplane.queue``, and Celery's autodiscovery registers these tasks."""

from __future__ import annotations

import os
import socket

from celery import shared_task
from django.conf import settings

from controlplane import notify
from deployments import git_host
from deployments.engine import driver, reaper, rollback
from deployments.engine.context import RetryLater
from regions import health, incidents


@shared_task(name="workers.ping")
def ping() -> dict:
    """Answers who ran it, so a caller can tell a real worker received the task."""
    return {"pong": True, "hostname": socket.gethostname(), "pid": os.getpid()}


# Nobody reads what the deployment tasks return (the database holds every outcome), so no result
# is stored for them.
@shared_task(name="workers.start_deployment", acks_late=True, ignore_result=True)
def start_deployment(deployment_id: int) -> None:
    """Build the release if needed, then release the first wave of regions."""
    driver.start(deployment_id)


@shared_task(name="workers.rollback_regions", acks_late=True, ignore_result=True)
def rollback_regions(deployment_id: int) -> int:
    """Move every region of a rollback at once, from one task (falls back to deploy_region)."""
    return rollback.run_rollback(deployment_id)


@shared_task(
    name="workers.deploy_region",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=None,
    soft_time_limit=None,
)
def deploy_region(self, region_deployment_id: int) -> str | None:
    """Run one region of a deployment. Throttling and AWS 5xx (after botocore's own retries) are
    retried with backoff; anything else fails the region at once."""
    try:
        return driver.run_region(region_deployment_id)
    except RetryLater as exc:
        if self.request.retries >= settings.AWS_RETRY_LIMIT:
            driver.fail_after_retries(region_deployment_id, exc.error)
            return "failed"
        raise self.retry(countdown=min(60, 2 ** (self.request.retries + 1)), exc=exc)


@shared_task(name="workers.reap", acks_late=True)
def reap() -> dict:
    """Requeue or fail deployments stuck past their limits (beat runs it every minute)."""
    return reaper.reap()


# --- Health and alerts ------------------------------------------------------------------------


@shared_task(name="workers.probe_all", acks_late=True)
def probe_all() -> dict:
    """One probe round of every live placement (beat runs it every HEALTH_PROBE_INTERVAL)."""
    summary = health.run_probe_round()
    return {
        "probed": summary.probed,
        "healthy": summary.healthy,
        "went_down": summary.went_down,
        "came_up": summary.came_up,
        "probe_seconds": round(summary.probe_seconds, 3),
        "seconds": round(summary.total_seconds, 3),
    }


@shared_task(name="workers.prune_probes", acks_late=True)
def prune_probes() -> dict:
    """Delete probe results past retention; close incidents of placements that no longer serve."""
    return {
        "deleted": health.prune_probes(),
        "incidents_closed": incidents.close_incidents_of_retired_placements(),
    }


@shared_task(name="workers.read_route53_health", acks_late=True)
def read_route53_health() -> int:
    """Read the Route 53 health check status of every live placement that has one."""
    return health.read_route53_statuses()


@shared_task(name="workers.remind_incidents", acks_late=True)
def remind_incidents() -> int:
    """Remind channels of regions still down (HEALTH_REMINDER_MINUTES; 0 turns it off)."""
    return incidents.send_incident_reminders()


@shared_task(name="workers.deliver_notification", bind=True, acks_late=True, max_retries=None)
def deliver_notification(self, notification_id: int) -> str:
    """One delivery attempt; another is scheduled with backoff when the failure was transient.
    The row counts attempts, so redeliveries and the sweeper never exceed NOTIFY_MAX_ATTEMPTS."""
    outcome = notify.deliver_notification(notification_id=notification_id)
    if outcome.retry_in is not None:
        raise self.retry(countdown=outcome.retry_in)
    return outcome.status


@shared_task(name="workers.requeue_notifications", acks_late=True)
def requeue_notifications() -> int:
    """Enqueue again deliveries whose task was lost (broker down at enqueue, a dead worker)."""
    return notify.requeue_stale_notifications()


# --- Reporting to the git host ----------------------------------------------------------------


@shared_task(
    name="workers.post_git_host_updates", bind=True, acks_late=True, max_retries=None, ignore_result=True
)
def post_git_host_updates(self, deployment_id: int) -> None:
    """Post a deployment's pending GitHub/GitLab statuses in order; retried with backoff while the
    host fails transiently (each row counts its attempts, so retries stay bounded)."""
    retry_in = git_host.post_pending(deployment_id)
    if retry_in is not None:
        raise self.retry(countdown=retry_in)


@shared_task(name="workers.requeue_git_host_posts", acks_late=True)
def requeue_git_host_posts() -> int:
    """Enqueue again git host posts whose task was lost (beat runs it every minute)."""
    return git_host.requeue_stale()
