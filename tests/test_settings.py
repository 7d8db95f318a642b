"""controlplane/settings.py as a fresh process sees it: embedded defaults with nothing set, servers
when their URLs are set, and production that refuses to start half-configured. Each case runs the
real settings in a subprocess with exactly the environment under test."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from .support.settings_env import ROOT, load_settings, settings_env_names, settings_env_prefixes

# Only what a process needs to run: whatever else the caller's shell or CI sets (DATABASE_URL,
# REDIS_URL, ...) would change what is under test.
_KEPT = ("PATH", "HOME", "LANG", "TMPDIR")


def base_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in _KEPT}
    env |= {"CONTROLPLANE_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "controlplane.settings"}
    env |= overrides
    return env


def production_env(data_dir: Path, **overrides: str) -> dict[str, str]:
    return base_env(
        data_dir,
        CONTROLPLANE_ENV="production",
        SECRET_KEY="s" * 20 + Fernet.generate_key().decode(),
        ENCRYPTION_KEYS=f"{Fernet.generate_key().decode()},{Fernet.generate_key().decode()}",
        ALLOWED_HOSTS="deploy.example.com",
        **overrides,
    )


def manage(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def test_production_check_deploy_reports_no_issues(tmp_path):
    result = manage(production_env(tmp_path), "check", "--deploy", "--fail-level", "WARNING")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.parametrize("missing", ["SECRET_KEY", "ENCRYPTION_KEYS"])
def test_production_refuses_to_start_without_a_secret(tmp_path, missing):
    env = production_env(tmp_path)
    del env[missing]

    result = manage(env, "check")

    assert result.returncode != 0
    assert f"ImproperlyConfigured: {missing} (or {missing}_FILE) must be set in production" in result.stderr
    assert not (tmp_path / "secret_key").exists()
    assert not (tmp_path / "encryption_key").exists()


def test_production_turns_off_debug_and_turns_on_https_protections(tmp_path):
    loaded = load_settings(
        production_env(tmp_path),
        "DEBUG",
        "SECURE_SSL_REDIRECT",
        "SESSION_COOKIE_SECURE",
        "CSRF_COOKIE_SECURE",
        "SECURE_HSTS_SECONDS",
        "EMAIL_BACKEND",
        "ALLOWED_HOSTS",
    )

    assert loaded == {
        "DEBUG": False,
        "SECURE_SSL_REDIRECT": True,
        "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True,
        "SECURE_HSTS_SECONDS": 31536000,
        "EMAIL_BACKEND": "django.core.mail.backends.smtp.EmailBackend",
        "ALLOWED_HOSTS": ["deploy.example.com"],
    }


def test_sqlite_in_the_data_folder_without_database_url(tmp_path):
    db = load_settings(base_env(tmp_path), "DATABASES")["DATABASES"]["default"]

    assert db["ENGINE"] == "django.db.backends.sqlite3"
    assert db["NAME"] == str(tmp_path / "controlplane.sqlite3")


def test_postgresql_with_database_url(tmp_path):
    env = base_env(tmp_path, DATABASE_URL="postgres://cp:pw@db.internal:5433/controlplane")

    db = load_settings(env, "DATABASES")["DATABASES"]["default"]

    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["HOST"], db["PORT"], db["NAME"], db["USER"], db["PASSWORD"]) == (
        "db.internal",
        5433,
        "controlplane",
        "cp",
        "pw",
    )


def test_filesystem_broker_in_the_data_folder_without_redis_url(tmp_path):
    loaded = load_settings(base_env(tmp_path), "CELERY_BROKER_URL", "CELERY_BROKER_TRANSPORT_OPTIONS")

    assert loaded["CELERY_BROKER_URL"].startswith("filesystem://")
    options = loaded["CELERY_BROKER_TRANSPORT_OPTIONS"]
    for key in ("data_folder_in", "data_folder_out", "processed_folder", "control_folder"):
        assert Path(options[key]).is_relative_to(tmp_path), key
        assert Path(options[key]).is_dir(), key


def test_redis_broker_and_results_with_redis_url(tmp_path):
    env = base_env(tmp_path, REDIS_URL="redis://cache.internal:6380/2")

    loaded = load_settings(env, "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND")

    assert loaded == {
        "CELERY_BROKER_URL": "redis://cache.internal:6380/2",
        "CELERY_RESULT_BACKEND": "redis://cache.internal:6380/2",
    }
    assert not (tmp_path / "broker").exists()


def test_development_keys_are_generated_once_and_kept_in_the_data_folder(tmp_path):
    first = load_settings(base_env(tmp_path), "SECRET_KEY", "ENCRYPTION_KEYS")
    second = load_settings(base_env(tmp_path), "SECRET_KEY", "ENCRYPTION_KEYS")

    assert first == second
    assert len(first["SECRET_KEY"]) >= 50
    Fernet(first["ENCRYPTION_KEYS"][0])  # a usable key
    for name in ("secret_key", "encryption_key"):
        mode = stat.S_IMODE((tmp_path / name).stat().st_mode)
        assert mode == 0o600, f"{name} is readable by others ({oct(mode)})"
    other = load_settings(base_env(tmp_path / "elsewhere"), "SECRET_KEY")
    assert other["SECRET_KEY"] != first["SECRET_KEY"]


def test_processes_starting_together_agree_on_the_generated_keys(tmp_path):
    code = "from django.conf import settings as s; print(s.SECRET_KEY, s.ENCRYPTION_KEYS[0])"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=base_env(tmp_path),
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    outputs = {proc.communicate(timeout=60)[0].strip() for proc in procs}

    assert len(outputs) == 1
    assert outputs == {f"{(tmp_path / 'secret_key').read_text()} {(tmp_path / 'encryption_key').read_text()}"}


def test_secrets_are_read_from_files_named_by_file_variables(tmp_path):
    key_new, key_old = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    (tmp_path / "sk").write_text("k" * 60 + "\n")
    (tmp_path / "ek").write_text(f"{key_new}, {key_old}\n")
    (tmp_path / "pw").write_text("smtp-password\n")
    env = base_env(
        tmp_path / "data",
        CONTROLPLANE_ENV="production",
        ALLOWED_HOSTS="deploy.example.com",
        SECRET_KEY_FILE=str(tmp_path / "sk"),
        ENCRYPTION_KEYS_FILE=str(tmp_path / "ek"),
        EMAIL_HOST_PASSWORD_FILE=str(tmp_path / "pw"),
    )

    loaded = load_settings(env, "SECRET_KEY", "ENCRYPTION_KEYS", "EMAIL_HOST_PASSWORD")

    assert loaded == {
        "SECRET_KEY": "k" * 60,
        "ENCRYPTION_KEYS": [key_new, key_old],
        "EMAIL_HOST_PASSWORD": "smtp-password",
    }


def test_readme_documents_every_variable_the_settings_read():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Environment variables", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]*)(?:<\w+>)?`", table, re.MULTILINE))
    documented |= set(re.findall(r"\(`([A-Z][A-Z0-9_]*_FILE)`\)", table))
    prefixes = settings_env_prefixes()

    missing = settings_env_names() - documented
    assert not missing, f"README.md's environment table lacks {sorted(missing)}"
    stale = {
        name for name in documented - settings_env_names() if not any(name.startswith(p) for p in prefixes)
    }
    assert not stale, f"README.md documents variables the settings no longer read: {sorted(stale)}"
    for prefix in prefixes:
        assert f"`{prefix}<" in table, f"README.md's environment table lacks {prefix}<...>"


def celery_worker_conf(env: dict[str, str]) -> list:
    """The pool, concurrency and prefetch a plain `celery -A controlplane worker` starts with."""
    code = (
        "import json; from controlplane.celery import app; app.loader.import_default_modules(); "
        "c = app.conf; print(json.dumps([c.worker_pool, c.worker_concurrency, c.worker_prefetch_multiplier]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_plain_worker_command_runs_sixteen_threads_each_reserving_one_message(tmp_path):
    assert celery_worker_conf(base_env(tmp_path)) == ["threads", 16, 1]


def test_worker_pool_and_concurrency_come_from_the_environment(tmp_path):
    env = base_env(tmp_path, CELERY_WORKER_CONCURRENCY="32", CELERY_WORKER_POOL="prefork")
    assert celery_worker_conf(env) == ["prefork", 32, 1]
