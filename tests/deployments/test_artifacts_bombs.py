"""Zips that lie about their sizes: the artifact check counts the bytes it really inflates, with caps
on the total, on the entries and on the compression ratio, and never holds or writes what it inflates."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import tracemalloc
import zipfile
import zlib

import pytest

from controlplane.choices import Role
from deployments import artifacts, codebuild
from deployments.models import Artifact
from tests.factories import AppFactory

pytestmark = pytest.mark.django_db

HANDLER = b"def handler(event, context):\n    return {'statusCode': 200}\n"
MB = 1024 * 1024


def zip_with(entries: dict[str, bytes | int]) -> bytes:
    """A deflated zip; an int value is that many MB of zeros, written in chunks."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in entries.items():
            if isinstance(content, int):
                with zf.open(name, "w") as out:
                    zeros = bytes(MB)
                    for _ in range(content):
                        out.write(zeros)
            else:
                zf.writestr(name, content)
    return buf.getvalue()


def declare(content: bytes, name: str, *, size: int, crc: int | None = None) -> bytes:
    """``content`` with entry ``name``'s uncompressed size (and CRC) rewritten in both its local
    header and its central directory record, as a crafted zip would have them."""
    data = bytearray(content)
    encoded = name.encode()
    patched = 0
    for signature, crc_at, size_at, name_len_at, name_at in (
        (b"PK\x03\x04", 14, 22, 26, 30),
        (b"PK\x01\x02", 16, 24, 28, 46),
    ):
        at = data.find(signature)
        while at >= 0:
            (name_len,) = struct.unpack_from("<H", data, at + name_len_at)
            if bytes(data[at + name_at : at + name_at + name_len]) == encoded:
                struct.pack_into("<L", data, at + size_at, size)
                if crc is not None:
                    struct.pack_into("<L", data, at + crc_at, crc)
                patched += 1
            at = data.find(signature, at + 4)
    assert patched == 2, "the entry must be found in the local header and the central directory"
    return bytes(data)


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """About 120 KB of zip whose headers say its 'data.bin' is 1 KB; it inflates to 120 MB."""
    return declare(zip_with({"app.py": HANDLER, "data.bin": 120}), "data.bin", size=1024)


@pytest.fixture
def app(team):
    return AppFactory(team=team, slug="shop", runtime="python3.12", handler="app.handler")


@pytest.fixture
def deployer(api_for, team):
    return api_for(team, role=Role.DEPLOYER)


def upload(client, app, content: bytes):
    url = f"/api/v1/apps/{app.slug}/artifacts/"
    return client.post(url, {"file": io.BytesIO(content)}, format="multipart")


def test_the_lying_zip_reads_as_small_to_zipfile(bomb):
    # What the check used to trust: the headers sum to ~1 KB.
    with zipfile.ZipFile(io.BytesIO(bomb)) as archive:
        assert sum(info.file_size for info in archive.infolist()) < 2048
    assert len(bomb) < 1 * MB


def test_a_zip_under_declaring_its_sizes_is_refused_413_naming_the_limit(deployer, app, bomb, settings):
    response = upload(deployer, app, bomb)

    assert response.status_code == 413, response.json()
    body = response.json()
    # 120 MB out of 120 KB: the ratio cap stops it after 200 x 120 KB inflated, long before 120 MB.
    assert body["code"] == "artifact_too_large"
    assert body["limit"] == "compression_ratio" and body["max"] == 200
    assert "data.bin" in body["detail"] and "zip bomb" in body["detail"]
    assert not Artifact.objects.exists()
    assert not list((settings.DATA_DIR / "tmp").iterdir()), "the spooled upload is removed"
    assert not (settings.ARTIFACT_DIR / "acme" / "shop" / f"{hashlib.sha256(bomb).hexdigest()}.zip").exists()


def test_the_unzipped_cap_counts_real_bytes_not_declared_ones(deployer, app, monkeypatch):
    # Incompressible data, so no ratio is near its cap: 6 MB declaring 1 KB.
    monkeypatch.setattr(artifacts, "MAX_UNZIPPED_BYTES", 5 * MB)
    content = declare(zip_with({"app.py": HANDLER, "blob.bin": os.urandom(6 * MB)}), "blob.bin", size=1024)

    response = upload(deployer, app, content)

    assert response.status_code == 413, response.json()
    body = response.json()
    assert body["code"] == "artifact_too_large"
    assert body["limit"] == "unzipped_bytes" and body["max"] == 5 * MB
    assert "5 MB" in body["detail"] and "declare 0.0 MB" in body["detail"]


def test_inflating_the_bomb_holds_at_most_a_chunk_in_memory_and_stops_at_the_cap(bomb, tmp_path):
    path = tmp_path / "bomb.zip"
    path.write_bytes(bomb)
    before = {p.name for p in tmp_path.iterdir()}

    tracemalloc.start()
    try:
        with pytest.raises(artifacts.ArtifactTooLarge):
            artifacts.check_zip(path, runtime="python3.12", handler="app.handler")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < 8 * MB, f"peak {peak / MB:.1f} MB while inflating"
    assert {p.name for p in tmp_path.iterdir()} == before, "nothing is unpacked to disk"


def test_a_zip_over_declaring_nothing_but_holding_more_is_invalid(deployer, app):
    # 2,000 bytes declared as 1,000 (with the CRC of what Python would read): no limit is near, the
    # zip is still a lie and Lambda would unpack other bytes than were checked.
    real = b"x" * 2000
    content = declare(
        zip_with({"app.py": HANDLER, "notes.txt": real}), "notes.txt", size=1000, crc=zlib.crc32(real[:1000])
    )
    response = upload(deployer, app, content)

    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid_artifact" and body["limit"] == "declared_sizes"
    assert "declares 1000 bytes but holds 2000" in body["detail"]


def test_a_zip_with_a_wrong_checksum_is_invalid(deployer, app):
    content = declare(zip_with({"app.py": HANDLER, "notes.txt": b"hello"}), "notes.txt", size=5, crc=1234)
    response = upload(deployer, app, content)
    assert response.status_code == 400 and response.json()["code"] == "invalid_artifact"


def test_an_entry_compressed_beyond_the_ratio_cap_is_refused(deployer, app):
    # Declared honestly and far under 250 MB, but 20 MB of zeros deflate about 1000:1.
    response = upload(deployer, app, zip_with({"app.py": HANDLER, "zeros.bin": 20}))

    assert response.status_code == 413, response.json()
    body = response.json()
    assert body["code"] == "artifact_too_large" and body["limit"] == "compression_ratio"
    assert "zeros.bin" in body["detail"]


def test_small_entries_that_compress_well_are_accepted(deployer, app):
    # Under RATIO_FLOOR the ratio does not matter: a 500 KB file of one repeated line is fine.
    content = zip_with({"app.py": HANDLER, "fixtures.json": b'{"a": 1}\n' * 55_000})
    response = upload(deployer, app, content)
    assert response.status_code == 201, response.json()
    assert response.json()["unzipped_size"] == len(HANDLER) + 9 * 55_000


def test_a_zip_with_too_many_entries_is_refused(deployer, app, monkeypatch):
    monkeypatch.setattr(artifacts, "MAX_ENTRIES", 20)
    content = zip_with({"app.py": HANDLER, **{f"lib/m{i}.py": b"X = 1\n" for i in range(25)}})

    response = upload(deployer, app, content)

    assert response.status_code == 413, response.json()
    assert response.json()["limit"] == "entries" and response.json()["max"] == 20


def test_a_zip64_archive_over_the_default_entry_cap_is_refused(tmp_path):
    # Over 65,535 entries a zip needs zip64's end records: the walk reads those too.
    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("app.py", HANDLER)
        for i in range(65_600):
            zf.writestr(f"{i}", b"")
    with open(path, "rb") as fp:
        assert b"PK\x06\x06" in fp.read()[-200:], "the archive has a zip64 end record"

    with pytest.raises(artifacts.ArtifactTooLarge, match="more than 50,000 entries"):
        artifacts.check_zip(path, runtime="python3.12", handler="app.handler")


def test_a_zip_lying_about_its_entry_count_is_still_counted(app, monkeypatch, tmp_path):
    monkeypatch.setattr(artifacts, "MAX_ENTRIES", 20)
    content = bytearray(zip_with({"app.py": HANDLER, **{f"lib/m{i}.py": b"X = 1\n" for i in range(25)}}))
    eocd = content.rfind(b"PK\x05\x06")
    struct.pack_into("<2H", content, eocd + 8, 3, 3)  # the end record says 3 entries
    path = tmp_path / "a.zip"
    path.write_bytes(content)

    with pytest.raises(artifacts.ArtifactTooLarge, match="more than 20 entries"):
        artifacts.check_zip(path, runtime="python3.12", handler="app.handler")


def test_zip_entries_compressed_with_other_methods_are_refused(deployer, app):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_LZMA) as zf:
        zf.writestr("app.py", HANDLER)
    response = upload(deployer, app, buf.getvalue())
    assert response.status_code == 400 and response.json()["code"] == "invalid_artifact"
    assert "deflate" in response.json()["detail"]


def test_a_codebuild_output_that_lies_about_its_sizes_is_never_unpacked(bomb, tmp_path):
    archive = tmp_path / "output.zip"
    archive.write_bytes(bomb)
    destination = tmp_path / "unpacked"

    with pytest.raises(codebuild.CodeBuildFailed, match="zip bomb"):
        codebuild._unpack(archive, destination)
    assert not destination.exists()


def test_an_honest_zip_of_many_files_passes(app, tmp_path):
    files = {f"lib/m{i}.py": os.urandom(64).hex().encode() for i in range(300)}
    path = tmp_path / "ok.zip"
    path.write_bytes(zip_with({"app.py": HANDLER, **files}))
    assert artifacts.check_zip(path, runtime="python3.12", handler="app.handler") == len(HANDLER) + 300 * 128
