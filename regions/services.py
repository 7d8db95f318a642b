"""Regions of the installation: seeding from the catalog, creating and changing them."""

from __future__ import annotations

from django.db import transaction

from controlplane import audit
from controlplane.access import Principal
from controlplane.choices import Role
from controlplane.errors import DomainError, Forbidden
from controlplane.models import Team

from .catalog import commercial_regions, known_regions, validate_region_code
from .models import Region

REGION_FIELDS = ("name", "enabled", "artifact_bucket", "role_arn")


class InvalidRegion(DomainError):
    code = "invalid_region"
    status_code = 400


def _require_region_admin(principal: Principal | None) -> None:
    if principal is not None and not principal.can_manage_regions():
        raise Forbidden("Only team admins manage the installation's regions.")


def _record(*, principal: Principal | None, action: str, region: Region, changes: dict, request) -> None:
    # Regions belong to the installation, not a team: the entry goes to every team whose admin
    # made the change, so each team's log shows it.
    if principal is None:
        return
    for team in Team.objects.filter(pk__in=principal.manageable_team_ids(Role.ADMIN)):
        audit.record(
            team=team, principal=principal, action=action, obj=region, changes=changes, request=request
        )


def ensure_region(*, code: str, name: str = "", enabled: bool = True) -> tuple[Region, bool]:
    """The region ``code``, created (with ``name`` and ``enabled``) when missing; an existing row is
    left as it is. Returns ``(region, created)``. Raises InvalidRegion for an unknown code."""
    problem = validate_region_code(code)
    if problem:
        raise InvalidRegion(problem, fields={"code": [problem]})
    with transaction.atomic():
        return Region.objects.get_or_create(
            code=code, defaults={"name": name or known_regions().get(code, code), "enabled": enabled}
        )


def seed_regions() -> tuple[int, int]:
    """Make sure every commercial AWS region has a row (new rows enabled; existing ones untouched).
    Returns ``(created, already_present)``."""
    created = 0
    catalog = commercial_regions()
    with transaction.atomic():
        for code, name in catalog.items():
            _, was_created = ensure_region(code=code, name=name)
            created += was_created
    return created, len(catalog) - created


def create_region(
    *,
    principal: Principal | None,
    code: str,
    name: str = "",
    enabled: bool = True,
    artifact_bucket: str = "",
    role_arn: str = "",
    request=None,
) -> Region:
    """Add a region to the installation. Raises InvalidRegion for an unknown or existing code,
    Forbidden unless ``principal`` is a team admin."""
    _require_region_admin(principal)
    problem = validate_region_code(code)
    if problem:
        raise InvalidRegion(problem, fields={"code": [problem]})
    with transaction.atomic():
        if Region.objects.filter(code=code).exists():
            raise InvalidRegion(f"Region '{code}' already exists.", fields={"code": ["Already exists."]})
        region = Region.objects.create(
            code=code,
            name=name or known_regions().get(code, code),
            enabled=enabled,
            artifact_bucket=artifact_bucket,
            role_arn=role_arn,
        )
        _record(
            principal=principal,
            action="region.create",
            region=region,
            changes={"enabled": enabled, "artifact_bucket": artifact_bucket, "role_arn": role_arn},
            request=request,
        )
    return region


def update_region(*, principal: Principal | None, region: Region, data: dict, request=None) -> Region:
    """Change ``name``, ``enabled``, ``artifact_bucket`` or ``role_arn`` of a region. Disabling a
    region keeps its placements; apps just cannot add it any more. Raises Forbidden unless
    ``principal`` is a team admin."""
    _require_region_admin(principal)
    unknown = set(data) - set(REGION_FIELDS)
    if unknown:
        raise InvalidRegion(f"Cannot change: {', '.join(sorted(unknown))}.")
    with transaction.atomic():
        changes = {k: [getattr(region, k), v] for k, v in data.items() if getattr(region, k) != v}
        if changes:
            for key, value in data.items():
                setattr(region, key, value)
            region.save(update_fields=list(changes))
            _record(
                principal=principal, action="region.update", region=region, changes=changes, request=request
            )
    return region
