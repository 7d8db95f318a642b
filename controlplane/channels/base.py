"""The one small interface every channel kind implements, and the message they all render."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar


@dataclass
class Message:
    """What an alert says, independent of where it goes. Stored as a notification's payload, so
    it must never hold a secret."""

    event: str
    title: str  # one line: "acme/api production is DOWN in eu-west-1"
    text: str  # a few sentences: what happened, since when, why
    url: str = ""  # where to look
    fields: dict[str, str] = field(default_factory=dict)  # App, Stage, Region, ... in order
    severity: str = "info"  # "danger", "warning", "good", "info"
    data: dict[str, Any] = field(default_factory=dict)  # machine-readable, for webhooks

    def to_payload(self) -> dict:
        return asdict(self)

    @classmethod
    def from_payload(cls, payload: dict) -> Message:
        known = {k: payload[k] for k in cls.__dataclass_fields__ if k in payload}
        return cls(**known)


@dataclass(frozen=True)
class Delivered:
    """The receiver accepted the message."""

    response_code: int | None = None
    detail: str = ""  # e.g. the SNS message id


class DeliveryError(Exception):
    """A delivery failed. ``response_code`` is the receiver's answer, when there was one."""

    transient = False
    disables_channel = False

    def __init__(self, detail: str, *, response_code: int | None = None):
        super().__init__(detail)
        self.detail = detail
        self.response_code = response_code


class TransientError(DeliveryError):
    """Worth trying again later: a timeout, a refused connection, a 5xx, throttling."""

    transient = True


class PermanentError(DeliveryError):
    """Trying again will not help, but the channel itself may be fine (a rejected payload)."""


class TargetGone(PermanentError):
    """The target no longer exists or refuses us for good (Slack 404/410, an invalid address):
    the channel is disabled with this error as the reason."""

    disables_channel = True


class InvalidTarget(ValueError):
    """A channel target is not acceptable for its kind; the message says why."""


class ChannelBackend:
    """How one kind of channel validates, masks and sends. Subclasses set ``kind`` and implement
    the three methods; they are found through ``settings.CHANNEL_BACKENDS``."""

    kind: ClassVar[str] = ""

    def new_signing_secret(self) -> str:
        """A fresh secret to sign deliveries with, or ``""`` for kinds that sign nothing."""
        return ""

    def validate_target(self, target: str) -> str:
        """The target in canonical form. Raises InvalidTarget."""
        raise NotImplementedError

    def mask(self, target: str) -> str:
        """The target with its secret part hidden, safe to show to anyone who sees the channel."""
        raise NotImplementedError

    def send(self, *, channel, message: Message, delivery_id: int) -> Delivered:
        """Deliver ``message`` to ``channel``. Raises TransientError, PermanentError, TargetGone."""
        raise NotImplementedError


def mask_url(url: str) -> str:
    """``https://hooks.slack.com/…/XXXX``: scheme and host, then the last 4 characters."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    tail = url.rstrip("/")[-4:]
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}/…/{tail}"
