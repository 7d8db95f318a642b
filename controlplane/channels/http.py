"""POSTing to a receiver over HTTP(S) through the URL-safety transport, with the answer sorted
into delivered, worth retrying, or permanent."""

from __future__ import annotations

import httpx
from django.conf import settings

from controlplane import urlsafety
from controlplane.urlsafety import UnsafeURL

from .base import Delivered, PermanentError, TargetGone, TransientError

RETRY_STATUSES = frozenset({408, 425, 429})


def post(url: str, *, content: bytes, headers: dict[str, str], gone_statuses: frozenset[int]) -> Delivered:
    """POST ``content`` to ``url``. Returns Delivered for a 2xx. Raises TransientError (timeouts,
    connection failures, 5xx, 429), TargetGone (a status in ``gone_statuses``, or a URL that now
    leads somewhere refused) or PermanentError (any other answer)."""
    try:
        with urlsafety.safe_client(timeout=settings.NOTIFY_TIMEOUT) as client:
            response = client.post(url, content=content, headers=headers)
    except UnsafeURL as exc:
        if "Cannot resolve" in exc.detail:
            raise TransientError(exc.detail)
        raise TargetGone(f"Refused: {exc.detail}")
    except httpx.TimeoutException:
        raise TransientError(f"Timed out after {settings.NOTIFY_TIMEOUT:g}s.")
    except httpx.TransportError as exc:
        raise TransientError(f"Connection failed: {exc or type(exc).__name__}.")
    code = response.status_code
    if 200 <= code < 300:
        return Delivered(response_code=code)
    detail = f"HTTP {code}: {response.text[:200].strip() or response.reason_phrase}"
    if code >= 500 or code in RETRY_STATUSES:
        raise TransientError(detail, response_code=code)
    if code in gone_statuses:
        raise TargetGone(detail, response_code=code)
    raise PermanentError(detail, response_code=code)
