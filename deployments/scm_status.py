"""The engine's hooks for reporting deployments back to the git host (GitHub, GitLab).

Each hook only records what happened as outbox rows (``GitHostPost``) in a savepoint and, after
commit, asks a worker to post them (``workers.post_git_host_updates``, sent by name: nothing
here imports a task). They never raise and cost one query when the app has no git host
connection, so a git host that is slow, down or refusing never fails or slows a deployment.
The posting itself is ``deployments.git_host``.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.db import transaction

from .choices import DeploymentStatus, RegionStatus
from .models import Deployment, GitHostConnection, GitHostPost, RegionDeployment

log = logging.getLogger(__name__)

POST_TASK = "workers.post_git_host_updates"

_REGION_WORDS = {
    RegionStatus.SUCCEEDED: "Deployed",
    RegionStatus.FAILED: "Failed",
    RegionStatus.ROLLED_BACK: "Rolled back",
    RegionStatus.CANCELLED: "Cancelled",
    RegionStatus.SKIPPED: "Skipped (an earlier wave failed)",
}


def _connected(deployment_id: int) -> bool:
    return GitHostConnection.objects.filter(app__deployments=deployment_id, enabled=True).exists()


def _connected_region(region_deployment_id: int) -> bool:
    return GitHostConnection.objects.filter(
        app__deployments__regions=region_deployment_id, enabled=True
    ).exists()


def enqueue(deployment_ids) -> None:
    """Ask a worker to post the pending rows of these deployments (after the current commit).
    A broker failure is logged: the rows stay pending and the sweeper sends them."""
    ids = sorted(set(deployment_ids))

    def send() -> None:
        for pk in ids:
            try:
                current_app.send_task(POST_TASK, args=[pk])
            except Exception:  # noqa: BLE001 - the rows are the record; the sweeper retries
                log.warning("could not enqueue git host posts of deployment %s", pk, exc_info=True)

    transaction.on_commit(send)


def _row(deployment: Deployment, key: str, state: str, description: str, region=None) -> GitHostPost:
    return GitHostPost(
        deployment=deployment, region=region, key=key, state=state, description=description[:140]
    )


def _region_row(deployment: Deployment, rd: RegionDeployment, *, final: bool) -> GitHostPost:
    code = rd.region.code
    if not final:
        return _row(
            deployment, f"region:{code}:pending", "pending", f"Waiting to deploy to {code}", rd.region
        )
    detail = f"{_REGION_WORDS.get(rd.status, rd.status)} in {code}"
    if rd.status == RegionStatus.SUCCEEDED and rd.version:
        detail += f" (version {rd.version})"
    if rd.error and rd.status != RegionStatus.SUCCEEDED:
        detail += f": {rd.error.splitlines()[0]}"
    return _row(deployment, f"region:{code}:final", rd.status, detail, rd.region)


def _replaced(deployment: Deployment) -> Deployment | None:
    """The stage's deployment this one replaced: its latest earlier successful one."""
    earlier = Deployment.objects.filter(
        stage_id=deployment.stage_id, status=DeploymentStatus.SUCCEEDED, pk__lt=deployment.pk
    )
    return earlier.order_by("-pk").first()


def _final_rows(deployment: Deployment, regions: list[RegionDeployment]) -> list[GitHostPost]:
    ended = [rd for rd in regions if rd.status not in (RegionStatus.QUEUED, RegionStatus.RUNNING)]
    rows = [_region_row(deployment, rd, final=True) for rd in ended]
    counts: dict[str, int] = {}
    for rd in regions:
        counts[rd.status] = counts.get(rd.status, 0) + 1
    summary = ", ".join(f"{n} {s.replace('_', ' ')}" for s, n in sorted(counts.items()))
    status = deployment.status.replace("_", " ").capitalize()
    rows.append(_row(deployment, "deployment:final", deployment.status, f"{status}: {summary}"))
    if deployment.status == DeploymentStatus.SUCCEEDED:
        replaced = _replaced(deployment)
        if replaced is not None:
            rows.append(
                _row(replaced, "deployment:inactive", "inactive", f"Replaced by deployment {deployment.pk}")
            )
    return rows


def deployment_changed(deployment_id: int, event: str) -> None:
    """Record a deployment's transition for its git host: ``"queued"`` (created), ``"in_progress"``
    (started) or ``"finished"`` (terminal: its final state, each region's commit status not yet
    recorded, and ``inactive`` for the deployment of the stage it replaced when it succeeded)."""
    try:
        # One plain read when the app reports nowhere (the usual case): no transaction of its own
        # that could hold locks while the deployment's end is being read.
        if not _connected(deployment_id):
            return
        with transaction.atomic():
            deployment = Deployment.objects.select_related("stage").get(pk=deployment_id)
            if not deployment.commit_sha:
                return  # nothing to attach a status to
            regions = list(deployment.regions.select_related("region"))
            if event == "queued":
                rows = [
                    _row(deployment, "deployment:queued", "queued", f"Queued for {len(regions)} region(s)")
                ]
                rows += [_region_row(deployment, rd, final=False) for rd in regions]
            elif event == "in_progress":
                rows = [_row(deployment, "deployment:in_progress", "in_progress", "Deploying")]
            elif event == "finished":
                rows = _final_rows(deployment, regions)
            else:
                raise ValueError(f"unknown event {event!r}")
            GitHostPost.objects.bulk_create(rows, ignore_conflicts=True)
            enqueue({row.deployment_id for row in rows})
    except Exception:  # noqa: BLE001 - reporting must never break a deployment
        log.exception("could not record git host %s of deployment %s", event, deployment_id)


def region_finished(region_deployment_id: int) -> None:
    """Record one region's end as its commit status (``controlplane/<stage>/<region>``)."""
    try:
        if not _connected_region(region_deployment_id):
            return
        with transaction.atomic():
            rd = RegionDeployment.objects.select_related("region", "deployment").get(pk=region_deployment_id)
            if rd.status in (RegionStatus.QUEUED, RegionStatus.RUNNING) or not rd.deployment.commit_sha:
                return
            GitHostPost.objects.bulk_create(
                [_region_row(rd.deployment, rd, final=True)], ignore_conflicts=True
            )
            enqueue([rd.deployment_id])
    except Exception:  # noqa: BLE001 - reporting must never break a deployment
        log.exception("could not record git host status of region deployment %s", region_deployment_id)
