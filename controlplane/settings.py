"""All settings, read from the environment in one place.

Every setting has an embedded default that works on one machine with no servers installed:
SQLite in the data folder, a filesystem Celery broker, a local AWS emulator. Production sets
``CONTROLPLANE_ENV=production`` and real values (see README.md).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import environ
from cryptography.fernet import Fernet
from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()

DATA_DIR = Path(env.str("CONTROLPLANE_DATA_DIR", default=str(BASE_DIR / "data"))).resolve()
DATA_DIR.mkdir(parents=True, exist_ok=True)

ENVIRONMENT = env.str("CONTROLPLANE_ENV", default="development")
PRODUCTION = ENVIRONMENT == "production"
DEBUG = env.bool("DEBUG", default=not PRODUCTION)


def _secret(name: str, default: str | None = None) -> str | None:
    """A secret from ``NAME`` or from the file named by ``NAME_FILE`` (Docker/Kubernetes secrets)."""
    path = os.environ.get(f"{name}_FILE")
    if path:
        return Path(path).read_text().strip()
    return os.environ.get(name, default)


def _dev_key(name: str, filename: str, make) -> str:
    """A generated key persisted in the data folder, so restarts keep sessions and ciphertexts.

    Raises ImproperlyConfigured in production, where ``name`` (or ``NAME_FILE``) must be set.
    """
    if PRODUCTION:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"{name} (or {name}_FILE) must be set in production")
    path = DATA_DIR / filename
    if not path.exists():
        # Web, worker and beat may start together: publish the key atomically, the first one wins,
        # so they never end up with different keys.
        tmp = path.with_name(f".{filename}.{os.getpid()}")
        with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            f.write(make())
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()


SECRET_KEY = _secret("SECRET_KEY") or _dev_key("SECRET_KEY", "secret_key", get_random_secret_key)

# Fernet keys for env vars and other secrets at rest, newest first. Older keys still decrypt;
# `manage.py reencrypt_secrets` moves every value to the newest.
_keys = _secret("ENCRYPTION_KEYS")
ENCRYPTION_KEYS: list[str] = (
    [k.strip() for k in _keys.split(",") if k.strip()]
    if _keys
    else [_dev_key("ENCRYPTION_KEYS", "encryption_key", lambda: Fernet.generate_key().decode())]
)

# Teams whose admins may add and change the installation's regions (bucket, role to assume);
# empty: the admins of every team. Superusers always may.
REGION_ADMIN_TEAMS = env.list("REGION_ADMIN_TEAMS", default=[])
# Self-hosted GitLab hosts (release diffs link to their compare pages; "gitlab" hosts need none).
GITLAB_HOSTS = env.list("GITLAB_HOSTS", default=[])

ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=[] if PRODUCTION else ["*"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
SITE_URL = env.str("SITE_URL", default="http://127.0.0.1:8000").rstrip("/")
# Keyless login from CI: the audience CI's OIDC ID tokens must name, and the exchanged token's life.
OIDC_AUDIENCE = env.str("OIDC_AUDIENCE", default=SITE_URL)
OIDC_TOKEN_TTL = min(env.int("OIDC_TOKEN_TTL", default=900), 900)  # seconds, at most 15 minutes
OIDC_LEEWAY = 30  # seconds of clock skew allowed on exp, nbf and iat
OIDC_JWKS_CACHE_S = 3600.0  # an issuer's keys are fetched again after this long...
OIDC_JWKS_MIN_REFRESH_S = env.float("OIDC_JWKS_MIN_REFRESH_S", default=10.0)  # ...or on an unknown kid

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI's files, served by us: /api/docs/ needs no CDN
    "axes",  # failed sign-ins (controlplane/signin.py)
    "csp",  # the Content-Security-Policy header
    "controlplane",
    "regions",
    "deployments",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "controlplane.middleware.RefuseNulCharactersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "axes.middleware.AxesMiddleware",  # last, as axes requires
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

CSRF_FAILURE_VIEW = "controlplane.errors.csrf_failure"  # a page for browsers, JSON for the API

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database -------------------------------------------------------------------------------
DATABASES = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'controlplane.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Web, worker and beat share the file: wait for locks instead of failing, and let a real
    # worker process in the test suite see the test database (an in-memory one is invisible to it).
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {"timeout": 30, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-controlplane.sqlite3")}
else:
    DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

LOGIN_URL = "ui:login"
LOGIN_REDIRECT_URL = "ui:home"

# --- Content-Security-Policy (django-csp) ----------------------------------------------------
# Every page's scripts and styles are files served from here: no inline <script>, <style> or
# style="..." (the UI's templates keep none), so an injected one never runs. data: images are
# Swagger UI's icons (/api/docs/, whose start-up script is a file too: SpectacularSwaggerSplitView).
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "object-src": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'"],
        "frame-ancestors": ["'none'"],
    },
}

# --- Sign-in attempts (django-axes; see controlplane/signin.py) ------------------------------
AUTHENTICATION_BACKENDS = [
    "controlplane.signin.SignInAttemptsBackend",
    "django.contrib.auth.backends.ModelBackend",
]
# Failures before sign-ins stop, counted per username from one address and per address.
AXES_FAILURE_LIMIT = env.int("LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"], "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "controlplane.signin.lockout_response"
AXES_CLIENT_IP_CALLABLE = "controlplane.audit.client_ip"  # the address the audit log records
AXES_DISABLE_ACCESS_LOG = True  # successful sign-ins are not kept row by row; failures are

# --- Security (production) ------------------------------------------------------------------
if PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
    SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["controlplane.permissions.TeamRolePermission"],
    "DEFAULT_PAGINATION_CLASS": "controlplane.pagination.CursorPagination",
    "DEFAULT_FILTER_BACKENDS": ["controlplane.filters.FilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "controlplane.api.schema.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.errors.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"]
    + ([] if PRODUCTION else ["rest_framework.renderers.BrowsableAPIRenderer"]),
    # JSON in (form bodies are a 415): a form cannot say 0 from "0" or false from "false". Artifact
    # uploads take multipart (deployments/api/artifacts.py).
    "DEFAULT_PARSER_CLASSES": ["controlplane.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "TITLE": "controlplane API",
    "DESCRIPTION": "Deploy serverless apps to many AWS regions at once and keep them healthy.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {
        "HealthStatusEnum": "regions.choices.HealthStatus",
        "ChannelKindEnum": "controlplane.choices.ChannelKind",
        "NotificationStatusEnum": "controlplane.choices.NotificationStatus",
        "AlertEventEnum": "controlplane.choices.AlertEvent",
    },
}

# --- Celery ---------------------------------------------------------------------------------
REDIS_URL = env.str("REDIS_URL", default="")
BROKER_DIR = DATA_DIR / "broker"
if REDIS_URL:
    CELERY_BROKER_URL = REDIS_URL
    CELERY_RESULT_BACKEND = env.str("CELERY_RESULT_BACKEND", default=REDIS_URL)
    # A worker must notice a dead Redis within seconds and reconnect as soon as it is back:
    # sockets time out (a blocking read waits at most 1 s for a message, so 10 s is never hit by
    # an idle queue), connections are checked when idle, and the reconnect backoff is capped at
    # CELERY_BROKER_RECONNECT_MAX (kombu's default grows to 30 s between tries). The visibility
    # timeout only matters for a worker that died holding a message: the reaper resumes its
    # regions long before (REGION_HEARTBEAT_TIMEOUT), and a late redelivery is refused by the
    # claim, so it stays long enough never to redeliver a live long task (a build, a canary).
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        "visibility_timeout": 3600,
        "socket_timeout": 10,
        "socket_connect_timeout": 3,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "retry_on_timeout": True,
    }
else:
    # kombu's filesystem transport: a real broker between processes, no server to run.
    for sub in ("queue", "processed", "control"):
        (BROKER_DIR / sub).mkdir(parents=True, exist_ok=True)
    (DATA_DIR / "results").mkdir(exist_ok=True)
    # A hostname only keeps kombu from warning that none was given; the transport ignores it.
    CELERY_BROKER_URL = "filesystem://localhost/"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "queue"),
        "data_folder_out": str(BROKER_DIR / "queue"),
        "processed_folder": str(BROKER_DIR / "processed"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
        "polling_interval": env.float("CELERY_POLLING_INTERVAL", default=0.1),
    }
    CELERY_RESULT_BACKEND = f"file://{DATA_DIR / 'results'}"
CELERY_TASK_ALWAYS_EAGER = env.bool("CELERY_TASK_ALWAYS_EAGER", default=False)
# What the engine needs of a worker, so the plain `celery -A controlplane worker` is right: a region's
# job mostly waits on AWS, so threads (not one process per core) let every region of a deployment run
# at once; one message reserved per thread, so a long job never holds a region another thread could run.
CELERY_WORKER_POOL = env.str("CELERY_WORKER_POOL", default="threads")
CELERY_WORKER_CONCURRENCY = env.int("CELERY_WORKER_CONCURRENCY", default=16)
CELERY_WORKER_PREFETCH_MULTIPLIER = env.int("CELERY_WORKER_PREFETCH_MULTIPLIER", default=1)
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
# Longest wait between two tries to reach a broker that went away (worker, beat, web): a broker
# that comes back is used again within this many seconds.
CELERY_BROKER_RECONNECT_MAX = env.float("CELERY_BROKER_RECONNECT_MAX", default=2.0)

# --- AWS ------------------------------------------------------------------------------------
# One endpoint for every service (a moto server, LocalStack), or per service with
# AWS_ENDPOINT_URL_<SERVICE> (e.g. AWS_ENDPOINT_URL_LAMBDA), as botocore itself reads them.
AWS_ENDPOINT_URL = env.str("AWS_ENDPOINT_URL", default="")
AWS_ENDPOINT_URLS = {
    key.removeprefix("AWS_ENDPOINT_URL_").lower(): value
    for key, value in os.environ.items()
    if key.startswith("AWS_ENDPOINT_URL_") and value
}
AWS_MAX_ATTEMPTS = env.int("AWS_MAX_ATTEMPTS", default=12)
# botocore's retry mode. "standard" with a short backoff on throttling won the measurement against
# every other call throttled (README, "Throttling"); "adaptive" is there to compare.
AWS_RETRY_MODE = env.str("AWS_RETRY_MODE", default="standard")
# Standard mode's wait before retry i: rand(0, 1) * min(base * 2**i, max) (botocore: 1 s and 20 s).
AWS_THROTTLE_BASE_DELAY = env.float("AWS_THROTTLE_BASE_DELAY", default=0.01)
AWS_RETRY_MAX_DELAY = env.float("AWS_RETRY_MAX_DELAY", default=5.0)
# Client-side rate limit per AWS service and region, shared by every worker (0: none).
AWS_REQUESTS_PER_SECOND = env.float("AWS_REQUESTS_PER_SECOND", default=0.0)
AWS_LAMBDA_ROLE_ARN = env.str("AWS_LAMBDA_ROLE_ARN", default="")

# --- Product settings -----------------------------------------------------------------------
ARTIFACT_STORAGE = env.str("ARTIFACT_STORAGE", default="local")  # "local" or "s3"
ARTIFACT_BUCKET = env.str("ARTIFACT_BUCKET", default="")
ARTIFACT_DIR = DATA_DIR / "artifacts"
VERSION_RETENTION = env.int("VERSION_RETENTION", default=10)
REGION_DEPLOY_TIME_LIMIT = env.int("REGION_DEPLOY_TIME_LIMIT", default=900)
# Recovery from a dead worker: a short heartbeat per running region, in the database. While a
# region's job runs, a thread of its own (not the step loop, so a long AWS call, a waiter or a
# sandboxed build never delays it) writes the region's heartbeat_at every
# REGION_HEARTBEAT_INTERVAL seconds; a region silent for REGION_HEARTBEAT_TIMEOUT is resumed by the
# reaper (every REAPER_INTERVAL) on another worker, at the step it stood at (the steps are
# idempotent: one Lambda version per release and region, the alias moved once). Worst case from a
# SIGKILL to the resume: TIMEOUT + REAPER_INTERVAL (+ a claim), 20 s with the defaults; a region is
# taken over only after three beats in a row were missed.
# Why not Celery's worker heartbeats: they travel through the broker (so a broker outage makes
# every worker look dead, and the filesystem broker has no event bus), say which worker is alive
# but not which region it holds, and need a monitor process; the row's heartbeat lives where the
# region's state does and is checked by the same conditional update that claims it.
REGION_HEARTBEAT_INTERVAL = env.float("REGION_HEARTBEAT_INTERVAL", default=5.0)
REGION_HEARTBEAT_TIMEOUT = env.float("REGION_HEARTBEAT_TIMEOUT", default=15.0)
# How often beat runs the reaper: resumes silent regions, re-sends work whose message was lost.
REAPER_INTERVAL = env.float("REAPER_INTERVAL", default=5.0)
# Queued work older than this with no sign of a worker is sent again (a lost message), at most
# once per REQUEUE_AFTER per item. After an outage of the broker (or of beat and the workers: the
# reaper did not run for 2 x REAPER_INTERVAL, or the broker lost its data), every queued piece of
# work is sent again at once, whatever its age.
REQUEUE_AFTER = env.float("REQUEUE_AFTER", default=30.0)
DEPLOY_VERIFY = env.bool("DEPLOY_VERIFY", default=True)
DEPLOY_VERIFY_ATTEMPTS = env.int("DEPLOY_VERIFY_ATTEMPTS", default=5)
DEPLOY_VERIFY_INTERVAL = env.float("DEPLOY_VERIFY_INTERVAL", default=2.0)
AWS_RETRY_LIMIT = env.int("AWS_RETRY_LIMIT", default=5)  # task-level retries after botocore's own
# Route 53 allows 5 requests a second per account, all regions together: every worker takes a
# token from one bucket (Redis, or a file in the data folder) before each request. 0: no limit.
ROUTE53_REQUESTS_PER_SECOND = env.float("ROUTE53_REQUESTS_PER_SECOND", default=4.5)
ROUTE53_BURST = env.float("ROUTE53_BURST", default=4.0)
# A custom domain's certificate waits for ISSUED with the region parked: polled this often
# (the first poll soon, then further apart), failing after ACM_VALIDATION_TIMEOUT seconds.
ACM_POLL_MIN = env.float("ACM_POLL_MIN", default=2.0)
ACM_POLL_MAX = env.float("ACM_POLL_MAX", default=30.0)
ACM_VALIDATION_TIMEOUT = env.float("ACM_VALIDATION_TIMEOUT", default=4 * 3600.0)
# How long a new execution role may take to become assumable by Lambda (IAM propagation).
IAM_PROPAGATION_TIMEOUT = env.float("IAM_PROPAGATION_TIMEOUT", default=60.0)
HEALTH_PROBE_INTERVAL = env.float("HEALTH_PROBE_INTERVAL", default=10.0)
HEALTH_PROBE_TIMEOUT = env.float("HEALTH_PROBE_TIMEOUT", default=5.0)
HEALTH_FAILURE_THRESHOLD = env.int("HEALTH_FAILURE_THRESHOLD", default=2)
# Seconds a probe round's claim on a placement lasts: no other round probes it meanwhile; a round
# that died frees its placements after this (plus half an interval).
HEALTH_PROBE_LEASE = env.float("HEALTH_PROBE_LEASE", default=60.0)
# More than this many down/up transitions of a placement within HEALTH_FLAP_WINDOW is flapping:
# one FLAPPING alert, then silence until it is stable. 0: no flap damping.
HEALTH_FLAP_TRANSITIONS = env.int("HEALTH_FLAP_TRANSITIONS", default=4)
# Seconds transitions are counted in, and how long a flapping placement must be stable before
# its alerts resume.
HEALTH_FLAP_WINDOW = env.float("HEALTH_FLAP_WINDOW", default=600.0)
HEALTH_RECOVERY_THRESHOLD = env.int("HEALTH_RECOVERY_THRESHOLD", default=2)
HEALTH_PROBE_RETENTION_DAYS = env.int("HEALTH_PROBE_RETENTION_DAYS", default=7)
HEALTH_REMINDER_MINUTES = env.int("HEALTH_REMINDER_MINUTES", default=0)  # 0: no reminders
# Outgoing webhooks/Slack/probes may reach private or loopback addresses only when allowed.
ALLOW_PRIVATE_URLS = env.bool("ALLOW_PRIVATE_URLS", default=False)
ALLOW_HTTP_URLS = env.bool("ALLOW_HTTP_URLS", default=False)
# An app's repo_url may be a file:// URL or a path on the workers' disk (a local mirror; the tests'
# repositories) only when allowed: otherwise anyone who may set repo_url reads the server's disk.
ALLOW_FILE_REPOS = env.bool("ALLOW_FILE_REPOS", default=False)
# How a placement's endpoint is found for health probes; tests point it at local servers.
ENDPOINT_RESOLVER = env.str("ENDPOINT_RESOLVER", default="regions.endpoints.aws_endpoint")
# Base URLs that replace a placement's endpoint, read from the environment so a worker subprocess
# sees them too: {"<region>": url, "<app>/<stage>/<region>": url, "<team>/<app>/<stage>/<region>": url};
# the most specific key wins. Tests and benchmarks point regions at local servers with it.
ENDPOINT_OVERRIDES: dict = env.json("ENDPOINT_OVERRIDES", default={})
# The local regions (regions/local/: the dev stack runs deployed code on this machine). The dev
# stack and the tests set ENDPOINT_RESOLVER=regions.local.endpoints.local_endpoint.
LOCAL_REGIONS_HOST = env.str("LOCAL_REGIONS_HOST", default="127.0.0.1")
LOCAL_REGIONS_PORT = env.int("LOCAL_REGIONS_PORT", default=9100)  # regions: the next 34 ports
LOCAL_REGIONS_MAX_WORKERS = env.int("LOCAL_REGIONS_MAX_WORKERS", default=32)
# Warm workers of one version at most; more concurrent requests wait for one (reserved concurrency).
LOCAL_REGIONS_MAX_PER_VERSION = env.int("LOCAL_REGIONS_MAX_PER_VERSION", default=4)
LOCAL_REGIONS_IDLE_S = env.float("LOCAL_REGIONS_IDLE_S", default=300.0)
LOCAL_REGIONS_CLIENT_REGION = env.str("LOCAL_REGIONS_CLIENT_REGION", default="us-east-1")
# Seconds between the local Route 53 checkers' requests; 0: each health check's RequestInterval.
LOCAL_REGIONS_CHECK_INTERVAL = env.float("LOCAL_REGIONS_CHECK_INTERVAL", default=0.0)
# Lambda code runs in controlplane.sandbox (bubblewrap). "off" runs it as plain processes that can
# see and reach everything the control plane can: only for machines without bubblewrap.
LOCAL_REGIONS_SANDBOX = env.bool("LOCAL_REGIONS_SANDBOX", default=True)
# The global URL of a stage with a domain as shown by the API and UI; the dev stack points it at
# the local regions' global endpoint (http://127.0.0.1:9100/{domain}).
GLOBAL_ENDPOINT_URL = env.str("GLOBAL_ENDPOINT_URL", default="https://{domain}")
HEALTH_PROBE_CONCURRENCY = env.int("HEALTH_PROBE_CONCURRENCY", default=200)
HEALTH_ROUTE53_INTERVAL = env.float("HEALTH_ROUTE53_INTERVAL", default=60.0)
HEALTH_URL_PATH = "/apps/{app}/health/"  # where alert links send people (SITE_URL + this)
# --- Alerts ---------------------------------------------------------------------------------
# One module per channel kind, behind controlplane.channels.base.ChannelBackend.
CHANNEL_BACKENDS = {
    "slack": "controlplane.channels.slack.SlackBackend",
    "email": "controlplane.channels.email.EmailBackend",
    "sms": "controlplane.channels.sms.SmsBackend",
    "webhook": "controlplane.channels.webhook.WebhookBackend",
}
NOTIFY_TIMEOUT = env.float("NOTIFY_TIMEOUT", default=10.0)
NOTIFY_MAX_ATTEMPTS = env.int("NOTIFY_MAX_ATTEMPTS", default=3)
# Seconds to wait before the 2nd, 3rd, ... attempt of a delivery that failed transiently.
NOTIFY_RETRY_DELAYS: list[float] = [float(x) for x in env.list("NOTIFY_RETRY_DELAYS", default=["10", "60"])]
DEPLOYMENT_URL_PATH = "/deployments/{id}/"
SMS_REGION = env.str("SMS_REGION", default="us-east-1")
SMS_SENDER_ID = env.str("SMS_SENDER_ID", default="")
BUILD_TIMEOUT = env.int("BUILD_TIMEOUT", default=600)
# How often a running build reads its deployment's cancel flag: a superseded build stops this soon.
BUILD_CANCEL_POLL = env.float("BUILD_CANCEL_POLL", default=0.25)
# Where a build runs: "sandbox" (bubblewrap on the worker, the default) or "codebuild" (AWS CodeBuild).
BUILD_BACKEND = env.str("BUILD_BACKEND", default="sandbox")
# Limits of a sandboxed build (besides BUILD_TIMEOUT); see controlplane/sandbox.
BUILD_CPU_SECONDS = env.int("BUILD_CPU_SECONDS", default=0) or BUILD_TIMEOUT
BUILD_MEMORY_MB = env.int("BUILD_MEMORY_MB", default=4096)
BUILD_PROCESSES = env.int("BUILD_PROCESSES", default=1024)
BUILD_DISK_MB = env.int("BUILD_DISK_MB", default=8192)
# Where sandboxes keep their folders (checkouts included); default: a per-uid folder in /var/tmp.
SANDBOX_DIR = env.str("SANDBOX_DIR", default="")
# Extra read-only system folders a sandbox sees (toolchains outside /usr, e.g. /opt/node).
SANDBOX_READONLY_PATHS = env.list("SANDBOX_READONLY_PATHS", default=[])
# CIDRs a sandbox's network treats as public. Tests only: a stand-in for the internet on loopback.
SANDBOX_TREAT_AS_PUBLIC = env.list("SANDBOX_TREAT_AS_PUBLIC", default=[])
# BUILD_BACKEND=codebuild: the project (made by the operator), its region, the bucket for sources and
# outputs, and optional per-installation overrides of the project's service role and image.
CODEBUILD_PROJECT = env.str("CODEBUILD_PROJECT", default="")
CODEBUILD_REGION = env.str("CODEBUILD_REGION", default="us-east-1")
CODEBUILD_BUCKET = env.str("CODEBUILD_BUCKET", default="")
CODEBUILD_ROLE_ARN = env.str("CODEBUILD_ROLE_ARN", default="")
CODEBUILD_IMAGE = env.str("CODEBUILD_IMAGE", default="")
CODEBUILD_POLL_INTERVAL = env.float("CODEBUILD_POLL_INTERVAL", default=5.0)
WEBHOOK_MAX_BODY = 5 * 1024 * 1024  # webhooks read their body themselves (deployments/webhooks/service.py)
# Every other body without files (API JSON and forms, UI forms): over it is a 413 request_too_large.
DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024

# --- Email ----------------------------------------------------------------------------------
EMAIL_BACKEND = env.str(
    "EMAIL_BACKEND",
    default="django.core.mail.backends.smtp.EmailBackend"
    if PRODUCTION
    else "django.core.mail.backends.console.EmailBackend",
)
EMAIL_HOST = env.str("EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("EMAIL_HOST_USER", default="")
EMAIL_HOST_PASSWORD = _secret("EMAIL_HOST_PASSWORD", "") or ""
EMAIL_USE_TLS = env.bool("EMAIL_USE_TLS", default=False)
DEFAULT_FROM_EMAIL = env.str("DEFAULT_FROM_EMAIL", default="controlplane@localhost")

# --- Logging --------------------------------------------------------------------------------
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {
        "botocore": {"level": "WARNING"},
        "urllib3": {"level": "WARNING"},
        "axes.apps": {"level": "WARNING"},  # its start-up banner, printed by every manage.py command
    },
}
