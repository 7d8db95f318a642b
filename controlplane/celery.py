"""The Celery app and the one place where the beat schedule lives."""

import functools
import os

from celery import Celery
from celery.worker.consumer import Consumer as CeleryConsumer
from kombu.transport import TRANSPORT_ALIASES

# filesystem:// (the embedded default's broker) is kombu's filesystem transport with each message
# written atomically (see broker.py), in every process that loads the Celery app.
TRANSPORT_ALIASES["filesystem"] = "controlplane.broker:Transport"
# redis:// is kombu's Redis transport surviving the loss of its connection (see broker.py).
TRANSPORT_ALIASES["redis"] = "controlplane.broker:RedisTransport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")


class Consumer(CeleryConsumer):
    """The worker's consumer, reconnecting to a broker that went away every 0.5 s at first and
    then at most every CELERY_BROKER_RECONNECT_MAX seconds (Celery leaves kombu's backoff as it
    is: 2 s more per try, up to 30 s, so a worker came back up to 30 s after its broker)."""

    def ensure_connected(self, conn):
        from django.conf import settings

        most = float(settings.CELERY_BROKER_RECONNECT_MAX)
        conn.ensure_connection = functools.partial(
            conn.ensure_connection, interval_start=min(0.5, most), interval_step=0.5, interval_max=most
        )
        try:
            return super().ensure_connected(conn)
        finally:
            del conn.ensure_connection  # (the instance attribute set above)


app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    # A task's message is acknowledged when it ends, and given back when its worker dies, so a
    # killed worker's jobs are redelivered (the claim refuses a job another worker resumed).
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_track_started=True,
    broker_connection_retry_on_startup=True,
    broker_connection_retry=True,
    broker_connection_max_retries=None,  # a worker waits for its broker for as long as it takes
    broker_connection_timeout=4,
    worker_consumer="controlplane.celery:Consumer",
    result_expires=3600,
)
app.autodiscover_tasks(["workers"])


def _beat_schedule() -> dict:
    from django.conf import settings

    return {
        "probe-placements": {
            "task": "workers.probe_all",
            "schedule": settings.HEALTH_PROBE_INTERVAL,
            # A round still queued when the next one is due is dropped, not run late.
            "options": {"expires": settings.HEALTH_PROBE_INTERVAL},
        },
        "reap-stuck-deployments": {
            "task": "workers.reap",
            "schedule": settings.REAPER_INTERVAL,
            # A reap that waited past the next one is dropped: the next one does the same work.
            "options": {"expires": settings.REAPER_INTERVAL * 2},
        },
        "prune-probe-results": {"task": "workers.prune_probes", "schedule": 3600.0},
        "read-route53-health": {
            "task": "workers.read_route53_health",
            "schedule": settings.HEALTH_ROUTE53_INTERVAL,
            "options": {"expires": settings.HEALTH_ROUTE53_INTERVAL},
        },
        "remind-open-incidents": {"task": "workers.remind_incidents", "schedule": 60.0},
        "requeue-stale-notifications": {"task": "workers.requeue_notifications", "schedule": 60.0},
        "requeue-git-host-posts": {"task": "workers.requeue_git_host_posts", "schedule": 60.0},
    }


@app.on_after_configure.connect
def _setup_beat(sender, **kwargs):  # pragma: no cover - wiring
    sender.conf.beat_schedule = _beat_schedule()
