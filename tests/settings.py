"""Test settings: the real settings, with a private data folder, database and Celery queue per
test run, so parallel runs and a running dev stack never see each other's tasks. A worker
subprocess started by the suite inherits the same environment and so the same folder and queue."""

import os
import tempfile
import uuid

RUN_ID = os.environ.setdefault("CONTROLPLANE_TEST_RUN", uuid.uuid4().hex[:10])
os.environ.setdefault("CONTROLPLANE_DATA_DIR", tempfile.mkdtemp(prefix="controlplane-test-"))
os.environ.setdefault("ALLOW_PRIVATE_URLS", "true")
os.environ.setdefault("ALLOW_HTTP_URLS", "true")
os.environ.setdefault("ALLOW_FILE_REPOS", "true")  # the tests' git repositories are local folders
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("CELERY_POLLING_INTERVAL", "0.05")

from controlplane.settings import *  # noqa: E402,F403
from controlplane.settings import DATABASES  # noqa: E402

if DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
    # One test database per run, so two runs against one server never collide.
    DATABASES["default"]["TEST"] = {"NAME": f"test_controlplane_{RUN_ID}"}
if os.environ.get("CONTROLPLANE_TEST_WORKER"):
    # A worker process started by the suite uses the suite's test database.
    DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"]

# A worker started for one test module may read a queue of its own (CONTROLPLANE_TEST_QUEUE).
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CONTROLPLANE_TEST_QUEUE") or f"controlplane-test-{RUN_ID}"
# The strict AWS emulator's delays are short in tests (tests/support/strict_aws.py, Rules.fast):
# so are the polls of a certificate waiting for validation.
ACM_POLL_MIN = 0.1
ACM_POLL_MAX = 0.5
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
