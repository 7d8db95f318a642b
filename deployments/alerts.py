"""What a deployment's alerts say (``deploy_started``, ``deploy_succeeded``, ``deploy_failed``,
``rollback``), and handing them to :mod:`controlplane.notify` for fan-out and delivery."""

from __future__ import annotations

import logging

from django.conf import settings
from django.db import transaction

from controlplane.channels.base import Message
from controlplane.choices import AlertEvent
from controlplane.notify import fan_out

from .models import Deployment

log = logging.getLogger("controlplane.notify")


_DEPLOY_WORDS = {
    AlertEvent.DEPLOY_STARTED: ("Deploying", "info"),
    AlertEvent.DEPLOY_SUCCEEDED: ("Deployed", "good"),
    AlertEvent.DEPLOY_FAILED: ("Deploy failed", "danger"),
    AlertEvent.ROLLBACK: ("Rolled back", "warning"),
}


def deployment_message(deployment, event: str) -> Message:
    """The alert for a deployment's transition: app, stage, kind, commit, per-region outcome, link."""
    app, stage = deployment.app, deployment.stage
    verb, severity = _DEPLOY_WORDS.get(event, (event, "info"))
    short_sha = (deployment.commit_sha or "")[:7]
    subject = (
        (deployment.commit_message or "").strip().splitlines()[0][:120] if deployment.commit_message else ""
    )
    commit = " ".join(part for part in (short_sha, subject) if part) or "no commit"
    regions = list(deployment.regions.select_related("region").order_by("wave", "region__code"))
    lines = []
    for rd in regions:
        line = f"{rd.region.code}: {rd.status}"
        if rd.version:
            line += f" (version {rd.version})"
        if rd.error:
            line += f" — {rd.error.splitlines()[0][:150]}"
        lines.append(line)
    release = f" release #{deployment.release.number}" if deployment.release_id else ""
    title = f"{verb}: {app.slug} {stage.name}{release}"
    if event == AlertEvent.DEPLOY_STARTED:
        text = f"{deployment.kind.title()} of {app.slug} {stage.name} started by {deployment.triggered_by}."
    else:
        text = (
            f"{deployment.kind.title()} of {app.slug} {stage.name} is {deployment.status.replace('_', ' ')}."
        )
    if deployment.error and event != AlertEvent.DEPLOY_STARTED:
        text += f" {deployment.error.splitlines()[0][:200]}"
    fields = {
        "App": app.slug,
        "Stage": stage.name,
        "Kind": deployment.kind,
        "Commit": commit,
        "Triggered by": deployment.triggered_by,
    }
    if lines:
        fields["Regions"] = "\n".join(lines)
    return Message(
        event=event,
        title=title,
        text=text,
        url=settings.SITE_URL + settings.DEPLOYMENT_URL_PATH.format(id=deployment.pk),
        fields=fields,
        severity=severity,
        data={
            "team": app.team.slug,
            "app": app.slug,
            "stage": stage.name,
            "deployment_id": deployment.pk,
            "kind": deployment.kind,
            "status": deployment.status,
            "release": deployment.release.number if deployment.release_id else None,
            "commit": {
                "sha": deployment.commit_sha,
                "message": deployment.commit_message,
                "branch": deployment.commit_branch,
                "url": deployment.commit_url,
            },
            "regions": [
                {"region": rd.region.code, "status": rd.status, "version": rd.version, "error": rd.error}
                for rd in regions
            ],
        },
    )


def notify_deployment(deployment_id: int, event: str) -> None:
    """Queue deliveries of a deployment transition (``deploy_started``, ``deploy_succeeded``,
    ``deploy_failed``, ``rollback``) to every enabled channel of the app's team subscribed to it.
    Cheap and safe inside the engine's transaction: rows are created in a savepoint and sent
    after commit; nothing is raised, whatever goes wrong (it is logged)."""
    try:
        with transaction.atomic():
            deployment = Deployment.objects.select_related("app__team", "stage", "release").get(
                pk=deployment_id
            )
            message = deployment_message(deployment, event)
            fan_out(
                team_id=deployment.app.team_id,
                app=deployment.app,
                event=event,
                message=message,
                deployment=deployment,
            )
    except Exception:  # noqa: BLE001 - alerts must never break a deployment
        log.exception("could not queue %s notifications for deployment %s", event, deployment_id)
