"""What differs between git hosts: how a delivery proves who sent it, which header names the event
and the delivery, and where a push payload keeps the repository, the ref and the commits.

Payload formats: https://docs.github.com/en/webhooks/webhook-events-and-payloads#push and
https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

from controlplane.errors import DomainError

HEX_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
ZERO_SHA = re.compile(r"^0+$")
MAX_TEXT = 10_000  # longer strings in a payload are cut (a commit message pasted from a log)
MAX_COUNT = 2**31 - 1  # what a PositiveIntegerField holds on every database


class MalformedPayload(DomainError):
    code = "malformed_payload"
    status_code = 400


class NulInPayload(DomainError):
    """A field of the payload holds a NUL character (see the service: refused, never stripped)."""

    code = "invalid_characters"
    status_code = 400


@dataclass
class Push:
    """A push, in one shape for every git host."""

    ref: str  # refs/heads/main, refs/tags/v1.2
    before: str
    after: str  # the commit the ref now points at ("" when deleted)
    deleted: bool
    head: dict = field(default_factory=dict)  # {"sha", "message", "author", "url"}
    commit_count: int | None = None
    compare_url: str = ""

    @property
    def branch(self) -> str | None:
        return self.ref.removeprefix("refs/heads/") if self.ref.startswith("refs/heads/") else None

    @property
    def tag(self) -> str | None:
        return self.ref.removeprefix("refs/tags/") if self.ref.startswith("refs/tags/") else None

    @property
    def short_ref(self) -> str:
        return self.branch or self.tag or self.ref


def dig(data: Any, *path: str, kind: type = str) -> Any:
    """``data[path[0]][path[1]]...`` when every step exists and the value is a ``kind``, else None:
    a verified payload may still lack fields, and a missing one must never become a 500. A string
    comes back storable (see ``clean_text``); an int outside 0..MAX_COUNT counts as missing."""
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    if not isinstance(data, kind) or (kind is int and isinstance(data, bool)):
        return None
    if isinstance(data, str):
        return clean_text(data)
    if isinstance(data, int) and not 0 <= data <= MAX_COUNT:
        return None
    return data


def clean_text(text: str) -> str:
    """``text`` cut to MAX_TEXT, without NUL characters (PostgreSQL refuses them) and with lone
    surrogates (valid JSON escapes, but not encodable as UTF-8) replaced by ``?``."""
    text = text[:MAX_TEXT]
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "")


def _text(data: Any, *path: str) -> str:
    return dig(data, *path) or ""


class Provider:
    name = ""
    event_header = ""
    delivery_header = ""
    push_events: tuple[str, ...] = ()
    ping_events: tuple[str, ...] = ()

    def has_credentials(self, headers) -> bool:
        raise NotImplementedError

    def verify(self, *, secret: str, headers, body: bytes) -> bool:
        """True when the delivery was sent by someone holding ``secret``."""
        raise NotImplementedError

    def repo_urls(self, payload: dict) -> list[str]:
        """Every URL the payload gives for its repository (clone, ssh, web)."""
        raise NotImplementedError

    def push(self, payload: dict) -> Push:
        """The push in ``payload``. Raises MalformedPayload when its ref or commit is missing."""
        raise NotImplementedError

    def event(self, headers) -> str:
        return (headers.get(self.event_header) or "").strip()

    def delivery_id(self, headers) -> str:
        return (headers.get(self.delivery_header) or "").strip()[:100]


def _equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8", "replace"), b.encode("utf-8", "replace"))


def _ref_and_shas(payload: dict) -> tuple[str, str, str]:
    ref, before, after = (
        _text(payload, "ref"),
        _text(payload, "before").lower(),
        _text(payload, "after").lower(),
    )
    if not ref.startswith("refs/"):
        raise MalformedPayload("The push has no 'ref' (refs/heads/<branch> or refs/tags/<tag>).")
    if not HEX_SHA.match(after):
        raise MalformedPayload("The push has no 'after' commit sha.")
    return ref, before, after


class GitHub(Provider):
    name = "github"
    event_header = "X-GitHub-Event"
    delivery_header = "X-GitHub-Delivery"
    push_events = ("push",)
    ping_events = ("ping",)

    def has_credentials(self, headers) -> bool:
        return bool((headers.get("X-Hub-Signature-256") or "").strip())

    def verify(self, *, secret: str, headers, body: bytes) -> bool:
        signature = (headers.get("X-Hub-Signature-256") or "").strip()
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return bool(secret) and _equal(signature.lower(), expected)

    def repo_urls(self, payload: dict) -> list[str]:
        keys = ("clone_url", "ssh_url", "git_url", "html_url", "url", "svn_url")
        return [u for u in (dig(payload, "repository", k) for k in keys) if u]

    def push(self, payload: dict) -> Push:
        ref, before, after = _ref_and_shas(payload)
        deleted = bool(dig(payload, "deleted", kind=bool)) or bool(ZERO_SHA.match(after))
        head = dig(payload, "head_commit", kind=dict) or {}
        commits = dig(payload, "commits", kind=list)
        author = head.get("author") if isinstance(head.get("author"), dict) else {}
        return Push(
            ref=ref,
            before=before,
            after="" if deleted else after,
            deleted=deleted,
            head={
                "sha": after,
                "message": _text(head, "message"),
                "author": _text(author, "name") or _text(author, "username") or _text(author, "email"),
                "url": _text(head, "url"),
            },
            commit_count=len(commits) if commits is not None else None,
            compare_url=_text(payload, "compare"),
        )


class GitLab(Provider):
    name = "gitlab"
    event_header = "X-Gitlab-Event"
    delivery_header = "X-Gitlab-Event-UUID"
    push_events = ("Push Hook", "Tag Push Hook")

    def has_credentials(self, headers) -> bool:
        return bool(headers.get("X-Gitlab-Token") or "")

    def verify(self, *, secret: str, headers, body: bytes) -> bool:
        return bool(secret) and _equal(headers.get("X-Gitlab-Token") or "", secret)

    def repo_urls(self, payload: dict) -> list[str]:
        project = ("git_http_url", "git_ssh_url", "web_url", "http_url", "ssh_url", "url", "homepage")
        repository = ("git_http_url", "git_ssh_url", "url", "homepage")
        urls = [dig(payload, "project", k) for k in project] + [
            dig(payload, "repository", k) for k in repository
        ]
        return [u for u in urls if u]

    def push(self, payload: dict) -> Push:
        ref, before, after = _ref_and_shas(payload)
        deleted = bool(ZERO_SHA.match(after))
        commits = [c for c in dig(payload, "commits", kind=list) or [] if isinstance(c, dict)]
        # The payload lists the pushed commits oldest first; the head is the one the ref points at.
        head = next((c for c in commits if _text(c, "id").lower() == after), commits[-1] if commits else {})
        web_url = _text(payload, "project", "web_url").rstrip("/")
        compare = ""
        if web_url and HEX_SHA.match(before) and not ZERO_SHA.match(before) and not deleted:
            compare = f"{web_url}/-/compare/{before}...{after}"
        count = dig(payload, "total_commits_count", kind=int)
        return Push(
            ref=ref,
            before=before,
            after="" if deleted else after,
            deleted=deleted,
            head={
                "sha": after,
                "message": _text(head, "message"),
                "author": _text(head, "author", "name") or _text(payload, "user_name"),
                "url": _text(head, "url"),
            },
            commit_count=count if count is not None else len(commits),
            compare_url=compare,
        )


GITHUB = GitHub()
GITLAB = GitLab()
