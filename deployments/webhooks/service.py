"""Receiving a git host's delivery: read it within a size limit, find the apps of its repository,
verify it against their secrets, record it once, and start a deployment for every stage whose
branch it moves.

The body is parsed before it is verified only to find whose secret to verify it with; nothing is
written until one app's secret verifies it. A repeated delivery id creates nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import parse_qs

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.http import HttpRequest, JsonResponse
from django.urls import reverse

from controlplane.access import SystemPrincipal
from controlplane.errors import DomainError, json_error
from controlplane.parsers import nul_detail, nul_path

from ..choices import DeploymentStatus, WebhookOutcome
from ..gitutil import normalize_repo_url
from ..models import App, Stage, WebhookDelivery
from ..services.deployments import create_deployment
from .providers import MalformedPayload, NulInPayload, Provider, Push

logger = logging.getLogger("controlplane.webhooks")


class PayloadTooLarge(DomainError):
    code = "request_too_large"
    status_code = 413


class Unverified(DomainError):
    """Missing or wrong signature/token. One detail for every case, so a caller learns nothing
    about which apps exist or which part was wrong."""

    code = "invalid_signature"
    status_code = 401


UNVERIFIED_DETAIL = "The delivery could not be verified."


@dataclass
class Answer:
    """What the webhook answers: an HTTP status, a stable code, a sentence, and per stage what
    happened (``deployments``)."""

    status: int
    code: str
    detail: str
    outcome: str = ""
    deployments: list[dict] = field(default_factory=list)

    def response(self) -> JsonResponse:
        body = {"code": self.code, "detail": self.detail}
        if self.outcome:
            body["outcome"] = self.outcome
        body["deployments"] = self.deployments
        return JsonResponse(body, status=self.status)


def receive(provider: Provider, request: HttpRequest) -> JsonResponse:
    """Handle one delivery of ``provider`` and answer it (never raises for bad input): 413 over
    ``WEBHOOK_MAX_BODY``, 401 unverified, 400 malformed JSON, 202 ignored/duplicate/accepted/pinned,
    200 for a ping."""
    try:
        return _receive(provider, request).response()
    except DomainError as err:
        return json_error(err.code, err.detail, err.status_code, fields=err.fields)


def _receive(provider: Provider, request: HttpRequest) -> Answer:
    body = read_body(request)
    if not provider.has_credentials(request.headers):
        raise Unverified(UNVERIFIED_DETAIL)
    payload = parse_payload(body, content_type=request.content_type or "")

    candidates = candidate_apps(provider.repo_urls(payload))
    if not candidates:
        return Answer(202, "ignored", "No app is connected to this repository.", WebhookOutcome.IGNORED)
    # Every candidate's secret is tried (each an HMAC over the raw bytes), so the answer takes as long
    # whichever one matches.
    verified = [
        app
        for app in candidates
        if provider.verify(secret=app.webhook_secret, headers=request.headers, body=body)
    ]
    if not verified:
        logger.warning(
            "%s delivery for %d candidate app(s) failed verification", provider.name, len(candidates)
        )
        raise Unverified(UNVERIFIED_DETAIL)

    # A NUL in any field (ref, sha, names, messages) is refused whole: stripping it would deploy
    # another ref than the one sent ('refs/heads/ma\0in' became 'main').
    nul_at = nul_path(payload)
    if nul_at is not None:
        raise NulInPayload(
            nul_detail(nul_at, what="The payload"), fields={nul_at[:200]: ["NUL is not allowed."]}
        )
    event = provider.event(request.headers)
    push = provider.push(payload) if event in provider.push_events else None
    delivery_id = provider.delivery_id(request.headers) or "sha256:" + hashlib.sha256(body).hexdigest()
    with transaction.atomic():
        try:
            with transaction.atomic():
                delivery = WebhookDelivery.objects.create(
                    provider=provider.name, delivery_id=delivery_id, event=event[:50], app=verified[0]
                )
        except IntegrityError:
            return Answer(
                202, "duplicate", f"Delivery {delivery_id} was received before; nothing was done again.",
                WebhookOutcome.IGNORED,
            )  # fmt: skip
        if event in provider.ping_events:
            answer = Answer(
                200, "pong", f"The webhook is set up for {_names(verified)}.", WebhookOutcome.IGNORED
            )
        elif push is None:
            answer = Answer(
                202, "ignored", f"'{event or 'unknown'}' events are not acted on; only pushes are.",
                WebhookOutcome.IGNORED,
            )  # fmt: skip
        else:
            answer = deploy_push(provider=provider, apps=verified, push=push, request=request)
        delivery.outcome = answer.outcome
        delivery.detail = answer.detail[:500]
        delivery.save(update_fields=["outcome", "detail"])
        ids = [d["deployment"] for d in answer.deployments if d.get("deployment")]
        if ids:
            delivery.deployments.add(*ids)
    return answer


def parse_payload(body: bytes, *, content_type: str) -> dict:
    """The JSON object in ``body``: the body itself, or the ``payload`` field of a form (GitHub's
    default content type). Raises MalformedPayload."""
    text: str | bytes = body
    if content_type == "application/x-www-form-urlencoded":
        try:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError):
            form = {}
        if not form.get("payload"):
            raise MalformedPayload("The form has no 'payload' field.")
        text = form["payload"][0]
    try:
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError):
        raise MalformedPayload("The body is not valid JSON.")
    except RecursionError:  # arrays nested thousands deep: valid JSON, but not a push
        raise MalformedPayload("The body is nested too deeply.")
    if not isinstance(payload, dict):
        raise MalformedPayload("The body is not a JSON object.")
    return payload


def read_body(request: HttpRequest) -> bytes:
    """The raw body, read no further than ``WEBHOOK_MAX_BODY`` bytes. Raises PayloadTooLarge."""
    limit = settings.WEBHOOK_MAX_BODY
    too_large = PayloadTooLarge(f"The body is over {limit // (1024 * 1024)} MB.")
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise too_large
    body = request.read(limit + 1)
    if len(body) > limit:
        raise too_large
    return body


def candidate_apps(urls: list[str]) -> list[App]:
    """Apps whose ``repo_url`` names the same repository as one of ``urls`` (compared normalized:
    https, ssh and web URLs of one repository are equal)."""
    wanted = {normalize_repo_url(u) for u in urls[:20] if isinstance(u, str)} - {""}
    if not wanted:
        return []
    # A cheap filter in the database on the repository's name, then the exact comparison here.
    names = Q()
    for name in {w.rsplit("/", 1)[-1] for w in wanted}:
        names |= Q(repo_url__icontains=name)
    apps = App.objects.exclude(repo_url="").filter(names).select_related("team").order_by("pk")
    return [app for app in apps if normalize_repo_url(app.repo_url) in wanted]


def stage_follows(pattern: str, push: Push) -> bool:
    """True when a stage whose ``branch`` is ``pattern`` deploys ``push``: a branch name
    (``main``), a glob over branch names (``release/*``) or, to deploy tags, a glob over full refs
    (``refs/tags/v*``). Git forbids ``*?[`` in ref names, so a plain name matches only itself."""
    pattern = (pattern or "").strip()
    if not pattern:
        return False
    if pattern.startswith("refs/"):
        return fnmatchcase(push.ref, pattern)
    return push.branch is not None and fnmatchcase(push.branch, pattern)


def deploy_push(
    *, provider: Provider, apps: list[App], push: Push, request: HttpRequest | None = None
) -> Answer:
    """Start a deployment of ``push.after`` for every stage of ``apps`` that follows the pushed ref;
    returns the answer listing them (ignored with the reason when none does)."""
    if push.deleted:
        what = f"Tag '{push.tag}'" if push.tag is not None else f"Branch '{push.short_ref}'"
        return Answer(
            202, "ignored", f"{what} was deleted; a deletion deploys nothing.", WebhookOutcome.IGNORED
        )
    if push.branch is None and push.tag is None:
        return Answer(
            202, "ignored", f"{push.ref} is neither a branch nor a tag.", WebhookOutcome.IGNORED
        )  # fmt: skip
    matched = [
        (app, stage)
        for app in apps
        for stage in Stage.objects.filter(app=app).order_by("name")
        if stage_follows(stage.branch, push)
    ]
    if not matched:
        if push.tag is not None:
            reason = (
                f"Tag '{push.tag}' was pushed; tags deploy nothing unless a stage's branch is set to a "
                "pattern such as refs/tags/v*."
            )
        else:
            reason = f"No stage of {_names(apps)} deploys branch '{push.branch}'."
        return Answer(202, "ignored", reason, WebhookOutcome.IGNORED)

    trigger = f"webhook:{provider.name}"
    commit = {**push.head, "branch": push.short_ref}
    results = []
    for app, stage in matched:
        item = {"app": app.slug, "team": app.team.slug, "stage": stage.name}
        try:
            with transaction.atomic():
                deployment = create_deployment(
                    app=app,
                    stage=stage,
                    principal=SystemPrincipal(name=trigger, team_id=app.team_id),
                    ref=push.after,
                    commit=commit,
                    trigger=trigger,
                    compare_url=push.compare_url,
                    commit_count=push.commit_count,
                )
        except DomainError as err:
            results.append({**item, "outcome": "failed", "code": err.code, "detail": err.detail})
            continue
        pinned = deployment.status == DeploymentStatus.CANCELLED
        if pinned:
            extra = {"detail": f"Stage '{stage.name}' is pinned: the push was recorded, nothing started."}
        elif getattr(deployment, "reused", False):
            extra = {
                "detail": f"Deployment {deployment.pk} already ships {push.after[:7]} to this stage; "
                "no second one was started."
            }
        else:
            extra = {}
        results.append(
            {
                **item,
                "outcome": WebhookOutcome.PINNED.value if pinned else "queued",
                "deployment": deployment.pk,
                "url": _absolute(request, reverse("deployment-detail", args=[deployment.pk])),
                **extra,
            }
        )
    queued = [r for r in results if r["outcome"] == "queued"]
    pinned = [r for r in results if r["outcome"] == WebhookOutcome.PINNED]
    sha = push.after[:7]
    if queued:
        detail = f"Deploying {sha} to " + ", ".join(f"{r['app']}/{r['stage']}" for r in queued) + "."
        if pinned:
            detail += " Pinned, not started: " + ", ".join(f"{r['app']}/{r['stage']}" for r in pinned) + "."
        return Answer(202, "accepted", detail, WebhookOutcome.ACCEPTED, results)
    if pinned:
        detail = (
            f"{sha} was recorded but not started: "
            + ", ".join(f"{r['app']}/{r['stage']}" for r in pinned)
            + (" is" if len(pinned) == 1 else " are")
            + " pinned."
        )
        return Answer(202, "pinned", detail, WebhookOutcome.PINNED, results)
    detail = "Nothing was deployed: " + "; ".join(f"{r['app']}/{r['stage']}: {r['detail']}" for r in results)
    return Answer(202, "ignored", detail, WebhookOutcome.IGNORED, results)


def _names(apps: list[App]) -> str:
    return ", ".join(f"'{app.slug}'" for app in apps)


def _absolute(request: HttpRequest | None, path: str) -> str:
    return request.build_absolute_uri(path) if request is not None else path
