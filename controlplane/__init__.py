"""The ground of the control plane: settings, URLs, the Celery app and its beat schedule; teams,
members, API tokens and the access rules; the audit log; notification channels and alert
delivery (``notify``: fan-out, retries, disabling a dead channel; what an alert says is written
by ``deployments.alerts`` and ``regions.alerts``); ``queue``, the one way work is enqueued (by
task name, after commit). Nothing here imports ``deployments`` or ``regions`` but their models.
"""

from .celery import app as celery_app

__all__ = ("celery_app",)
