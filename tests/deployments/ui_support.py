"""What the web UI's tests share: an app that has shipped releases, and reading a page."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone

from deployments.choices import DeploymentKind, DeploymentStatus, RegionStatus
from deployments.engine.releases import create_release
from deployments.events import log_event
from deployments.models import Artifact, Deployment, RegionDeployment, Stage
from regions.models import AppRegion, StagePlacement

SECRET = "pa55-very-secret-value"
UI_REGIONS = ["eu-west-1", "us-east-1"]


def ship(app, *, stage="production", sha="a1b2c3d4e5f6a7b8", message="Add checkout", versions=None, ago=0):
    """A succeeded deployment of a new release of ``stage``, live in every region of ``app``
    (Lambda version per region from ``versions``), with a few log lines."""
    stage = Stage.objects.get(app=app, name=stage)
    artifact, _ = Artifact.objects.get_or_create(app=app, sha256=sha.ljust(64, "0"), defaults={"size": 10})
    release = create_release(
        app=app,
        stage=stage,
        artifact=artifact,
        commit={
            "sha": sha,
            "branch": "main",
            "message": message,
            "author": "Ada Lovelace",
            "url": f"https://github.com/acme/shop/commit/{sha}",
        },
        created_by="user:ada",
    )
    finished = timezone.now() - timedelta(minutes=ago)
    deployment = Deployment.objects.create(
        app=app,
        stage=stage,
        release=release,
        kind=DeploymentKind.DEPLOY,
        status=DeploymentStatus.SUCCEEDED,
        commit_sha=release.commit_sha,
        commit_branch=release.commit_branch,
        commit_message=release.commit_message,
        commit_author=release.commit_author,
        commit_url=release.commit_url,
        triggered_by="webhook:github",
        started_at=finished - timedelta(seconds=42),
        finished_at=finished,
    )
    versions = versions or {}
    for placement in AppRegion.objects.filter(app=app).select_related("region"):
        code = placement.region.code
        version = versions.get(code, str(release.number))
        RegionDeployment.objects.create(
            deployment=deployment,
            region=placement.region,
            status=RegionStatus.SUCCEEDED,
            version=version,
            started_at=finished - timedelta(seconds=40),
            finished_at=finished,
        )
        StagePlacement.objects.update_or_create(
            placement=placement, stage=stage, defaults={"version": version, "release": release}
        )
    log_event(deployment_id=deployment.pk, step="queue", message=f"Deploy of commit {sha[:7]} queued.")
    log_event(deployment_id=deployment.pk, step="alias", message="Moved alias production to the new version.")
    return deployment


def html(response) -> str:
    return response.content.decode()
