"""Artifact buckets and objects in S3."""

from __future__ import annotations

import os

from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError

from .session import AwsError, aws_errors, client, register_cache

SHA256_METADATA = "sha256"  # x-amz-meta-sha256: the artifact's content address, hex
_MB = 1024 * 1024
# Multipart above 16 MB with 4 parallel parts: a typical 5-50 MB Lambda zip goes up in one or a few
# requests, and a big one does not hold one connection for minutes.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=16 * _MB, multipart_chunksize=16 * _MB, max_concurrency=4
)


# (region, bucket, acting role) of buckets this process has found or made in their region.
_known_buckets: dict[tuple[str, str, str], bool] = register_cache({})


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


@aws_errors
def ensure_bucket(region: str, bucket: str, *, role_arn: str = "") -> None:
    """Create ``bucket`` in ``region`` (private) unless this account already owns it.

    Raises AwsError (``403``/``BucketAlreadyExists``) when another account owns the name. Once
    this process has seen the bucket in place, nothing is called (see :func:`forget_bucket`)."""
    if (region, bucket, role_arn) in _known_buckets:
        return
    _ensure_bucket(region, bucket, role_arn)
    _known_buckets[(region, bucket, role_arn)] = True


def forget_bucket(region: str, bucket: str, *, role_arn: str = "") -> None:
    """Check the bucket again at the next :func:`ensure_bucket` (it went missing)."""
    _known_buckets.pop((region, bucket, role_arn), None)


def _ensure_bucket(region: str, bucket: str, role_arn: str) -> None:
    s3 = client("s3", region, role_arn=role_arn)
    try:
        head = s3.head_bucket(Bucket=bucket)
    except ClientError as exc:
        # HEAD answers have no body: a missing bucket is a bare 404, another owner's a bare 403.
        if _status(exc) != 404:
            raise
    else:
        located = head.get("BucketRegion") or region
        if located != region:
            # Lambda only takes code from a bucket in its own region.
            raise AwsError(
                "BucketInOtherRegion",
                f"bucket {bucket} is in {located}, not {region}",
                operation="HeadBucket",
                retryable=False,
            )
        return
    kwargs: dict = {"Bucket": bucket}
    if region != "us-east-1":
        # us-east-1 is the one region that rejects its own name as a LocationConstraint.
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        return
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )


@aws_errors
def head_object(region: str, bucket: str, key: str, *, role_arn: str = "") -> dict | None:
    """``{"size", "etag", "sha256"}`` of the object (sha256 from its metadata, "" if absent), or
    None when there is no such object."""
    s3 = client("s3", region, role_arn=role_arn)
    try:
        head = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if _status(exc) == 404:
            return None
        raise
    return {
        "size": head.get("ContentLength", 0),
        "etag": head.get("ETag", "").strip('"'),
        "sha256": (head.get("Metadata") or {}).get(SHA256_METADATA, ""),
    }


def object_exists(region: str, bucket: str, key: str, *, role_arn: str = "") -> bool:
    """True when ``bucket`` holds ``key``."""
    return head_object(region, bucket, key, role_arn=role_arn) is not None


@aws_errors
def upload_file(
    region: str, bucket: str, key: str, path: str, *, role_arn: str = "", sha256_hex: str = ""
) -> None:
    """Upload the file at ``path`` (multipart when big), storing ``sha256_hex`` as metadata."""
    extra: dict = {}
    if sha256_hex:
        extra["Metadata"] = {SHA256_METADATA: sha256_hex}
    s3 = client("s3", region, role_arn=role_arn)
    if os.path.getsize(path) < TRANSFER_CONFIG.multipart_threshold:
        # One PutObject, as the transfer manager would send, without the thread pool it starts
        # for every upload (most artifacts are far below the threshold).
        with open(path, "rb") as body:
            s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)
        return
    s3.upload_file(str(path), bucket, key, ExtraArgs=extra or None, Config=TRANSFER_CONFIG)


@aws_errors
def put_bytes(region: str, bucket: str, key: str, data: bytes, *, role_arn: str = "") -> None:
    """Store ``data`` at ``key``."""
    client("s3", region, role_arn=role_arn).put_object(Bucket=bucket, Key=key, Body=data)


@aws_errors
def get_bytes(region: str, bucket: str, key: str, *, role_arn: str = "") -> bytes:
    """The object's content. Raises AwsError ``NoSuchKey`` when it does not exist."""
    response = client("s3", region, role_arn=role_arn).get_object(Bucket=bucket, Key=key)
    with response["Body"] as body:
        return body.read()


@aws_errors
def delete_object(region: str, bucket: str, key: str, *, role_arn: str = "") -> None:
    """Delete ``key`` (nothing happens when it is already gone)."""
    client("s3", region, role_arn=role_arn).delete_object(Bucket=bucket, Key=key)
