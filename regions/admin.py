"""Django admin for regions (editable) and placements, probes and incidents (kept by the system)."""

from django.contrib import admin

from controlplane.admin import ReadOnlyAdmin

from .models import AppRegion, Incident, Probe, ProbeRollup, Region, StagePlacement


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    readonly_fields = ["created_at"]
    list_display = ["code", "name", "enabled", "artifact_bucket", "role_arn"]
    list_filter = ["enabled"]
    list_editable = ["enabled"]
    search_fields = ["code", "name"]


@admin.register(AppRegion)
class AppRegionAdmin(ReadOnlyAdmin):
    list_display = ["app", "region", "function_arn", "rest_api_id", "created_at"]
    list_filter = ["region"]
    search_fields = ["app__slug"]


@admin.register(StagePlacement)
class StagePlacementAdmin(ReadOnlyAdmin):
    list_display = ["stage", "placement", "version", "health_status", "last_probe_at", "endpoint_url"]
    list_filter = ["health_status"]
    search_fields = ["stage__app__slug", "stage__name"]


@admin.register(Probe)
class ProbeAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "stage_placement", "ok", "status_code", "latency_ms", "error"]
    list_filter = ["ok"]


@admin.register(ProbeRollup)
class ProbeRollupAdmin(ReadOnlyAdmin):
    list_display = ["bucket", "stage_placement", "probes", "failed", "latency_max_ms"]
    date_hierarchy = "bucket"


@admin.register(Incident)
class IncidentAdmin(ReadOnlyAdmin):
    list_display = ["stage_placement", "opened_at", "closed_at", "reason"]
    list_filter = ["closed_at"]
