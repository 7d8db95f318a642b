"""Handing a deployment's work to the workers, through :mod:`controlplane.queue` (after
commit; a broker that is down is logged and the reaper sends the work again)."""

from __future__ import annotations

from collections.abc import Iterable

from controlplane.queue import enqueue


def start(deployment_id: int) -> None:
    """Build the deployment if it needs it, then release its first wave."""
    enqueue("workers.start_deployment", deployment_id)


def rollback(deployment_id: int) -> None:
    """Every region of a rollback at once, from one task."""
    enqueue("workers.rollback_regions", deployment_id)


def regions(ids: int | Iterable[int], *, countdown: float = 0) -> None:
    """Run these region deployments (``countdown``: a later wave's bake, a canary's bake, a retry)."""
    enqueue("workers.deploy_region", ids, countdown=countdown)
