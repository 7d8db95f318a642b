"""SMS through Amazon SNS: one short line and the link, to an E.164 number."""

from __future__ import annotations

import re

from django.conf import settings

from regions.aws import sns

from .base import (
    ChannelBackend,
    Delivered,
    InvalidTarget,
    Message,
    PermanentError,
    TargetGone,
    TransientError,
)

E164 = re.compile(r"^\+[1-9]\d{6,14}$")
MAX_LENGTH = 300  # two SMS segments; longer texts get split and cost more
# SNS codes that mean this number will never receive our texts.
GONE_CODES = frozenset({"InvalidParameter", "InvalidParameterValue", "OptedOut", "OptedOutException"})


class SmsBackend(ChannelBackend):
    kind = "sms"

    def validate_target(self, target: str) -> str:
        number = re.sub(r"[\s().-]", "", target or "")
        if not E164.match(number):
            raise InvalidTarget("Enter the phone number in E.164 form, like +14155550100.")
        return number

    def mask(self, target: str) -> str:
        return f"{target[:2]}{'•' * max(0, len(target) - 6)}{target[-4:]}"

    def send(self, *, channel, message: Message, delivery_id: int) -> Delivered:
        text = message.title if not message.url else f"{message.title} {message.url}"
        try:
            message_id = sns.publish_sms(
                region=settings.SMS_REGION,
                phone_number=channel.target,
                message=text[:MAX_LENGTH],
                sender_id=settings.SMS_SENDER_ID,
            )
        except sns.SmsError as exc:
            if exc.retryable:
                raise TransientError(f"SNS: {exc.code}: {exc.message}")
            if exc.code in GONE_CODES:
                raise TargetGone(f"SNS refused the number: {exc.code}: {exc.message}")
            raise PermanentError(f"SNS: {exc.code}: {exc.message}")
        return Delivered(detail=message_id)
