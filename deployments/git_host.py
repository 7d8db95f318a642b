"""Posting deployments to the git host: GitHub Deployments with statuses and a commit status per
region (``controlplane/<stage>/<region>``); GitLab commit statuses and the environment's
deployment. Rows come from ``deployments.scm_status`` (the engine's hooks) and are posted in order
per deployment, with retries and an attempt log like notifications. Every request goes through
the outgoing-URL safety checks (a self-hosted host's URL is chosen by a team admin).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import quote

import httpx
import jwt
from django.conf import settings
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from controlplane import audit, urlsafety
from controlplane.notify import retry_delay

from .choices import GitHostPostStatus, GitHostProvider
from .models import Deployment, GitHostConnection, GitHostDeployment, GitHostPost, GitHostPostAttempt
from .scm_status import enqueue
from .services.releases import repo_web_url

log = logging.getLogger(__name__)

GITHUB_API_VERSION = "2022-11-28"
USER_AGENT = "controlplane-git-host/1"
RETRY_STATUSES = frozenset({408, 425, 429})
LOOK_AGAIN_S = 5.0  # a row held by another worker's attempt is looked at again after this long

# Our states → GitHub deployment status / commit status, GitLab deployment / commit status.
GITHUB_DEPLOYMENT = {
    "queued": "queued", "in_progress": "in_progress", "succeeded": "success", "failed": "failure",
    "partially_failed": "failure", "rolled_back": "failure", "cancelled": "error", "superseded": "error",
    "inactive": "inactive",
}  # fmt: skip
GITHUB_COMMIT = {
    "pending": "pending", "succeeded": "success", "failed": "failure", "rolled_back": "failure",
    "cancelled": "error", "skipped": "error",
}  # fmt: skip
GITLAB_DEPLOYMENT = {
    "queued": "created", "in_progress": "running", "succeeded": "success", "failed": "failed",
    "partially_failed": "failed", "rolled_back": "failed", "cancelled": "canceled", "superseded": "canceled",
}  # fmt: skip
GITLAB_COMMIT = {
    "pending": "pending", "succeeded": "success", "failed": "failed", "rolled_back": "failed",
    "cancelled": "canceled", "skipped": "skipped",
}  # fmt: skip


class GitHostError(Exception):
    """A post failed. ``transient``: worth another try; ``disables``: the credential is refused."""

    def __init__(self, detail: str, *, response_code: int | None = None, transient=False, disables=False):
        super().__init__(detail)
        self.detail = detail
        self.response_code = response_code
        self.transient = transient
        self.disables = disables


class Skip(Exception):
    """Nothing to post for this row (the host has no such state, or nothing to attach it to)."""


@dataclass
class Host:
    provider: str
    api_url: str
    repository: str
    headers: dict[str, str]


# --- Talking to the host --------------------------------------------------------------------


def _request(method: str, url: str, *, headers: dict[str, str], body: dict | None = None) -> httpx.Response:
    try:
        with urlsafety.safe_client(timeout=settings.NOTIFY_TIMEOUT) as client:
            response = client.request(method, url, json=body, headers={"User-Agent": USER_AGENT, **headers})
    except urlsafety.UnsafeURL as exc:
        raise GitHostError(f"Refused: {exc.detail}", transient="Cannot resolve" in exc.detail)
    except httpx.TimeoutException:
        raise GitHostError(f"Timed out after {settings.NOTIFY_TIMEOUT:g}s.", transient=True)
    except httpx.TransportError as exc:
        raise GitHostError(f"Connection failed: {exc or type(exc).__name__}.", transient=True)
    code = response.status_code
    if 200 <= code < 300:
        return response
    detail = f"HTTP {code} from {method} {url}: {response.text[:200].strip() or response.reason_phrase}"
    rate_limited = code == 403 and response.headers.get("x-ratelimit-remaining") == "0"
    if code >= 500 or code in RETRY_STATUSES or rate_limited:
        raise GitHostError(detail, response_code=code, transient=True)
    raise GitHostError(detail, response_code=code, disables=code == 401)


_app_tokens: dict[tuple[str, str], tuple[str, float]] = {}
_app_tokens_lock = threading.Lock()


def github_app_token(conn: GitHostConnection, api_url: str) -> str:
    """An installation token of the connection's GitHub App (made with a JWT signed by the App's
    private key; kept until 5 minutes before GitHub's one-hour expiry)."""
    cache_key = (api_url, conn.installation_id)
    with _app_tokens_lock:
        cached = _app_tokens.get(cache_key)
    if cached and cached[1] > time.monotonic():
        return cached[0]
    now = int(time.time())
    try:
        app_jwt = jwt.encode(
            {"iat": now - 60, "exp": now + 540, "iss": conn.github_app_id}, conn.credential, "RS256"
        )
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise GitHostError(f"The GitHub App's private key is unusable: {type(exc).__name__}.", disables=True)
    response = _request(
        "POST",
        f"{api_url}/app/installations/{conn.installation_id}/access_tokens",
        headers={"Authorization": f"Bearer {app_jwt}", "Accept": "application/vnd.github+json",
                 "X-GitHub-Api-Version": GITHUB_API_VERSION},
    )  # fmt: skip
    token = response.json().get("token", "")
    if not token:
        raise GitHostError("GitHub answered without an installation token.", transient=True)
    with _app_tokens_lock:
        _app_tokens[cache_key] = (token, time.monotonic() + 55 * 60)
    return token


def host_for(conn: GitHostConnection) -> Host:
    """Where and how to post for ``conn``. Raises GitHostError when the repository is unknown."""
    web, _kind = repo_web_url(conn.app.repo_url)
    scheme_host, _, path = web.partition("://")[2].partition("/") if web else ("", "", "")
    repository = conn.repository or path
    if not repository:
        raise GitHostError("The app has no repository: set its repo_url or the connection's repository.")
    if conn.provider == GitHostProvider.GITHUB:
        api = conn.api_url or (
            "https://api.github.com" if scheme_host in ("github.com", "") else f"https://{scheme_host}/api/v3"
        )
        api = api.rstrip("/")
        token = github_app_token(conn, api) if conn.github_app_id else conn.credential
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": GITHUB_API_VERSION,
        }
        return Host(GitHostProvider.GITHUB, api, repository, headers)
    api = (conn.api_url or f"https://{scheme_host}/api/v4").rstrip("/")
    return Host(GitHostProvider.GITLAB, api, repository, {"PRIVATE-TOKEN": conn.credential})


def _urls(deployment: Deployment) -> tuple[str, str]:
    """(environment_url, log_url): the stage's URL and the deployment's page in our UI."""
    log_url = settings.SITE_URL + settings.DEPLOYMENT_URL_PATH.format(id=deployment.pk)
    stage = deployment.stage
    if stage.domain:
        return f"https://{stage.domain}", log_url
    endpoint = (
        stage.placements.exclude(endpoint_url="")
        .order_by("placement__region__code")
        .values_list("endpoint_url", flat=True)
        .first()
    )
    return endpoint or "", log_url


def _post_github(host: Host, row: GitHostPost, deployment: Deployment) -> int:
    environment_url, log_url = _urls(deployment)
    repo = f"{host.api_url}/repos/{host.repository}"
    if row.region_id is not None:
        response = _request("POST", f"{repo}/statuses/{deployment.commit_sha}", headers=host.headers, body={
            "state": GITHUB_COMMIT[row.state], "target_url": log_url, "description": row.description,
            "context": f"controlplane/{deployment.stage.name}/{row.region.code}",
        })  # fmt: skip
        return response.status_code
    link = GitHostDeployment.objects.filter(deployment=deployment).first()
    if link is None:
        if row.state == "inactive":
            raise Skip("No GitHub deployment was made for it.")
        stage = deployment.stage.name
        created = _request("POST", f"{repo}/deployments", headers=host.headers, body={
            "ref": deployment.commit_sha, "task": "deploy", "auto_merge": False, "required_contexts": [],
            "environment": stage, "description": f"{deployment.kind} of {deployment.app.slug} to {stage}",
            "transient_environment": False, "production_environment": stage == "production",
            "payload": {"controlplane_deployment": deployment.pk, "app": deployment.app.slug},
        })  # fmt: skip
        link = GitHostDeployment.objects.create(
            deployment=deployment, provider=GitHostProvider.GITHUB, external_id=str(created.json()["id"])
        )
    statuses = f"{repo}/deployments/{link.external_id}/statuses"
    response = _request("POST", statuses, headers=host.headers, body={
        "state": GITHUB_DEPLOYMENT[row.state], "description": row.description,
        "environment": deployment.stage.name, "environment_url": environment_url, "log_url": log_url,
        # The deployment it replaced is marked inactive by its own row, production included.
        "auto_inactive": False,
    })  # fmt: skip
    return response.status_code


def _post_gitlab(host: Host, row: GitHostPost, deployment: Deployment) -> int:
    _environment_url, log_url = _urls(deployment)
    project = f"{host.api_url}/projects/{quote(host.repository, safe='')}"
    ref = deployment.commit_branch or deployment.commit_sha
    if row.region_id is not None:
        body = {
            "state": GITLAB_COMMIT[row.state], "target_url": log_url, "description": row.description,
            "name": f"controlplane/{deployment.stage.name}/{row.region.code}",
        }  # fmt: skip
        if deployment.commit_branch:
            body["ref"] = deployment.commit_branch
        return _request(
            "POST", f"{project}/statuses/{deployment.commit_sha}", headers=host.headers, body=body
        ).status_code
    if row.state not in GITLAB_DEPLOYMENT:
        raise Skip(
            f"GitLab deployments have no '{row.state}' status (GitLab tracks the replaced one itself)."
        )
    status = GITLAB_DEPLOYMENT[row.state]
    link = GitHostDeployment.objects.filter(deployment=deployment).first()
    if link is None:
        created = _request("POST", f"{project}/deployments", headers=host.headers, body={
            "environment": deployment.stage.name, "sha": deployment.commit_sha, "ref": ref,
            "tag": ref.startswith("refs/tags/"), "status": status,
        })  # fmt: skip
        GitHostDeployment.objects.create(
            deployment=deployment, provider=GitHostProvider.GITLAB, external_id=str(created.json()["id"])
        )
        return created.status_code
    return _request(
        "PUT", f"{project}/deployments/{link.external_id}", headers=host.headers, body={"status": status}
    ).status_code


# --- The outbox -----------------------------------------------------------------------------


def _log_attempt(row: GitHostPost, number: int, status: str, started: float, *, code=None, error="") -> None:
    GitHostPostAttempt.objects.create(
        post=row, number=number, status=status, response_code=code, error=error[:2000],
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )  # fmt: skip


def _finish(row: GitHostPost, attempt: int, status: str, started: float, *, code=None, error="") -> None:
    with transaction.atomic():
        GitHostPost.objects.filter(pk=row.pk).update(
            status=status, response_code=code, error=error[:2000], next_attempt_at=None,
            sent_at=timezone.now() if status == GitHostPostStatus.SENT else None,
        )  # fmt: skip
        _log_attempt(row, attempt, status, started, code=code, error=error)


def disable_connection(conn: GitHostConnection, reason: str) -> None:
    """Turn the app's reporting off because the host refuses its credential (an admin fixes the
    credential in the Django admin and turns it on again); later rows fail with the reason."""
    conn.enabled, conn.disabled_reason = False, reason[:500]
    GitHostConnection.objects.filter(pk=conn.pk, enabled=True).update(
        enabled=False, disabled_reason=reason[:500]
    )
    log.warning("git host connection of %s disabled: %s", conn.app, reason)


def post_pending(deployment_id: int, *, max_attempts: int | None = None) -> float | None:
    """Post the deployment's pending rows, oldest first, stopping at the first that must wait (so
    the host sees them in order), and again for rows recorded meanwhile. Returns seconds until it
    should look again (a backoff, or another worker's attempt in flight), or None when none is
    left pending."""
    max_attempts = max_attempts or settings.NOTIFY_MAX_ATTEMPTS
    deployment = conn = None
    while True:
        rows = list(
            GitHostPost.objects.filter(deployment_id=deployment_id, status=GitHostPostStatus.PENDING)
            .select_related("region")
            .order_by("pk")
        )
        if not rows:
            return None
        if deployment is None:
            deployment = Deployment.objects.select_related("app", "stage").get(pk=deployment_id)
            conn = GitHostConnection.objects.filter(app_id=deployment.app_id).select_related("app").first()
        wait = _post_rows(rows, deployment, conn, max_attempts)
        if wait is not None:
            return wait


def _post_rows(rows, deployment, conn, max_attempts: int) -> float | None:
    for row in rows:
        now = timezone.now()
        if row.next_attempt_at is not None and row.next_attempt_at > now:
            # A backoff, or another worker's attempt holding the row: look again soon (the one
            # that tried it scheduled its own retry).
            return min((row.next_attempt_at - now).total_seconds(), LOOK_AGAIN_S)
        lease = now + timedelta(seconds=settings.NOTIFY_TIMEOUT * 3 + 60)
        claimed = GitHostPost.objects.filter(
            pk=row.pk, status=GitHostPostStatus.PENDING, attempts=row.attempts
        ).update(attempts=F("attempts") + 1, next_attempt_at=lease)
        if not claimed:
            return LOOK_AGAIN_S
        attempt = row.attempts + 1
        started = time.perf_counter()
        if conn is None or not conn.enabled:
            reason = (
                f"Git host connection disabled: {conn.disabled_reason}" if conn else "No git host connection."
            )
            _finish(row, attempt, GitHostPostStatus.FAILED, started, error=reason)
            continue
        try:
            host = host_for(conn)
            post = _post_github if host.provider == GitHostProvider.GITHUB else _post_gitlab
            code = post(host, row, deployment)
        except Skip as skip:
            _finish(row, attempt, GitHostPostStatus.SKIPPED, started, error=str(skip))
            continue
        except GitHostError as exc:
            if exc.transient and attempt < max_attempts:
                delay = retry_delay(attempt)
                with transaction.atomic():
                    GitHostPost.objects.filter(pk=row.pk).update(
                        error=exc.detail[:2000], response_code=exc.response_code,
                        next_attempt_at=timezone.now() + timedelta(seconds=delay),
                    )  # fmt: skip
                    _log_attempt(row, attempt, GitHostPostStatus.PENDING, started, code=exc.response_code,
                                 error=exc.detail)  # fmt: skip
                return delay
            error = f"Gave up after {attempt} attempts: {exc.detail}" if exc.transient else exc.detail
            _finish(row, attempt, GitHostPostStatus.FAILED, started, code=exc.response_code, error=error)
            if exc.disables:
                disable_connection(conn, exc.detail)
            continue
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the row pending forever
            log.exception("git host post %s failed unexpectedly", row.pk)
            _finish(
                row,
                attempt,
                GitHostPostStatus.FAILED,
                started,
                error=f"Unexpected error: {type(exc).__name__}.",
            )
            continue
        _finish(row, attempt, GitHostPostStatus.SENT, started, code=code)
    return None


def requeue_stale(*, grace_s: float = 60) -> int:
    """Deployments with pending rows long overdue (a lost task, a dead worker): their posting is
    enqueued again. Returns how many deployments."""
    cutoff = timezone.now() - timedelta(seconds=grace_s)
    ids = list(
        GitHostPost.objects.filter(status=GitHostPostStatus.PENDING, next_attempt_at__lt=cutoff)
        .values_list("deployment_id", flat=True)
        .distinct()[:1000]
    )
    ids += list(
        GitHostPost.objects.filter(
            status=GitHostPostStatus.PENDING, next_attempt_at__isnull=True, created_at__lt=cutoff
        )
        .values_list("deployment_id", flat=True)
        .distinct()[:1000]
    )
    enqueue(ids)
    return len(set(ids))


# --- Managing an app's connection -------------------------------------------------------------

CONNECTION_FIELDS = (
    "provider",
    "api_url",
    "repository",
    "credential",
    "github_app_id",
    "installation_id",
    "enabled",
)


def set_connection(*, principal, app, data: dict, request=None) -> GitHostConnection:
    """Create or change ``app``'s git host connection (``data``: checked ``CONNECTION_FIELDS``;
    a missing ``credential`` keeps the stored one). Turning it on again clears why it was off.
    Audited with the fields changed, never the credential's value."""
    with transaction.atomic():
        conn = GitHostConnection.objects.select_for_update().filter(app=app).first()
        created = conn is None
        conn = conn or GitHostConnection(app=app)
        changed = sorted(k for k in CONNECTION_FIELDS if k in data and getattr(conn, k) != data[k])
        for key in changed:
            setattr(conn, key, data[key])
        if data.get("enabled"):
            conn.disabled_reason = ""
        conn.save()
        audit.record(
            team=app.team, principal=principal, action="git_host.create" if created else "git_host.update",
            obj=app, object_type="git_host", changes={"fields": changed}, request=request,
        )  # fmt: skip
    return conn


def delete_connection(*, principal, app, request=None) -> None:
    with transaction.atomic():
        GitHostConnection.objects.filter(app=app).delete()
        audit.record(team=app.team, principal=principal, action="git_host.delete", obj=app,
                     object_type="git_host", request=request)  # fmt: skip
