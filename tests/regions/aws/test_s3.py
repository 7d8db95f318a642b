from __future__ import annotations

import hashlib

import pytest

from regions.aws import s3
from regions.aws.session import AwsError, client

from .conftest import REGION, fail_first, plain


def test_bucket_is_created_in_its_region_and_private(fake_aws):
    s3.ensure_bucket(REGION, "artifacts-eu")
    assert plain("s3").get_bucket_location(Bucket="artifacts-eu")["LocationConstraint"] == REGION
    block = plain("s3").get_public_access_block(Bucket="artifacts-eu")["PublicAccessBlockConfiguration"]
    assert all(block.values())


def test_bucket_in_us_east_1_has_no_location_constraint(fake_aws):
    s3.ensure_bucket("us-east-1", "artifacts-use1")
    assert plain("s3", "us-east-1").get_bucket_location(Bucket="artifacts-use1")["LocationConstraint"] is None


def test_ensuring_an_existing_bucket_keeps_it_and_its_objects(fake_aws):
    s3.ensure_bucket(REGION, "artifacts-eu")
    s3.put_bytes(REGION, "artifacts-eu", "a/1.zip", b"zip")
    s3.ensure_bucket(REGION, "artifacts-eu")
    names = [b["Name"] for b in plain("s3").list_buckets()["Buckets"]]
    assert names == ["artifacts-eu"]
    assert s3.get_bytes(REGION, "artifacts-eu", "a/1.zip") == b"zip"


def test_bucket_of_another_account_is_a_clear_error(fake_aws):
    # moto lets any account see any bucket; AWS answers the HEAD of another's bucket with a bare 403.
    fail_first(
        client("s3", REGION), "before-send.s3.HeadBucket", times=99, status=403, code="", json_protocol=False
    )
    with pytest.raises(AwsError) as caught:
        s3.ensure_bucket(REGION, "taken-name")
    assert (caught.value.code, caught.value.retryable) == ("AccessDenied", False)
    assert plain("s3").list_buckets()["Buckets"] == []


def test_bucket_in_another_region_is_refused(fake_aws):
    s3.ensure_bucket("us-west-2", "artifacts-usw2")
    with pytest.raises(AwsError) as caught:
        s3.ensure_bucket(REGION, "artifacts-usw2")
    assert caught.value.code == "BucketInOtherRegion"


def test_upload_stores_the_sha256_and_object_exists_sees_it(fake_aws, tmp_path):
    s3.ensure_bucket(REGION, "artifacts-eu")
    path = tmp_path / "app.zip"
    path.write_bytes(b"PK\x03\x04 content")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()

    assert s3.object_exists(REGION, "artifacts-eu", f"artifacts/app/{digest}.zip") is False
    s3.upload_file(REGION, "artifacts-eu", f"artifacts/app/{digest}.zip", str(path), sha256_hex=digest)

    assert s3.object_exists(REGION, "artifacts-eu", f"artifacts/app/{digest}.zip") is True
    head = plain("s3").head_object(Bucket="artifacts-eu", Key=f"artifacts/app/{digest}.zip")
    assert head["Metadata"] == {"sha256": digest}
    assert s3.head_object(REGION, "artifacts-eu", f"artifacts/app/{digest}.zip")["sha256"] == digest


def test_big_files_go_up_in_parts(fake_aws, tmp_path):
    s3.ensure_bucket(REGION, "artifacts-eu")
    path = tmp_path / "big.zip"
    path.write_bytes(b"x" * (s3.TRANSFER_CONFIG.multipart_threshold + 1024))
    s3.upload_file(REGION, "artifacts-eu", "big.zip", str(path), sha256_hex="ff" * 32)
    head = plain("s3").head_object(Bucket="artifacts-eu", Key="big.zip")
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload's ETag counts its parts
    assert head["ContentLength"] == path.stat().st_size
    assert head["Metadata"] == {"sha256": "ff" * 32}


def test_bytes_round_trip_and_delete_is_idempotent(fake_aws):
    s3.ensure_bucket(REGION, "artifacts-eu")
    s3.put_bytes(REGION, "artifacts-eu", "manifest.json", b'{"a": 1}')
    assert s3.get_bytes(REGION, "artifacts-eu", "manifest.json") == b'{"a": 1}'
    s3.delete_object(REGION, "artifacts-eu", "manifest.json")
    s3.delete_object(REGION, "artifacts-eu", "manifest.json")
    assert s3.object_exists(REGION, "artifacts-eu", "manifest.json") is False


def test_reading_a_missing_object_is_a_not_found_error(fake_aws):
    s3.ensure_bucket(REGION, "artifacts-eu")
    with pytest.raises(AwsError) as caught:
        s3.get_bytes(REGION, "artifacts-eu", "nope")
    assert (caught.value.code, caught.value.retryable, caught.value.region) == ("NoSuchKey", False, REGION)


def test_uploading_to_a_missing_bucket_is_an_aws_error(fake_aws, tmp_path):
    path = tmp_path / "a.zip"
    path.write_bytes(b"zip")
    with pytest.raises(AwsError) as caught:
        s3.upload_file(REGION, "no-such-bucket", "a.zip", str(path))
    assert caught.value.code == "NoSuchBucket"


def test_upload_as_an_assumed_role_lands_in_that_accounts_bucket(fake_aws, tmp_path):
    from .test_session import DEPLOYER

    s3.ensure_bucket(REGION, "deployer-artifacts", role_arn=DEPLOYER)
    path = tmp_path / "a.zip"
    path.write_bytes(b"zip")
    s3.upload_file(REGION, "deployer-artifacts", "a.zip", str(path), role_arn=DEPLOYER, sha256_hex="aa" * 32)
    assert s3.head_object(REGION, "deployer-artifacts", "a.zip", role_arn=DEPLOYER)["sha256"] == "aa" * 32
