"""A real Celery worker builds a pushed commit whose build command hunts for the control plane: the
worker's environment, its processes, the data folder, the project, and the services on loopback
(the web server, the AWS endpoint, PostgreSQL, Redis). It finds none of them."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.test import Client

from deployments.choices import DeploymentStatus
from deployments.models import Deployment
from tests.factories import AppFactory, AppRegionFactory, RegionFactory, StageFactory
from tests.support.gitrepo import GitRepo, body_of, github_headers, github_push
from tests.support.processes import wait_for

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'ok'}\n"
TERMINAL = [s for s in DeploymentStatus if s not in (DeploymentStatus.QUEUED, DeploymentStatus.RUNNING)]
WORKER_VARIABLES = (
    "DJANGO_SETTINGS_MODULE", "CONTROLPLANE_TEST_WORKER", "AWS_ENDPOINT_URL", "ENDPOINT_OVERRIDES",
    "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "ENCRYPTION_KEYS", "AWS_SECRET_ACCESS_KEY",
    "CONTROLPLANE_DATA_DIR",
)  # fmt: skip


def hunt(*, data_dir: str, project: str, ports: list[int]) -> str:
    """A build command that prints ``FOUND ...`` for everything of the control plane it reaches."""
    variables = "|".join(WORKER_VARIABLES)
    checks = [
        # Every process's environment, and its own.
        f"for f in /proc/[0-9]*/environ; do tr '\\0' '\\n' < $f; done | grep -E '^({variables})=' "
        "| sed 's/^/FOUND environ: /' | cut -c1-60",
        f"env | grep -E '^({variables})=' | sed 's/^/FOUND env: /' | cut -c1-50",
        # The worker's processes.
        "for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < $f; echo; done | grep -E 'celer[y]|pytes[t]' "
        "| sed 's/^/FOUND process: /'",
        # The data folder (SQLite, broker, generated keys) and the project.
        f"ls -a {data_dir} >/dev/null 2>&1 && echo 'FOUND data folder'",
        f"test -e {project}/manage.py && echo 'FOUND project'",
        "ls /root /home/controlplane >/dev/null 2>&1 && echo 'FOUND worker home'",
    ]
    for port in ports:
        checks += [
            # Straight to loopback, and through the build's proxy (plain and tunnelled).
            f"(exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && echo 'FOUND port {port} direct'",
            f"curl -s -m 5 -o /dev/null http://127.0.0.1:{port}/ && echo 'FOUND port {port} via proxy'",
            f"curl -s -m 5 -p -o /dev/null http://127.0.0.1:{port}/ && echo 'FOUND port {port} tunnelled'",
            f"curl -s -m 5 -o /dev/null http://localhost:{port}/ && echo 'FOUND port {port} as localhost'",
        ]
    return "; ".join(checks) + "; echo hunt-finished; exit 3"


@pytest.fixture
def web_server():
    """A stand-in for the control plane's web server on loopback."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_a_build_hunting_for_the_control_plane_finds_none_of_it(
    team, tmp_path, aws, aws_proxy, worker_process, web_server
):
    repo = GitRepo(tmp_path / "git")
    aws_port = urlsplit(aws_proxy.url).port
    ports = [web_server, aws_port, 5432, 6379]
    app = AppFactory(team=team, slug="shop", repo_url=repo.url, runtime="python3.12", handler="app.handler")
    AppRegionFactory(app=app, region=RegionFactory(code="us-east-1"))
    StageFactory(app=app, name="production", branch="main")
    # The hunt is a script in the repository, as an attacker with push access would write it.
    script = hunt(data_dir=str(settings.DATA_DIR), project=str(Path(settings.BASE_DIR)), ports=ports)
    app.build_command = "bash hunt.sh"
    app.save()
    sha = repo.commit({"app.py": HANDLER, "hunt.sh": script}, "Hunt")

    body = body_of(github_push(repo, after=sha, before="0" * 40))
    response = Client().post(
        "/api/v1/hooks/github/", data=body, content_type="application/json",
        headers=github_headers(app.webhook_secret, body),
    )  # fmt: skip
    assert response.status_code == 202, response.json()
    pk = response.json()["deployments"][0]["deployment"]

    def finished():
        d = Deployment.objects.get(pk=pk)
        return d if d.status in TERMINAL and d.events.filter(step="finish").exists() else None

    deployment = wait_for(finished, timeout=120, message="the hunting build's deployment to finish")
    log = "\n".join(deployment.events.order_by("seq").values_list("message", flat=True))
    assert "hunt-finished" in log, log
    assert [line for line in log.splitlines() if line.startswith("FOUND")] == [], log
    assert deployment.status == DeploymentStatus.FAILED
    assert "The build command exited with status 3" in deployment.error
