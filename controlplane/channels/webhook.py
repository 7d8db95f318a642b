"""Generic webhooks: the message as JSON, signed with the channel's secret.

Headers: ``X-Controlplane-Event``, ``X-Controlplane-Delivery`` (the same on every retry of one
delivery, so a receiver can drop repeats), ``X-Controlplane-Timestamp`` (Unix seconds) and
``X-Controlplane-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``. A receiver
recomputes the HMAC and refuses old timestamps, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time

from django.utils import timezone

from controlplane import urlsafety
from controlplane.urlsafety import UnsafeURL

from .base import ChannelBackend, Delivered, InvalidTarget, Message, mask_url
from .http import post

GONE_STATUSES = frozenset({404, 410})


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str, body: bytes, signature: str, *, tolerance: float = 300) -> bool:
    """True when ``signature`` is ours for ``body`` and ``timestamp`` is recent (receivers' side)."""
    try:
        fresh = abs(time.time() - int(timestamp)) <= tolerance
    except ValueError:
        return False
    return fresh and hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookBackend(ChannelBackend):
    kind = "webhook"

    def new_signing_secret(self) -> str:
        return "whsec_" + secrets.token_urlsafe(32)

    def validate_target(self, target: str) -> str:
        url = (target or "").strip()
        try:
            urlsafety.check_url(url)
        except UnsafeURL as exc:
            raise InvalidTarget(exc.detail)
        return url

    def mask(self, target: str) -> str:
        return mask_url(target)

    def send(self, *, channel, message: Message, delivery_id: int) -> Delivered:
        body = json.dumps(
            {
                "event": message.event,
                "delivery_id": delivery_id,
                "title": message.title,
                "text": message.text,
                "url": message.url,
                "severity": message.severity,
                "fields": message.fields,
                "data": message.data,
                "sent_at": timezone.now().isoformat(),
            },
            separators=(",", ":"),
        ).encode()
        timestamp = str(int(time.time()))
        return post(
            channel.target,
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Controlplane-Event": message.event,
                "X-Controlplane-Delivery": str(delivery_id),
                "X-Controlplane-Timestamp": timestamp,
                "X-Controlplane-Signature": sign(channel.signing_secret, timestamp, body),
            },
            gone_statuses=GONE_STATUSES,
        )
