"""Celery tasks (``tasks``): entry points that take ids and call down. Nothing imports them;
work is enqueued by task name through ``controlplane.queue``."""
