from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone

from .choices import (
    ROLE_RANK,
    AlertEvent,
    ChannelKind,
    NotificationStatus,
    Role,
)
from .crypto import EncryptedTextField

TOKEN_PREFIX = "cp_"  # noqa: S105 - a marker, not a secret


class Team(models.Model):
    """Who owns apps. Everything a user or token can see hangs off one team."""

    slug = models.SlugField(max_length=63, unique=True)
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.slug


class Membership(models.Model):
    """A user's role in a team."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.VIEWER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class ApiTokenQuerySet(models.QuerySet):
    def active(self):
        now = timezone.now()
        return self.filter(revoked_at__isnull=True).filter(
            models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now)
        )


class ApiToken(models.Model):
    """A team's credential for CI. Only a SHA-256 of the token is stored; the prefix is visible.

    Scope: the whole team, or one app (``app``); ``stages`` optionally limits which stages it
    may deploy or change (empty list: all).
    """

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, db_index=True, editable=False)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.DEPLOYER)
    app = models.ForeignKey(
        "deployments.App", null=True, blank=True, on_delete=models.CASCADE, related_name="tokens"
    )
    stages = models.JSONField(default=list, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    objects = ApiTokenQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @staticmethod
    def hash(raw: str) -> str:
        return hashlib.sha256(raw.encode()).hexdigest()

    @staticmethod
    def generate() -> str:
        """A new raw token: a fixed marker (so secret scanners can spot it) and 40 random chars."""
        return TOKEN_PREFIX + secrets.token_urlsafe(30)

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > timezone.now())

    def allows_role(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]


class AuditEntry(models.Model):
    """Who did what to which object, when, from where. Env var changes record keys, never values."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="audit_entries")
    actor = models.CharField(max_length=200)  # "user:alice", "token:ci (cp_ab12)", "webhook:github"
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    token = models.ForeignKey(ApiToken, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The app the object belongs to, so an app-scoped token sees only its app's entries.
    app = models.ForeignKey(
        "deployments.App", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    action = models.CharField(max_length=64)  # "app.create", "env.update", "deployment.create", ...
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    changes = models.JSONField(default=dict, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["team", "-created_at"])]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.actor} {self.action} {self.object_repr}"


class ChannelQuerySet(models.QuerySet):
    def visible_to(self, principal):
        """Channels of the principal's teams (see ``controlplane.access``); others are a 404. A
        token scoped to one app sees only the channels that cover that app: those for all apps
        and those listing it."""
        qs = self.filter(team_id__in=principal.team_ids())
        app_id = getattr(principal.token, "app_id", None)
        if app_id:
            # One join row at most matches (no apps, or the link to this app): no duplicates.
            qs = qs.filter(models.Q(apps=None) | models.Q(apps=app_id))
        return qs


class Channel(models.Model):
    """Where a team's alerts go. ``target`` (a Slack/webhook URL, an address, a phone number) is
    encrypted at rest because Slack and webhook URLs are credentials."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="channels")
    kind = models.CharField(max_length=16, choices=ChannelKind.choices)
    name = models.CharField(max_length=100, blank=True)
    target = EncryptedTextField()
    signing_secret = EncryptedTextField(blank=True, default="")  # webhook channels: HMAC key
    events = models.JSONField(default=list)  # AlertEvent values; empty: none
    apps = models.ManyToManyField("deployments.App", blank=True, related_name="channels")  # empty: all
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    objects = ChannelQuerySet.as_manager()

    def __str__(self) -> str:
        return f"{self.kind}: {self.name or self.pk}"


class Notification(models.Model):
    """One delivery of one alert to one channel; ``attempts`` counts tries."""

    channel = models.ForeignKey(Channel, on_delete=models.CASCADE, related_name="notifications")
    event = models.CharField(max_length=32, choices=AlertEvent.choices)
    app = models.ForeignKey("deployments.App", null=True, blank=True, on_delete=models.CASCADE)
    deployment = models.ForeignKey("deployments.Deployment", null=True, blank=True, on_delete=models.CASCADE)
    incident = models.ForeignKey("regions.Incident", null=True, blank=True, on_delete=models.CASCADE)
    payload = models.JSONField(default=dict)  # what the message says; never a secret
    status = models.CharField(
        max_length=16, choices=NotificationStatus.choices, default=NotificationStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    # When a pending delivery is due (its next try); the sweeper re-enqueues rows long past it.
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]


class NotificationAttempt(models.Model):
    """One try at delivering a notification: what the receiver answered, or why it failed."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()  # 1 for the first try
    status = models.CharField(max_length=16, choices=NotificationStatus.choices)  # the row's after
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["notification", "number"]
        constraints = [
            models.UniqueConstraint(fields=["notification", "number"], name="one_attempt_per_number")
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of notification {self.notification_id}: {self.status}"
