"""Where a stage of an app answers in a region: the base URL probes and the deploy verify step use.

``ENDPOINT_OVERRIDES`` (settings, from the environment so worker subprocesses see it too) wins
over the resolver; the most specific key first. Otherwise ``ENDPOINT_RESOLVER`` (a dotted path
to a function of the stage placement) decides; the default is the endpoint the deploy recorded.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from .models import StagePlacement


def aws_endpoint(stage_placement: StagePlacement) -> str:
    """The regional API Gateway URL the deploy recorded for the stage (``""`` when none yet)."""
    return stage_placement.endpoint_url or ""


@lru_cache(maxsize=8)
def _resolver(path: str) -> Callable[[StagePlacement], str]:
    return import_string(path)


def override_keys(*, team: str, app: str, stage: str, region: str) -> tuple[str, ...]:
    """``ENDPOINT_OVERRIDES`` keys for a placement, most specific first."""
    return (f"{team}/{app}/{stage}/{region}", f"{app}/{stage}/{region}", region)


def resolve_endpoint(stage_placement: StagePlacement) -> str:
    """The base URL (scheme, host, API stage path; no health path, no trailing slash) of a stage
    in a region, or ``""`` when it has none yet."""
    overrides = getattr(settings, "ENDPOINT_OVERRIDES", None) or {}
    if overrides:
        app = stage_placement.stage.app
        keys = override_keys(
            team=app.team.slug,
            app=app.slug,
            stage=stage_placement.stage.name,
            region=stage_placement.placement.region.code,
        )
        for key in keys:
            if overrides.get(key):
                return str(overrides[key]).rstrip("/")
    return (_resolver(settings.ENDPOINT_RESOLVER)(stage_placement) or "").rstrip("/")


def global_endpoint(domain: str) -> str:
    """The URL a stage's domain answers at (``GLOBAL_ENDPOINT_URL``), or ``""`` without a domain."""
    return settings.GLOBAL_ENDPOINT_URL.format(domain=domain) if domain else ""


def api_root(endpoint: str) -> str:
    """A regional REST API's URL without its stage, from a stage's endpoint."""
    return endpoint.rsplit("/", 1)[0] if endpoint.count("/") > 2 else endpoint


def health_url(stage_placement: StagePlacement) -> str:
    """The URL a probe requests: the endpoint plus the app's health path (``""`` without an
    endpoint)."""
    base = resolve_endpoint(stage_placement)
    if not base:
        return ""
    path = stage_placement.stage.app.health_path or "/"
    return base + (path if path.startswith("/") else "/" + path)
