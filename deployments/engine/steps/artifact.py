"""The release's artifact in the region's bucket (skipped when already there)."""

from __future__ import annotations

from regions.aws import s3
from regions.aws.session import AwsError

from ...artifacts import artifact_path
from ..context import RegionRun


def applies(run: RegionRun) -> bool:
    return True


def run(run: RegionRun) -> str:
    artifact = run.release.artifact
    key = artifact.storage_key
    bucket = run.region.bucket
    s3.ensure_bucket(run.code, bucket, role_arn=run.role)
    if s3.object_exists(run.code, bucket, key, role_arn=run.role):
        return f"Artifact {artifact.sha256[:12]} already in s3://{bucket}; not uploaded again."

    def upload():
        s3.upload_file(
            run.code, bucket, key, str(artifact_path(artifact)), role_arn=run.role, sha256_hex=artifact.sha256
        )

    try:
        upload()
    except AwsError as err:
        if err.code != "NoSuchBucket":
            raise
        # The bucket this process had seen is gone (deleted behind our back): make it again.
        s3.forget_bucket(run.code, bucket, role_arn=run.role)
        s3.ensure_bucket(run.code, bucket, role_arn=run.role)
        upload()
    return f"Uploaded artifact {artifact.sha256[:12]} ({artifact.size} bytes) to s3://{bucket}/{key}."
