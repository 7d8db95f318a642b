"""A version published from the ``$LATEST`` the function step set (guarded by its RevisionId);
the stage alias's current version is what the region goes back to."""

from __future__ import annotations

from regions.aws import lambda_
from regions.aws.session import AwsError

from ...choices import EventLevel
from ..context import RegionRun, version_marker
from . import function


def applies(run: RegionRun) -> bool:
    return True


def run(run: RegionRun) -> str:
    if run.created_function:
        alias = run.alias_before = None  # a function made moments ago has no alias
    else:
        alias = run.alias_before = lambda_.get_alias(
            run.code, run.function, run.stage.name, role_arn=run.role
        )
    existing = None if run.version_searched else function.existing_version(run)
    if existing is not None:
        version, note = existing.version, "already published (resumed)"
    else:
        sha = run.release.commit_sha[:12]
        description = (
            f"{version_marker(run.release)}stage={run.stage.name} "
            f"release={run.release.number}" + (f" commit={sha}" if sha else "")
        )[:256]
        version, note = _publish(run, description), "published"
    fields = {"version": version}
    if alias is not None and alias.version != version and not run.rd.previous_version:
        fields["previous_version"] = alias.version
    run.save(**fields)
    return f"Version {version} {note}" + (
        f"; the stage alias is on {alias.version}." if alias is not None else "."
    )


def _publish(run: RegionRun, description: str) -> str:
    """Publish ``$LATEST`` as this run left it. When it changed since (someone or something
    else updated the function: its env could be another stage's), the function step is done
    again and publishing tried once more; a second change fails the region."""

    def publish() -> str:
        return lambda_.publish_version(
            run.code, name=run.function, description=description,
            code_sha256=function.lambda_code_sha(run.release.artifact.sha256),
            revision_id=run.revision_id, role_arn=run.role,
        )  # fmt: skip

    try:
        return publish()
    except AwsError as err:
        if err.code != "PreconditionFailedException":
            raise
    run.log(
        f"$LATEST of {run.function} changed after this deploy set it (RevisionId "
        f"{run.revision_id or '-'}); setting it again before publishing.",
        step="version", level=EventLevel.WARNING,
    )  # fmt: skip
    run.created_function = run.version_searched = False
    run.log(function.run(run), step="function")
    return publish()
