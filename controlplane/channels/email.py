"""Email: a plain-text and an HTML part through Django's email (SMTP in production)."""

from __future__ import annotations

import smtplib

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives, get_connection
from django.core.validators import validate_email
from django.template.loader import render_to_string

from .base import (
    ChannelBackend,
    Delivered,
    InvalidTarget,
    Message,
    PermanentError,
    TargetGone,
    TransientError,
)


class EmailBackend(ChannelBackend):
    kind = "email"

    def validate_target(self, target: str) -> str:
        address = (target or "").strip()
        try:
            validate_email(address)
        except ValidationError:
            raise InvalidTarget("Enter one valid email address.")
        local, _, domain = address.rpartition("@")
        return f"{local}@{domain.lower()}"

    def mask(self, target: str) -> str:
        local, _, domain = target.rpartition("@")
        return f"{local[:1]}…@{domain}" if local else "…"

    def send(self, *, channel, message: Message, delivery_id: int) -> Delivered:
        context = {"message": message, "fields": list(message.fields.items())}
        email = EmailMultiAlternatives(
            subject=f"[controlplane] {message.title}"[:200],
            body=render_to_string("controlplane/email/alert.txt", context),
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[channel.target],
            headers={"X-Controlplane-Event": message.event, "X-Controlplane-Delivery": str(delivery_id)},
            connection=get_connection(fail_silently=False, timeout=settings.NOTIFY_TIMEOUT),
        )
        email.attach_alternative(render_to_string("controlplane/email/alert.html", context), "text/html")
        try:
            email.send()
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            reason = "; ".join(f"{c} {m.decode(errors='replace')}" for c, m in exc.recipients.values())
            if codes and all(c >= 500 for c in codes):
                raise TargetGone(f"The mail server refused the address: {reason}", response_code=codes[0])
            raise TransientError(f"The mail server deferred the address: {reason}", response_code=codes[0])
        except smtplib.SMTPResponseException as exc:
            said = exc.smtp_error
            detail = (
                f"SMTP {exc.smtp_code}: {said.decode(errors='replace') if isinstance(said, bytes) else said}"
            )
            if exc.smtp_code >= 500:
                raise PermanentError(detail, response_code=exc.smtp_code)
            raise TransientError(detail, response_code=exc.smtp_code)
        except (smtplib.SMTPException, OSError) as exc:  # OSError covers timeouts
            raise TransientError(f"Cannot reach the mail server: {exc or type(exc).__name__}.")
        return Delivered(response_code=250)
