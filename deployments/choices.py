from django.db import models

# Lambda runtimes AWS accepts for new functions (deprecated ones are refused).
LAMBDA_RUNTIMES = (
    "nodejs20.x",
    "nodejs22.x",
    "nodejs24.x",
    "python3.10",
    "python3.11",
    "python3.12",
    "python3.13",
    "python3.14",
    "java11",
    "java17",
    "java21",
    "java25",
    "dotnet8",
    "dotnet10",
    "ruby3.3",
    "ruby3.4",
    "provided.al2",
    "provided.al2023",
)


class DeploymentKind(models.TextChoices):
    DEPLOY = "deploy"  # a new artifact (uploaded or built from git)
    ROLLBACK = "rollback"  # the stage alias moved back to an earlier release's version
    PROMOTE = "promote"  # another stage's artifact, with this stage's config and env
    CONFIG = "config"  # the current artifact with new env/config
    TEARDOWN = "teardown"  # the stage (or the whole app) taken down in AWS, then deleted


class DeploymentStatus(models.TextChoices):
    QUEUED = "queued"  # recorded, waiting for a worker (or for the app's earlier deploy)
    RUNNING = "running"  # at least one region started
    SUCCEEDED = "succeeded"  # every region succeeded
    FAILED = "failed"  # no region succeeded
    PARTIALLY_FAILED = "partially_failed"  # some regions succeeded, some failed
    ROLLED_BACK = "rolled_back"  # failed regions caused the moved ones to be rolled back
    CANCELLED = "cancelled"  # cancelled before every region finished
    SUPERSEDED = "superseded"  # a newer deployment of the same stage replaced it before it ran


ACTIVE_DEPLOYMENT_STATUSES = (DeploymentStatus.QUEUED, DeploymentStatus.RUNNING)
TERMINAL_DEPLOYMENT_STATUSES = tuple(s for s in DeploymentStatus if s not in ACTIVE_DEPLOYMENT_STATUSES)


class RegionStatus(models.TextChoices):
    QUEUED = "queued"  # waiting for a worker or for the app's previous deploy in this region
    RUNNING = "running"  # a worker holds it
    SUCCEEDED = "succeeded"  # the stage alias points at the release's version and health passed
    FAILED = "failed"  # a step failed; ``error`` says which and why
    ROLLED_BACK = "rolled_back"  # it moved, then was moved back by the failure policy
    CANCELLED = "cancelled"  # cancelled or superseded before it started
    SKIPPED = "skipped"  # not run: an earlier wave failed


ACTIVE_REGION_STATUSES = (RegionStatus.QUEUED, RegionStatus.RUNNING)
TERMINAL_REGION_STATUSES = tuple(s for s in RegionStatus if s not in ACTIVE_REGION_STATUSES)


class EventLevel(models.TextChoices):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class FailurePolicy(models.TextChoices):
    LEAVE = "leave"  # a failed region does not affect the others
    ROLLBACK = "rollback"  # regions that already moved are moved back


class ArtifactSource(models.TextChoices):
    UPLOAD = "upload"
    BUILD = "build"


class WebhookOutcome(models.TextChoices):
    ACCEPTED = "accepted"  # deployments were created
    IGNORED = "ignored"  # valid, but nothing to do (unknown repo, unmapped branch, tag, ...)
    PINNED = "pinned"  # recorded; the stage is pinned so nothing started


class GitHostProvider(models.TextChoices):
    GITHUB = "github"
    GITLAB = "gitlab"


class GitHostPostStatus(models.TextChoices):
    PENDING = "pending"  # not yet posted (or waiting for a retry)
    SENT = "sent"  # the git host accepted it
    FAILED = "failed"  # gave up: a permanent error, or out of tries
    SKIPPED = "skipped"  # nothing to post (no commit sha; the host has no such state)
