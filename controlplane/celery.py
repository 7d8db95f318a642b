"""The Celery app and the one place where the beat schedule lives."""

import os

from celery import Celery
from kombu.transport import TRANSPORT_ALIASES

# filesystem:// (the embedded default's broker) is kombu's filesystem transport with each message
# written atomically (see broker.py), in every process that loads the Celery app.
TRANSPORT_ALIASES["filesystem"] = "controlplane.broker:Transport"

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

app = Celery("controlplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_track_started=True,
    broker_connection_retry_on_startup=True,
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
        "reap-stuck-deployments": {"task": "workers.reap", "schedule": 60.0},
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
