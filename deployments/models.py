from __future__ import annotations

import secrets

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.utils import timezone

from controlplane.crypto import EncryptedTextField

from .choices import (
    LAMBDA_RUNTIMES,
    ArtifactSource,
    DeploymentKind,
    DeploymentStatus,
    EventLevel,
    GitHostPostStatus,
    GitHostProvider,
    RegionStatus,
    WebhookOutcome,
)
from .gitutil import repo_url_problem

slug_validator = RegexValidator(
    r"^[a-z][a-z0-9-]{0,39}$",
    "Use 1–40 lowercase letters, digits and dashes, starting with a letter.",
)
stage_name_validator = RegexValidator(
    r"^[a-zA-Z][a-zA-Z0-9_]{0,63}$",
    "A stage name is a letter, then up to 63 letters, digits or underscores (a Lambda alias name).",
)


def validate_repo_url(value: str) -> None:
    """The model-level check of App.repo_url (the Django admin's forms run it); the services run the
    same rule and answer 400 invalid_repo_url."""
    problem = repo_url_problem(value)
    if problem:
        raise ValidationError(problem, code="invalid_repo_url")


def generate_webhook_secret() -> str:
    return secrets.token_urlsafe(32)


class AppQuerySet(models.QuerySet):
    def visible_to(self, principal):
        """Apps the principal (see ``controlplane.access``) may see; everything else is a 404."""
        return principal.filter_apps(self)


class App(models.Model):
    """One deployable service, placed in one or more regions."""

    team = models.ForeignKey("controlplane.Team", on_delete=models.CASCADE, related_name="apps")
    slug = models.CharField(max_length=40, validators=[slug_validator])
    name = models.CharField(max_length=200, blank=True)
    repo_url = models.CharField(max_length=500, blank=True, validators=[validate_repo_url])
    runtime = models.CharField(max_length=32, choices=[(r, r) for r in LAMBDA_RUNTIMES])
    handler = models.CharField(max_length=128, default="app.handler")
    memory_mb = models.PositiveIntegerField(
        default=256, validators=[MinValueValidator(128), MaxValueValidator(10240)]
    )
    timeout_s = models.PositiveIntegerField(
        default=30, validators=[MinValueValidator(1), MaxValueValidator(900)]
    )
    health_path = models.CharField(max_length=200, default="/health")
    health_expected_status = models.PositiveSmallIntegerField(default=200)
    health_expected_text = models.CharField(max_length=255, blank=True)
    build_command = models.CharField(max_length=1000, blank=True)
    build_output_dir = models.CharField(max_length=200, blank=True)  # zipped after the build; "" = repo root
    # Whether the build sandbox may reach public addresses (through its proxy) to fetch dependencies.
    build_network = models.BooleanField(default=True)
    webhook_secret = EncryptedTextField(default=generate_webhook_secret)
    git_credential = EncryptedTextField(blank=True, default="")  # deploy token for private repos
    created_at = models.DateTimeField(default=timezone.now)

    objects = AppQuerySet.as_manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["team", "slug"], name="app_slug_unique_per_team")]
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def function_name(self) -> str:
        """The Lambda function's name in every region (team-qualified: one account, many teams)."""
        return f"{self.team.slug}-{self.slug}"[:64]


class Stage(models.Model):
    """A named environment of an app: the Lambda alias, its auto-deploy branch, domain and rollout."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(max_length=64, validators=[stage_name_validator])
    branch = models.CharField(max_length=255, blank=True)  # pushes to it auto-deploy this stage
    domain = models.CharField(max_length=253, blank=True)
    hosted_zone_id = models.CharField(max_length=64, blank=True)
    certificate_arns = models.JSONField(default=dict, blank=True)  # {region: acm arn}; "" = request one
    # {"waves": [["us-east-1"], ["*"]], "bake_s": 0, "on_failure": "leave" | "rollback"}
    rollout = models.JSONField(default=dict, blank=True)
    pinned = models.BooleanField(default=False)
    pinned_reason = models.CharField(max_length=500, blank=True)
    pinned_at = models.DateTimeField(null=True, blank=True)
    # Set when a teardown of the stage (or its app) starts: from then on it is not probed and
    # takes no deploys. It stays set when the teardown fails, until one succeeds (the row goes).
    teardown_started_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "name"], name="stage_name_unique_per_app")]
        ordering = ["name"]

    def __str__(self) -> str:
        return f"{self.app.slug}/{self.name}"


ENV_DUPLICATE_MESSAGE = "This key is already set for this stage and region; change that one instead."


class EnvVar(models.Model):
    """An env var of an app, optionally narrowed to a stage and/or a region. The value is always
    encrypted at rest; ``secret`` decides whether the API and admin show it."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="env_vars")
    stage = models.ForeignKey(Stage, null=True, blank=True, on_delete=models.CASCADE, related_name="env_vars")
    region = models.ForeignKey(
        "regions.Region", null=True, blank=True, on_delete=models.CASCADE, related_name="+"
    )
    key = models.CharField(max_length=128)
    value = EncryptedTextField(blank=True, default="")
    secret = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key", "id"]
        constraints = [
            # One row per (app, stage, region, key) — NULL counts as a value here, so one
            # constraint per combination of NULLs (SQL treats NULLs as distinct otherwise).
            models.UniqueConstraint(
                fields=["app", "key"],
                condition=models.Q(stage__isnull=True, region__isnull=True),
                name="env_unique_app",
                violation_error_message=ENV_DUPLICATE_MESSAGE,
            ),
            models.UniqueConstraint(
                fields=["app", "stage", "key"],
                condition=models.Q(stage__isnull=False, region__isnull=True),
                name="env_unique_stage",
                violation_error_message=ENV_DUPLICATE_MESSAGE,
            ),
            models.UniqueConstraint(
                fields=["app", "region", "key"],
                condition=models.Q(stage__isnull=True, region__isnull=False),
                name="env_unique_region",
                violation_error_message=ENV_DUPLICATE_MESSAGE,
            ),
            models.UniqueConstraint(
                fields=["app", "stage", "region", "key"],
                condition=models.Q(stage__isnull=False, region__isnull=False),
                name="env_unique_stage_region",
                violation_error_message=ENV_DUPLICATE_MESSAGE,
            ),
        ]

    def __str__(self) -> str:
        return self.key

    def clean(self) -> None:
        from .env import env_key_problem

        problem = env_key_problem(self.key)
        if problem:
            raise ValidationError({"key": problem})


class Artifact(models.Model):
    """An immutable zip, content-addressed by sha256 (deduplicated per app)."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="artifacts")
    sha256 = models.CharField(max_length=64)
    size = models.PositiveBigIntegerField()
    unzipped_size = models.PositiveBigIntegerField(default=0)
    source = models.CharField(max_length=16, choices=ArtifactSource.choices, default=ArtifactSource.UPLOAD)
    tree_sha = models.CharField(max_length=64, blank=True)  # git tree it was built from, for reuse
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "sha256"], name="artifact_unique_per_app")]

    def __str__(self) -> str:
        return f"{self.app.slug}@{self.sha256[:12]}"

    @property
    def storage_key(self) -> str:
        return f"artifacts/{self.app.team.slug}/{self.app.slug}/{self.sha256}.zip"


class Release(models.Model):
    """An immutable snapshot for one stage: artifact + config + env per region + the commit.

    ``env_snapshot`` is ``{region_code: {KEY: value}}`` serialized to JSON and encrypted."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="releases")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="releases")
    number = models.PositiveIntegerField()  # 1, 2, ... per stage
    artifact = models.ForeignKey(Artifact, on_delete=models.PROTECT, related_name="releases")
    config = models.JSONField(default=dict)  # runtime, handler, memory_mb, timeout_s, health_path
    env_snapshot = EncryptedTextField()
    env_secret_keys = models.JSONField(default=list)  # keys whose values are secret (for diffs)
    commit_sha = models.CharField(max_length=64, blank=True, db_index=True)
    commit_branch = models.CharField(max_length=255, blank=True)
    commit_message = models.TextField(blank=True)
    commit_author = models.CharField(max_length=255, blank=True)
    commit_url = models.CharField(max_length=500, blank=True)
    source_release = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )  # promote: the other stage's release it came from
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-number"]
        constraints = [models.UniqueConstraint(fields=["stage", "number"], name="release_number_per_stage")]
        # The release list of an app, newest first, paged by id.
        indexes = [models.Index(fields=["app", "-id"], name="release_app_newest")]

    def __str__(self) -> str:
        return f"{self.stage} #{self.number}"


class Deployment(models.Model):
    """Moving a stage to a release, in every region of the app. Status follows from its regions."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="deployments")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="deployments")
    release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.PROTECT, related_name="deployments"
    )  # null until a build from ``ref`` produced the artifact
    previous_release = models.ForeignKey(
        Release, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=16, choices=DeploymentKind.choices, default=DeploymentKind.DEPLOY)
    status = models.CharField(
        max_length=20, choices=DeploymentStatus.choices, default=DeploymentStatus.QUEUED, db_index=True
    )
    ref = models.CharField(max_length=64, blank=True)  # git sha to build, when no artifact was given
    commit_sha = models.CharField(max_length=64, blank=True, db_index=True)
    commit_branch = models.CharField(max_length=255, blank=True)
    commit_message = models.TextField(blank=True)
    commit_author = models.CharField(max_length=255, blank=True)
    commit_url = models.CharField(max_length=500, blank=True)
    commit_count = models.PositiveIntegerField(null=True, blank=True)
    compare_url = models.CharField(max_length=500, blank=True)
    triggered_by = models.CharField(max_length=200)  # "user:alice", "token:ci", "webhook:github"
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    force = models.BooleanField(default=False)
    # A teardown of the whole app (every stage, the function and its API), not only of its stage.
    whole_app = models.BooleanField(default=False)
    cancel_requested = models.BooleanField(default=False)
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_fingerprint = models.CharField(max_length=64, blank=True)
    last_seq = models.PositiveIntegerField(default=0)  # last event sequence number handed out
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["app", "stage", "status"]),
            # The deployment log of an app, newest first, paged by id (cursor pagination), and
            # filtered by status: an index walk that stops after a page, however long the history.
            models.Index(fields=["app", "-id"], name="deployment_app_newest"),
            models.Index(fields=["app", "status", "-id"], name="deployment_app_status_newest"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["app", "idempotency_key"],
                condition=~models.Q(idempotency_key=""),
                name="deployment_idempotency_key",
            )
        ]

    def __str__(self) -> str:
        return f"deployment {self.pk} of {self.stage} ({self.status})"


class RegionDeployment(models.Model):
    """One deployment in one region: the version published, the one replaced, where it stands."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="regions")
    region = models.ForeignKey("regions.Region", on_delete=models.PROTECT, related_name="+")
    status = models.CharField(
        max_length=16, choices=RegionStatus.choices, default=RegionStatus.QUEUED, db_index=True
    )
    wave = models.PositiveSmallIntegerField(default=0)
    version = models.CharField(max_length=16, blank=True)
    previous_version = models.CharField(max_length=16, blank=True)
    step = models.CharField(max_length=32, blank=True)  # the step it is on (or last finished)
    attempts = models.PositiveSmallIntegerField(default=0)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=100, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A canary's bake, or a certificate's validation: until then the region is parked (running,
    # held by no worker thread).
    resume_at = models.DateTimeField(null=True, blank=True)
    # The region's Route 53 latency record (target, target zone, health check), written with
    # every other region's in one change batch once its wave is done.
    dns_record = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["wave", "region__code"]
        constraints = [models.UniqueConstraint(fields=["deployment", "region"], name="one_region_deployment")]

    def __str__(self) -> str:
        return f"{self.deployment_id}/{self.region_id} ({self.status})"


class DeploymentEvent(models.Model):
    """One line of the deployment log. ``seq`` orders a deployment's lines, for following live."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="events")
    region = models.ForeignKey(
        "regions.Region", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    seq = models.PositiveIntegerField()
    level = models.CharField(max_length=8, choices=EventLevel.choices, default=EventLevel.INFO)
    step = models.CharField(max_length=32, blank=True)
    message = models.TextField()
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["seq"]
        constraints = [models.UniqueConstraint(fields=["deployment", "seq"], name="event_seq_unique")]

    def __str__(self) -> str:
        return f"[{self.seq}] {self.message[:60]}"


class WebhookDelivery(models.Model):
    """A git host's delivery, kept so a repeat (same delivery id) creates nothing."""

    provider = models.CharField(max_length=16)  # github, gitlab
    delivery_id = models.CharField(max_length=100)
    event = models.CharField(max_length=50, blank=True)
    app = models.ForeignKey(App, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    outcome = models.CharField(max_length=16, choices=WebhookOutcome.choices, blank=True)
    detail = models.CharField(max_length=500, blank=True)
    deployments = models.ManyToManyField(Deployment, blank=True, related_name="+")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["provider", "delivery_id"], name="webhook_delivery_unique")
        ]


GITHUB_ACTIONS_ISSUER = "https://token.actions.githubusercontent.com"


class OidcTrustPolicy(models.Model):
    """Which CI jobs may log in as this app without a stored secret: an OIDC issuer and the claims
    its ID token must carry (repository, and optionally a ref or branch glob, an environment, a
    workflow). A match is exchanged for a short-lived API token scoped to the app and ``stages``."""

    app = models.ForeignKey(App, on_delete=models.CASCADE, related_name="oidc_policies")
    name = models.CharField(max_length=100, blank=True)
    issuer = models.CharField(max_length=500, default=GITHUB_ACTIONS_ISSUER)
    repository = models.CharField(max_length=255)  # owner/name (GitHub), group/project (GitLab)
    ref = models.CharField(max_length=255, blank=True)  # "refs/tags/v*", or a branch glob "main"; "" = any
    environment = models.CharField(max_length=255, blank=True)  # a glob; "" = any (or none)
    workflow = models.CharField(max_length=255, blank=True)  # a glob on the file or name; "" = any
    stages = models.JSONField(default=list, blank=True)  # stages the token may change; empty = all
    role = models.CharField(max_length=16, default="deployer")  # viewer or deployer
    enabled = models.BooleanField(default=True)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["app", "id"]
        verbose_name = "OIDC trust policy"
        verbose_name_plural = "OIDC trust policies"

    def __str__(self) -> str:
        return f"{self.app.slug}: {self.repository}" + (f"@{self.ref}" if self.ref else "")


class GitHostConnection(models.Model):
    """Where an app's deployments are reported back: its repository's GitHub or GitLab, with a
    credential. GitHub: a token (fine-grained: Deployments and Commit statuses read and write), or
    a GitHub App installation (``github_app_id`` and ``installation_id``, ``credential`` is then
    the App's private key). GitLab: a project or personal access token with the ``api`` scope."""

    app = models.OneToOneField(App, on_delete=models.CASCADE, related_name="git_host")
    provider = models.CharField(max_length=16, choices=GitHostProvider.choices)
    # "" = derived from the app's repo_url: https://api.github.com, https://<host>/api/v3 (GitHub
    # Enterprise), https://<host>/api/v4 (GitLab).
    api_url = models.CharField(max_length=500, blank=True)
    repository = models.CharField(max_length=255, blank=True)  # "" = the path of the app's repo_url
    credential = EncryptedTextField()
    github_app_id = models.CharField(max_length=32, blank=True)
    installation_id = models.CharField(max_length=32, blank=True)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.app.slug} → {self.provider}"


class GitHostPost(models.Model):
    """One report to the git host about a deployment (an outbox row, delivered in order per
    deployment by a task with retries): the deployment's state, or one region's commit status.
    ``key`` makes each transition one row however often the engine reports it."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="git_host_posts")
    region = models.ForeignKey(
        "regions.Region", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    key = models.CharField(max_length=100)  # "deployment:queued", "region:us-east-1:final", ...
    state = models.CharField(max_length=20)  # queued, in_progress, succeeded, failed, ... (ours)
    description = models.CharField(max_length=140, blank=True)
    status = models.CharField(
        max_length=16, choices=GitHostPostStatus.choices, default=GitHostPostStatus.PENDING, db_index=True
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["deployment", "id"]
        constraints = [
            models.UniqueConstraint(fields=["deployment", "key"], name="one_git_host_post_per_key")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"])]

    def __str__(self) -> str:
        return f"{self.key} of deployment {self.deployment_id} ({self.status})"


class GitHostPostAttempt(models.Model):
    """One try at a git host post: what the host answered, or why it failed."""

    post = models.ForeignKey(GitHostPost, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    status = models.CharField(max_length=16, choices=GitHostPostStatus.choices)  # the row's after
    response_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["post", "number"]
        constraints = [
            models.UniqueConstraint(fields=["post", "number"], name="one_git_host_attempt_per_number")
        ]


class GitHostDeployment(models.Model):
    """The git host's own deployment object for one of ours (GitHub deployment id, GitLab
    deployment id), made by the first post."""

    deployment = models.OneToOneField(
        Deployment, on_delete=models.CASCADE, related_name="git_host_deployment"
    )
    provider = models.CharField(max_length=16, choices=GitHostProvider.choices)
    external_id = models.CharField(max_length=64)
    created_at = models.DateTimeField(default=timezone.now)
