"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every app service runs a
command and options that exist, sets only variables the settings read, and is wired to the
PostgreSQL and Redis services the file defines, with health-gated start-up."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tomllib
from urllib.parse import urlsplit

import pytest
import yaml
from django.core.management import get_commands

from .support.settings_env import ROOT, is_read_by_settings, load_settings

COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
APP_SERVICES = sorted(name for name, service in SERVICES.items() if "build" in service)
DOCKERFILE = (ROOT / "Dockerfile").read_text()

# Read by boto3's credential chain, not by controlplane/settings.py.
BOTO3_CHAIN = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION"}
REQUIRED = object()  # a ${NAME:?message} the operator must provide

_VARIABLE = re.compile(r"\$\{(\w+)(?:(:?[-?])([^}]*))?\}")


def interpolate(value: str) -> str | object:
    """A compose value as it is with an empty environment, or REQUIRED for ``${NAME:?...}``."""
    value = str(value)
    required = [m for m in _VARIABLE.finditer(value) if m.group(2) in (":?", "?")]
    if required:
        return REQUIRED
    return _VARIABLE.sub(lambda m: m.group(3) or "", value).replace("$$", "$")


def app_env(service: str) -> dict[str, str | object]:
    return {key: interpolate(value) for key, value in SERVICES[service]["environment"].items()}


def command(service: str) -> list[str]:
    cmd = SERVICES[service].get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else list(cmd)


def help_text(argv: list[str]) -> str:
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, env=os.environ)
    assert result.returncode == 0, result.stderr
    return result.stdout


def options(argv: list[str]) -> list[str]:
    return [arg.split("=", 1)[0] for arg in argv if arg.startswith("--")]


def test_compose_defines_the_production_stack():
    assert {"web", "worker", "beat", "postgres", "redis", "migrate"} <= set(SERVICES)
    assert {"web", "worker", "beat", "migrate"} <= set(APP_SERVICES)


def test_web_runs_gunicorn_on_the_project_wsgi_app_with_valid_options():
    argv = command("web")
    assert argv[:2] == ["gunicorn", "controlplane.wsgi:application"]
    from controlplane.wsgi import application

    assert callable(application)
    known = help_text([sys.executable, "-m", "gunicorn", "--help"])
    for option in options(argv):
        assert option in known, f"gunicorn has no {option}"


def test_web_and_the_image_serve_long_polls_from_threads():
    """A follower's long-poll (``events/?wait=``) holds a request open for up to 30 s: with sync
    workers three followers would take the whole web service."""
    argv = command("web")
    assert "--worker-class=gthread" in argv
    assert int(next(a.split("=", 1)[1] for a in argv if a.startswith("--threads="))) >= 4
    cmd = DOCKERFILE.rsplit("\nCMD ", 1)[1]
    assert '"--worker-class", "gthread"' in cmd and '"--threads", "8"' in cmd


@pytest.mark.parametrize("service,subcommand", [("worker", "worker"), ("beat", "beat")])
def test_celery_services_run_the_project_app_with_valid_options(service, subcommand):
    argv = command(service)
    assert argv[:4] == ["celery", "-A", "controlplane", subcommand]
    from celery import Celery

    from controlplane.celery import app

    assert isinstance(app, Celery)
    known = help_text([sys.executable, "-m", "celery", "-A", "controlplane", subcommand, "--help"])
    for option in options(argv):
        assert re.search(rf"{re.escape(option)}\b", known), f"celery {subcommand} has no {option}"


def test_migrate_service_runs_migrate_then_bootstrap_which_exist():
    argv = command("migrate")
    script = argv[-1] if argv[:2] == ["sh", "-c"] else shlex.join(argv)
    steps = [shlex.split(step) for step in script.split("&&")]
    commands = [step[2] for step in steps if step[:2] == ["python", "manage.py"]]
    assert commands[:2] == ["migrate", "bootstrap"], script
    available = get_commands()
    for name in commands:
        assert name in available, f"manage.py has no {name} command"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_set_only_variables_the_app_reads(service):
    unknown = [
        name
        for name in SERVICES[service]["environment"]
        if not (is_read_by_settings(name) or name in BOTO3_CHAIN)
    ]
    assert not unknown, f"{service} sets variables nothing reads: {unknown}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_set_every_required_production_setting(service):
    env = app_env(service)
    assert env["CONTROLPLANE_ENV"] == "production"
    # Secrets are never given a default in the file: compose refuses to start without them.
    assert env["SECRET_KEY"] is REQUIRED
    assert env["ENCRYPTION_KEYS"] is REQUIRED
    assert env["ALLOWED_HOSTS"] and "*" not in env["ALLOWED_HOSTS"]
    assert env["DATABASE_URL"] and env["REDIS_URL"]


def test_database_url_points_at_the_postgres_service_with_its_credentials():
    postgres = {key: interpolate(value) for key, value in SERVICES["postgres"]["environment"].items()}
    for service in APP_SERVICES:
        url = urlsplit(app_env(service)["DATABASE_URL"])
        assert url.scheme in ("postgres", "postgresql")
        assert url.hostname == "postgres"
        assert (url.port or 5432) == 5432
        assert url.username == postgres["POSTGRES_USER"]
        assert url.password == postgres["POSTGRES_PASSWORD"]
        assert url.path.lstrip("/") == postgres["POSTGRES_DB"]


def test_redis_url_points_at_the_redis_service():
    redis_command = " ".join(command("redis"))
    password = re.search(r"--requirepass\s+(\S+)", redis_command)
    for service in APP_SERVICES:
        url = urlsplit(app_env(service)["REDIS_URL"])
        assert url.scheme == "redis"
        assert url.hostname == "redis"
        assert (url.port or 6379) == 6379
        assert url.password == (password.group(1) if password else None)


def test_settings_load_the_compose_environment_as_production_on_postgres_and_redis(tmp_path):
    env = {k: v for k, v in app_env("web").items() if v is not REQUIRED}
    env |= {
        "SECRET_KEY": "x" * 60,
        "ENCRYPTION_KEYS": "Y29sbGVjdHN0YXRpYy1vbmx5LW5vdC1hLXNlY3JldCE=",
        "CONTROLPLANE_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "PATH": os.environ["PATH"],
    }
    loaded = load_settings(env, "PRODUCTION", "DEBUG", "DATABASES", "CELERY_BROKER_URL", "ALLOWED_HOSTS")
    assert loaded["PRODUCTION"] is True and loaded["DEBUG"] is False
    assert loaded["DATABASES"]["default"]["ENGINE"] == "django.db.backends.postgresql"
    assert loaded["DATABASES"]["default"]["HOST"] == "postgres"
    assert loaded["CELERY_BROKER_URL"] == "redis://redis:6379/0"
    # The web container's health check calls http://127.0.0.1:8000/healthz.
    assert "127.0.0.1" in loaded["ALLOWED_HOSTS"]


def test_postgres_and_redis_have_health_checks():
    assert "pg_isready" in SERVICES["postgres"]["healthcheck"]["test"]
    assert SERVICES["redis"]["healthcheck"]["test"][-2:] == ["redis-cli", "ping"]


def test_web_health_check_calls_healthz_on_the_gunicorn_port():
    test = SERVICES["web"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], "healthcheck", "exec")
    port = next(arg for arg in command("web") if arg.startswith("--bind=")).rsplit(":", 1)[1]
    assert f"http://127.0.0.1:{port}/healthz" in test[3]


def test_dependencies_wait_for_health_or_a_completed_migration():
    for name, service in SERVICES.items():
        for dependency, spec in (service.get("depends_on") or {}).items():
            assert isinstance(spec, dict), f"{name} starts {dependency} without waiting for it"
            if dependency == "migrate":
                assert spec["condition"] == "service_completed_successfully"
            else:
                assert spec["condition"] == "service_healthy", f"{name} -> {dependency}"
                assert "healthcheck" in SERVICES[dependency], f"{dependency} has no health check"
    for name in ("web", "worker", "beat"):
        assert SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert set(SERVICES["migrate"]["depends_on"]) == {"postgres"}


def test_dockerfile_uses_a_supported_python_and_installs_from_pyproject():
    base = re.search(r"^FROM\s+python:(\d+)\.(\d+)(\S*)", DOCKERFILE, re.MULTILINE)
    assert base, "the image is not built on an official Python image"
    required = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(x) for x in re.search(r">=\s*(\d+)\.(\d+)", required).groups())
    assert (int(base.group(1)), int(base.group(2))) >= minimum >= (3, 11)
    assert "pyproject.toml" in DOCKERFILE
    assert re.search(r"pip install\b[^\n]*\s\.(\s|$)", DOCKERFILE), "the project itself is not pip-installed"
    assert re.search(r"manage\.py collectstatic", DOCKERFILE)
    user = re.findall(r"^USER\s+(\S+)", DOCKERFILE, re.MULTILINE)
    assert user and user[-1] not in ("root", "0"), "the image runs as root"


def test_dockerignore_keeps_local_state_out_of_the_image():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".git", ".venv", "data", ".env"} <= ignored


def test_beat_keeps_its_schedule_in_the_data_volume_and_has_a_health_check():
    schedule = next(arg for arg in command("beat") if arg.startswith("--schedule=")).split("=", 1)[1]
    volume = next(v for v in SERVICES["beat"]["volumes"] if v.startswith("appdata:")).split(":", 1)[1]
    assert schedule.startswith(volume + "/")
    assert f"install -d -o controlplane -g controlplane {volume}" in DOCKERFILE
    test = SERVICES["beat"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], "healthcheck", "exec")
    assert schedule in test[3]


def test_the_image_has_git_for_builds_from_a_commit():
    assert re.search(r"apt-get install[^\n]*\bgit\b", DOCKERFILE)
