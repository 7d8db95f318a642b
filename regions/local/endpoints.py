"""Where the local regions answer, and the endpoint resolver that points the control plane at them.

Each region listens on a port of its own: ``LOCAL_REGIONS_PORT`` + 1 + the region's place in the
sorted commercial region list (us-east-1 is 9131 with the default 9100). A REST API stage answers
at ``http://<host>:<region port>/<api id>/<stage>/...`` (or with ``Host: <api id>.execute-api.
<region>.amazonaws.com`` and ``/<stage>/...``). ``LOCAL_REGIONS_PORT`` itself serves the global
endpoints of stages with a domain (``http://<host>:<port>/<domain>/...`` or ``Host: <domain>``) and
the admin API (``/_status``, ``/_faults``).
"""

from __future__ import annotations

from urllib.parse import urlparse

from django.conf import settings

from regions.catalog import commercial_regions
from regions.models import StagePlacement


def base_port() -> int:
    return int(settings.LOCAL_REGIONS_PORT)


def host() -> str:
    return settings.LOCAL_REGIONS_HOST


def region_ports(base: int | None = None) -> dict[str, int]:
    """``{region: port}`` for every commercial region."""
    base = base_port() if base is None else base
    return {code: base + 1 + i for i, code in enumerate(sorted(commercial_regions()))}


def region_url(region: str) -> str:
    return f"http://{host()}:{region_ports()[region]}"


def global_url(domain: str) -> str:
    """The global endpoint of a stage's domain as it answers on this machine."""
    return f"http://{host()}:{base_port()}/{domain}" if domain else ""


def admin_url() -> str:
    return f"http://{host()}:{base_port()}"


def local_endpoint(stage_placement: StagePlacement) -> str:
    """``ENDPOINT_RESOLVER`` for the dev stack and the tests: the stage's regional API as the local
    regions serve it (``""`` until the deploy recorded one)."""
    recorded = stage_placement.endpoint_url or ""
    if not recorded:
        return ""
    parsed = urlparse(recorded)
    api_id = (parsed.hostname or "").split(".", 1)[0]
    region = stage_placement.placement.region.code
    if not api_id or region not in region_ports():
        return recorded
    return f"{region_url(region)}/{api_id}{parsed.path}".rstrip("/")


def uses_local_regions() -> bool:
    return settings.ENDPOINT_RESOLVER == "regions.local.endpoints.local_endpoint"
