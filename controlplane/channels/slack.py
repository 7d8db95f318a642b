"""Slack incoming webhooks: a Block Kit message (what happened, app, stage, region, a link)."""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from django.conf import settings

from controlplane import urlsafety
from controlplane.urlsafety import UnsafeURL

from .base import ChannelBackend, Delivered, InvalidTarget, Message, mask_url
from .http import post

SLACK_HOSTS = ("hooks.slack.com", "hooks.slack-gov.com")
# Slack answers 404 no_service / 410 channel_is_archived / 403 action_prohibited for a webhook
# that will never work again.
GONE_STATUSES = frozenset({403, 404, 410})
EMOJI = {
    "danger": ":red_circle:",
    "good": ":large_green_circle:",
    "warning": ":warning:",
    "info": ":information_source:",
}


def blocks(message: Message) -> list[dict]:
    """The Block Kit blocks of ``message``."""
    out: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": message.title[:150], "emoji": True}},
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": f"{EMOJI.get(message.severity, '')} {message.text}"[:3000]},
        },
    ]
    if message.fields:
        out.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": f"*{name}*\n{value}"[:2000]}
                    for name, value in list(message.fields.items())[:10]
                ],
            }
        )
    if message.url:
        out.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open in controlplane"},
                        "url": message.url[:3000],
                    }
                ],
            }
        )
    return out


class SlackBackend(ChannelBackend):
    kind = "slack"

    def validate_target(self, target: str) -> str:
        url = (target or "").strip()
        parts = urlsplit(url)
        if parts.scheme != "https" and not settings.ALLOW_HTTP_URLS:
            raise InvalidTarget("A Slack webhook URL starts with https://.")
        if not settings.ALLOW_PRIVATE_URLS and (parts.hostname or "") not in SLACK_HOSTS:
            raise InvalidTarget("A Slack incoming webhook URL is on hooks.slack.com.")
        try:
            urlsafety.check_url(url)
        except UnsafeURL as exc:
            raise InvalidTarget(exc.detail)
        return url

    def mask(self, target: str) -> str:
        return mask_url(target)

    def send(self, *, channel, message: Message, delivery_id: int) -> Delivered:
        body = {"text": f"{message.title}\n{message.text}", "blocks": blocks(message)}
        return post(
            channel.target,
            content=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            gone_statuses=GONE_STATUSES,
        )
