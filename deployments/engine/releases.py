"""Freezing a release: the artifact, the app's function configuration, the effective env of every
region and the commit, as one immutable row. The engine's build makes one; so do the services
that deploy, promote or re-ship a stage."""

from __future__ import annotations

import json

from django.db import transaction
from django.db.models import Max

from ..env import resolve_env
from ..models import App, Artifact, Release, Stage


def release_config(app: App) -> dict:
    """The function configuration a release freezes."""
    return {
        "runtime": app.runtime,
        "handler": app.handler,
        "memory_mb": app.memory_mb,
        "timeout_s": app.timeout_s,
        "health_path": app.health_path,
        "health_expected_status": app.health_expected_status,
        "health_expected_text": app.health_expected_text,
    }


def release_env(release: Release) -> dict[str, dict[str, str]]:
    """``{region_code: {KEY: value}}`` as the release froze it (plaintext: never log or return it)."""
    return json.loads(release.env_snapshot or "{}")


def commit_fields(commit: dict) -> dict[str, str]:
    """A commit (``sha``, ``branch``, ``message``, ``author``, ``url``) as the ``commit_*`` fields
    of a release or a deployment, cut to their columns' lengths; the sha lowercase (git's own
    spelling), so a search by sha prefix is a plain index range."""
    return {
        "commit_sha": (commit.get("sha") or "")[:64].lower(),
        "commit_branch": commit.get("branch", "")[:255],
        "commit_message": commit.get("message", ""),
        "commit_author": commit.get("author", "")[:255],
        "commit_url": commit.get("url", "")[:500],
    }


def create_release(
    *,
    app: App,
    stage: Stage,
    artifact: Artifact,
    commit: dict | None = None,
    created_by: str = "",
    source_release: Release | None = None,
    config: dict | None = None,
) -> Release:
    """Freeze artifact + config + the effective env of every region + the commit into a release.

    Raises EnvTooLarge when a region's env is over Lambda's 4 KB limit.
    """
    commit = commit or {}
    regions = [p.region for p in app.placements.select_related("region")]
    env = {r.code: resolve_env(app=app, stage=stage, region=r) for r in regions}
    secret_keys = sorted(set(app.env_vars.filter(secret=True).values_list("key", flat=True)))
    with transaction.atomic():
        Stage.objects.select_for_update().filter(pk=stage.pk).first()
        number = (Release.objects.filter(stage=stage).aggregate(n=Max("number"))["n"] or 0) + 1
        return Release.objects.create(
            app=app,
            stage=stage,
            number=number,
            artifact=artifact,
            config=config or release_config(app),
            env_snapshot=json.dumps(env, sort_keys=True),
            env_secret_keys=secret_keys,
            **commit_fields(commit),
            source_release=source_release,
            created_by=created_by[:200],
        )
