"""Artifact uploads: checked against Lambda's rules and the app's handler, content-addressed,
deduplicated, stored locally or in S3."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import zipfile

import boto3
import pytest

from controlplane.choices import Role
from controlplane.models import AuditEntry
from deployments import artifacts
from deployments.models import Artifact
from tests.factories import AppFactory

pytestmark = pytest.mark.django_db

HANDLER = "def handler(event, context):\n    return {'statusCode': 200}\n"


def make_zip(files: dict[str, str | bytes], *, symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in files.items():
            zf.writestr(name, content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.create_system = 3
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


@pytest.fixture
def app(team):
    return AppFactory(team=team, slug="shop", runtime="python3.12", handler="app.handler")


@pytest.fixture
def deployer(api_for, team):
    return api_for(team, role=Role.DEPLOYER)


def upload(client, app, content: bytes, **fields):
    return client.post(
        f"/api/v1/apps/{app.slug}/artifacts/", {"file": io.BytesIO(content), **fields}, format="multipart"
    )


def test_upload_answers_201_and_stores_the_zip_under_its_sha256(deployer, app, settings):
    content = make_zip({"app.py": HANDLER, "lib/util.py": "X = 1\n"})
    response = upload(deployer, app, content)

    assert response.status_code == 201, response.json()
    body = response.json()
    sha = hashlib.sha256(content).hexdigest()
    assert body["sha256"] == sha and body["size"] == len(content) and body["deduplicated"] is False
    assert body["unzipped_size"] == len(HANDLER) + len("X = 1\n") and body["source"] == "upload"
    stored = settings.ARTIFACT_DIR / "acme" / "shop" / f"{sha}.zip"
    assert stored.read_bytes() == content
    artifact = Artifact.objects.get(pk=body["id"])
    assert artifacts.artifact_path(artifact) == stored
    assert AuditEntry.objects.filter(action="artifact.upload", object_id=str(artifact.pk)).exists()


def test_the_same_bytes_again_return_the_existing_artifact(deployer, app):
    content = make_zip({"app.py": HANDLER})
    first = upload(deployer, app, content).json()
    again = upload(deployer, app, content)

    assert again.status_code == 200
    assert again.json()["id"] == first["id"] and again.json()["deduplicated"] is True
    assert Artifact.objects.filter(app=app).count() == 1


def test_other_bytes_make_a_second_artifact(deployer, app):
    upload(deployer, app, make_zip({"app.py": HANDLER}))
    response = upload(deployer, app, make_zip({"app.py": HANDLER + "# v2\n"}))
    assert response.status_code == 201
    assert Artifact.objects.filter(app=app).count() == 2


def test_a_file_that_is_not_a_zip_is_refused(deployer, app):
    response = upload(deployer, app, b"definitely not a zip file")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_artifact"
    assert not Artifact.objects.exists()


def test_an_empty_zip_is_refused(deployer, app):
    response = upload(deployer, app, make_zip({}))
    assert response.status_code == 400 and response.json()["code"] == "invalid_artifact"


@pytest.mark.parametrize(
    "name", ["../evil.py", "/etc/cron.d/evil", "lib/../../evil.py", "..\\evil.py", "C:/x.py"]
)
def test_zip_slip_paths_are_refused(deployer, app, name):
    response = upload(deployer, app, make_zip({"app.py": HANDLER, name: "boom"}))
    assert response.status_code == 400
    assert response.json()["code"] == "unsafe_artifact"
    assert not Artifact.objects.exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside", "lib/../../outside"])
def test_symlinks_pointing_out_of_the_zip_are_refused(deployer, app, target):
    response = upload(deployer, app, make_zip({"app.py": HANDLER}, symlinks={"link": target}))
    assert response.status_code == 400
    assert response.json()["code"] == "unsafe_artifact"


def test_a_symlink_inside_the_zip_is_accepted(deployer, app):
    content = make_zip({"app.py": HANDLER, "lib/real.py": ""}, symlinks={"lib/alias.py": "real.py"})
    assert upload(deployer, app, content).status_code == 201


def test_a_zip_without_the_handlers_module_is_refused(deployer, app):
    response = upload(deployer, app, make_zip({"main.py": HANDLER}))
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "handler_missing"
    assert "app.py" in body["detail"] and "app/__init__.py" in body["detail"]


def test_a_zip_holding_its_folder_instead_of_its_contents_is_refused(deployer, app):
    response = upload(deployer, app, make_zip({"build/app.py": HANDLER}))
    assert response.status_code == 400 and response.json()["code"] == "handler_missing"


@pytest.mark.parametrize(
    ("runtime", "handler", "files"),
    [
        ("python3.12", "app.handler", {"app/__init__.py": HANDLER}),
        ("python3.12", "api.main.handler", {"api/main.py": HANDLER}),
        ("nodejs20.x", "index.handler", {"index.mjs": "export const handler = async () => ({});"}),
        ("nodejs22.x", "src/index.handler", {"src/index.cjs": "exports.handler = async () => ({});"}),
        ("java21", "com.example.Handler::handleRequest", {"lib/app.jar": b"PK"}),
        ("provided.al2023", "bootstrap", {"bootstrap": "#!/bin/sh\n"}),
    ],
)
def test_the_handler_check_follows_the_runtime(deployer, team, runtime, handler, files):
    app = AppFactory(team=team, runtime=runtime, handler=handler)
    assert upload(deployer, app, make_zip(files)).status_code == 201


def test_a_node_zip_without_its_handler_is_refused(deployer, team):
    app = AppFactory(team=team, runtime="nodejs20.x", handler="index.handler")
    response = upload(deployer, app, make_zip({"app.py": HANDLER}))
    assert response.status_code == 400 and response.json()["code"] == "handler_missing"


def test_a_sha256_that_does_not_match_is_refused(deployer, app):
    content = make_zip({"app.py": HANDLER})
    response = upload(deployer, app, content, sha256="0" * 64)
    assert response.status_code == 400
    assert response.json()["code"] == "checksum_mismatch"
    assert not Artifact.objects.exists()

    ok = upload(deployer, app, content, sha256=hashlib.sha256(content).hexdigest().upper())
    assert ok.status_code == 201


def test_a_zip_over_the_zipped_limit_is_413(deployer, app, monkeypatch):
    monkeypatch.setattr(artifacts, "MAX_ZIPPED_BYTES", 2000)
    content = make_zip({"app.py": HANDLER, "blob.bin": os.urandom(5000)})
    response = upload(deployer, app, content)
    assert response.status_code == 413
    assert response.json()["code"] == "artifact_too_large"
    assert not Artifact.objects.exists()


def test_a_declared_body_far_over_the_limit_is_refused_before_reading(deployer, app, monkeypatch):
    monkeypatch.setattr(artifacts, "MAX_ZIPPED_BYTES", 1000)
    content = make_zip({"app.py": HANDLER, "blob.bin": os.urandom(200_000)})
    response = upload(deployer, app, content)
    assert response.status_code == 413 and response.json()["code"] == "artifact_too_large"


def test_a_zip_over_the_unzipped_limit_is_413(deployer, app, monkeypatch):
    monkeypatch.setattr(artifacts, "MAX_UNZIPPED_BYTES", 10_000)
    # Zeros compress to almost nothing: the zip is small, what it unpacks to is not.
    content = make_zip({"app.py": HANDLER, "zeros.bin": b"\0" * 20_000})
    assert len(content) < 2000
    response = upload(deployer, app, content)
    assert response.status_code == 413
    assert response.json()["code"] == "artifact_too_large"
    assert "unpacks" in response.json()["detail"]


def test_an_upload_without_a_file_is_a_400_json_answer(deployer, app):
    response = deployer.post(f"/api/v1/apps/{app.slug}/artifacts/", {}, format="multipart")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and "file" in response.json()["fields"]


def test_viewer_cannot_upload_artifacts(api_for, team, app):
    response = upload(api_for(team, role=Role.VIEWER), app, make_zip({"app.py": HANDLER}))
    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert not Artifact.objects.exists()


def test_another_teams_app_is_404(api_for, other_team, app):
    response = upload(api_for(other_team, role=Role.ADMIN), app, make_zip({"app.py": HANDLER}))
    assert response.status_code == 404
    assert not Artifact.objects.exists()


def test_an_unauthenticated_upload_is_401(anon_api, app):
    response = upload(anon_api, app, make_zip({"app.py": HANDLER}))
    assert response.status_code == 401


def test_the_schema_documents_the_multipart_upload(deployer):
    schema = deployer.get("/api/schema/", {"format": "json"}).json()
    post = schema["paths"]["/api/v1/apps/{app}/artifacts/"]["post"]
    assert "multipart/form-data" in post["requestBody"]["content"]
    assert {"200", "201", "413"} <= set(post["responses"])


def test_s3_storage_keeps_the_zip_in_the_central_bucket_and_downloads_it_once(app, settings, aws, tmp_path):
    settings.ARTIFACT_STORAGE = "s3"
    settings.ARTIFACT_BUCKET = "central-artifacts"
    content = make_zip({"app.py": HANDLER, "unique.txt": os.urandom(16)})

    artifact = artifacts.store_artifact(app=app, fileobj=io.BytesIO(content))

    s3 = boto3.client("s3", region_name="us-east-1", endpoint_url=aws.url)
    stored = s3.get_object(Bucket="central-artifacts", Key=artifact.storage_key)
    assert stored["Body"].read() == content
    assert stored["Metadata"]["sha256"] == artifact.sha256
    assert not artifacts.local_path(artifact).exists()
    path = artifacts.artifact_path(artifact)
    assert path.read_bytes() == content
    # The second time it comes from the cache, even when S3 has lost it.
    s3.delete_object(Bucket="central-artifacts", Key=artifact.storage_key)
    assert artifacts.artifact_path(artifact) == path
    # The same bytes uploaded again put the missing object back.
    again = artifacts.store_artifact(app=app, fileobj=io.BytesIO(content))
    assert again.pk == artifact.pk and again.deduplicated
    assert s3.get_object(Bucket="central-artifacts", Key=artifact.storage_key)["Body"].read() == content


def test_a_zip_missing_from_local_storage_is_reported(app):
    content = make_zip({"app.py": HANDLER, "unique.txt": os.urandom(16)})
    artifact = artifacts.store_artifact(app=app, fileobj=io.BytesIO(content))
    artifacts.local_path(artifact).unlink()
    with pytest.raises(artifacts.ArtifactUnavailable):
        artifacts.artifact_path(artifact)
