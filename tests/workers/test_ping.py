import pytest
from django.conf import settings

from tests.support.processes import WorkerProcess


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_real_worker_receives_ping_through_configured_broker():
    queue = f"{settings.CELERY_TASK_DEFAULT_QUEUE}-ping"
    worker = WorkerProcess(name="ping", queue=queue).start(wait=False)
    try:
        answer = worker.wait_ready(timeout=60)
        assert answer["pong"] is True
        assert answer["pid"] == worker.proc.pid  # answered by the subprocess, not in-process
        expected = "redis" if settings.REDIS_URL else "filesystem"
        assert settings.CELERY_BROKER_URL.startswith(expected)
    finally:
        worker.stop()
