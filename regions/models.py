from __future__ import annotations

from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from .catalog import validate_region_code
from .choices import HealthStatus


class Region(models.Model):
    """An AWS region this installation may deploy to, with its artifact bucket and optional role."""

    code = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=100, blank=True)
    enabled = models.BooleanField(default=True)
    artifact_bucket = models.CharField(max_length=63, blank=True)  # default: controlplane-artifacts-<code>
    role_arn = models.CharField(max_length=2048, blank=True)  # assumed for every call in this region
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return self.code

    def clean(self) -> None:
        problem = validate_region_code(self.code)
        if problem:
            raise ValidationError({"code": problem})

    @property
    def bucket(self) -> str:
        return self.artifact_bucket or f"controlplane-artifacts-{self.code}"


class AppRegion(models.Model):
    """A placement: an app in a region, with the AWS resource ids it owns there."""

    app = models.ForeignKey("deployments.App", on_delete=models.CASCADE, related_name="placements")
    region = models.ForeignKey(Region, on_delete=models.PROTECT, related_name="placements")
    function_arn = models.CharField(max_length=2048, blank=True)
    rest_api_id = models.CharField(max_length=64, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["app", "region"], name="one_placement_per_region")]
        ordering = ["region__code"]
        verbose_name = "placement"

    def __str__(self) -> str:
        return f"{self.app} in {self.region}"


class StagePlacement(models.Model):
    """A stage of an app live in one region: the version its alias points at, its regional endpoint,
    its Route 53 health check and its health as the probes see it."""

    placement = models.ForeignKey(AppRegion, on_delete=models.CASCADE, related_name="stages")
    stage = models.ForeignKey("deployments.Stage", on_delete=models.CASCADE, related_name="placements")
    version = models.CharField(max_length=16, blank=True)  # Lambda version the stage alias points at
    release = models.ForeignKey(
        "deployments.Release", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    endpoint_url = models.URLField(
        max_length=500, blank=True
    )  # https://{api}.execute-api.{region}.../{stage}
    health_check_id = models.CharField(max_length=64, blank=True)
    health_status = models.CharField(
        max_length=16, choices=HealthStatus.choices, default=HealthStatus.UNKNOWN
    )
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_successes = models.PositiveIntegerField(default=0)
    last_probe_at = models.DateTimeField(null=True, blank=True)
    last_latency_ms = models.FloatField(null=True, blank=True)
    route53_status = models.CharField(max_length=32, blank=True)  # as Route 53 last reported it
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["placement", "stage"], name="one_stage_placement")]

    def __str__(self) -> str:
        return f"{self.stage} in {self.placement.region}"

    @property
    def live(self) -> bool:
        return bool(self.version)


class Probe(models.Model):
    """One health probe of a stage in a region."""

    stage_placement = models.ForeignKey(StagePlacement, on_delete=models.CASCADE, related_name="probes")
    ok = models.BooleanField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    latency_ms = models.FloatField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["stage_placement", "-created_at"]),
            models.Index(fields=["created_at"]),
        ]


class Incident(models.Model):
    """A stage in a region went down; closed when it recovers."""

    stage_placement = models.ForeignKey(StagePlacement, on_delete=models.CASCADE, related_name="incidents")
    opened_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)
    reason = models.CharField(max_length=500, blank=True)
    last_reminder_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["stage_placement"],
                condition=models.Q(closed_at__isnull=True),
                name="one_open_incident",
            )
        ]

    @property
    def duration_s(self) -> float | None:
        end = self.closed_at or timezone.now()
        return (end - self.opened_at).total_seconds()


class ProbeRollup(models.Model):
    """The probes of one stage placement in one 15-minute bucket, summed: the health history's
    source for day and week charts, so a chart reads a few hundred rows, not every probe (and the
    history outlives the pruning of old probes). Filled by ``regions.history`` from the probes of
    buckets that are over; never changed after."""

    stage_placement = models.ForeignKey(StagePlacement, on_delete=models.CASCADE, related_name="rollups")
    bucket = models.DateTimeField()  # the bucket's start (UTC, a multiple of 15 minutes)
    probes = models.PositiveIntegerField()
    failed = models.PositiveIntegerField()
    latency_sum_ms = models.FloatField(default=0)  # over the successful probes only
    latency_max_ms = models.FloatField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["stage_placement", "bucket"], name="one_rollup_per_bucket")
        ]
