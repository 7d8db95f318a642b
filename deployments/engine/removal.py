"""Deleting what the database records of a stage or an app, once nothing of it is live in AWS
(nothing was, or its teardown deployment took it down)."""

from __future__ import annotations

from django.db import transaction

from ..models import App, Stage


def delete_stage_rows(stage: Stage) -> None:
    """Delete the stage with its releases, deployments and log."""
    with transaction.atomic():
        # Deployments hold their releases with PROTECT: the rows go in dependency order.
        stage.deployments.all().delete()
        stage.releases.all().delete()
        stage.delete()


def delete_app_rows(app: App) -> None:
    """Delete the app with everything recorded about it."""
    with transaction.atomic():
        # Releases hold their artifacts and deployments their releases with PROTECT.
        app.deployments.all().delete()
        app.releases.all().delete()
        app.delete()
