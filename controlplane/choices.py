from django.db import models


class Role(models.TextChoices):
    """A member's or token's power in a team; each includes the ones before it."""

    VIEWER = "viewer"  # reads everything of the team
    DEPLOYER = "deployer"  # also deploys, rolls back, promotes, edits env vars and stages
    ADMIN = "admin"  # also manages the team, its apps, tokens, regions and channels


ROLE_RANK = {Role.VIEWER: 1, Role.DEPLOYER: 2, Role.ADMIN: 3}


class ChannelKind(models.TextChoices):
    SLACK = "slack"  # Slack incoming webhook URL
    EMAIL = "email"  # an email address
    SMS = "sms"  # an E.164 phone number, sent through Amazon SNS
    WEBHOOK = "webhook"  # any HTTPS URL; JSON body signed with HMAC-SHA256


class AlertEvent(models.TextChoices):
    HEALTH_DOWN = "health_down"  # a region of a stage went down (incident opened)
    HEALTH_UP = "health_up"  # it recovered (incident closed)
    DEPLOY_STARTED = "deploy_started"
    DEPLOY_SUCCEEDED = "deploy_succeeded"
    DEPLOY_FAILED = "deploy_failed"  # failed or partially failed
    ROLLBACK = "rollback"  # a rollback deployment, manual or by policy
    TEST = "test"  # a test message sent from the API


class NotificationStatus(models.TextChoices):
    PENDING = "pending"  # queued, not yet attempted (or waiting for a retry)
    SENT = "sent"  # the receiver accepted it
    FAILED = "failed"  # gave up: permanent error or out of tries


ACTIVE_NOTIFICATION_STATUSES = (NotificationStatus.PENDING,)
TERMINAL_NOTIFICATION_STATUSES = (NotificationStatus.SENT, NotificationStatus.FAILED)
