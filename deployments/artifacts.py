"""Artifacts: immutable zips, checked against Lambda's rules, content-addressed by sha256 and
deduplicated per app. Stored under the data folder (``ARTIFACT_STORAGE=local``) or in one central
S3 bucket (``s3``); deploys copy them to each region's own bucket from :func:`artifact_path`."""

from __future__ import annotations

import copy
import hashlib
import os
import posixpath
import re
import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction

from controlplane import audit
from controlplane.errors import DomainError

from .choices import ArtifactSource
from .models import App, Artifact

MB = 1024 * 1024
# Lambda's limits for a function's code: the zip as uploaded, and everything in it unpacked.
MAX_ZIPPED_BYTES = 50 * MB
MAX_UNZIPPED_BYTES = 250 * MB
# Lambda sets no limit on files or on how well they compress; these two keep a crafted zip from costing
# the server memory (an object per entry) or CPU (inflating a bomb). A 250 MB node_modules holds some
# tens of thousands of files; source, bundles and assets rarely compress beyond 20:1, deflate at most
# about 1000:1 (long runs of one byte), so an entry inflating past RATIO_FLOOR at over MAX_RATIO is
# taken for a bomb.
MAX_ENTRIES = 50_000
MAX_RATIO = 200
RATIO_FLOOR = 1 * MB
CHUNK = 1 * MB
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


class InvalidArtifact(DomainError):
    code = "invalid_artifact"
    status_code = 400


class UnsafeArtifact(DomainError):
    """An entry would land outside the folder it is unpacked in (zip slip)."""

    code = "unsafe_artifact"
    status_code = 400


class ArtifactTooLarge(DomainError):
    code = "artifact_too_large"
    status_code = 413


class HandlerMissing(DomainError):
    code = "handler_missing"
    status_code = 400


class ChecksumMismatch(DomainError):
    code = "checksum_mismatch"
    status_code = 400


class ArtifactUnavailable(DomainError):
    """The row exists but its zip is gone from storage (deleted by hand, or another storage)."""

    code = "artifact_unavailable"
    status_code = 409


# --- Storing ---------------------------------------------------------------------------------------


def store_artifact(
    *,
    app: App,
    fileobj: BinaryIO,
    expected_sha256: str = "",
    source: str = ArtifactSource.UPLOAD,
    tree_sha: str = "",
    principal=None,
    request=None,
) -> Artifact:
    """Check the zip in ``fileobj`` and store it for ``app``; returns its Artifact.

    The same bytes for the same app return the existing row (and store nothing twice); the
    returned instance's ``deduplicated`` attribute says which happened. Raises ArtifactTooLarge
    (over 50 MB zipped, 250 MB really inflated, MAX_ENTRIES entries or MAX_RATIO for an entry),
    InvalidArtifact (not a zip, empty, encrypted, a method other than deflate, an entry holding other
    bytes than its header declares),
    UnsafeArtifact (absolute or ``..`` paths, symlinks pointing out), HandlerMissing (the handler's
    module is not in the zip) and ChecksumMismatch (``expected_sha256`` given and different).
    A new upload by a ``principal`` (the API's caller) is recorded in the audit log.
    """
    expected = (expected_sha256 or "").strip().lower()
    spool_dir = Path(settings.DATA_DIR) / "tmp"
    spool_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="artifact-", suffix=".zip", dir=spool_dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _spool(fileobj, out)
        if expected and expected != digest:
            raise ChecksumMismatch(
                f"The upload's sha256 is {digest}, not the {expected} you sent: it was changed or cut "
                "short on the way.",
                fields={"sha256": ["Does not match the uploaded file."]},
            )
        unzipped = check_zip(path, runtime=app.runtime, handler=app.handler)
        existing = Artifact.objects.filter(app=app, sha256=digest).first()
        if existing is not None:
            return _reuse(existing, path, tree_sha=tree_sha)
        _save(app, digest, path)
        try:
            with transaction.atomic():
                artifact = Artifact.objects.create(
                    app=app,
                    sha256=digest,
                    size=size,
                    unzipped_size=unzipped,
                    source=source,
                    tree_sha=tree_sha[:64],
                )
                if principal is not None:
                    audit.record(
                        team=app.team,
                        principal=principal,
                        action="artifact.upload",
                        obj=artifact,
                        changes={"sha256": digest, "size": size},
                        request=request,
                    )
        except IntegrityError:
            # The same bytes were uploaded concurrently; that row stands (the stored file is the same).
            return _reuse(Artifact.objects.get(app=app, sha256=digest), path, tree_sha=tree_sha)
        artifact.deduplicated = False
        return artifact
    finally:
        path.unlink(missing_ok=True)


def _reuse(artifact: Artifact, path: Path, *, tree_sha: str) -> Artifact:
    if not is_stored(artifact):
        _save(artifact.app, artifact.sha256, path)  # storage lost it: the upload heals it
    if tree_sha and not artifact.tree_sha:
        # An upload later built from git byte for byte: remember the tree so the next build reuses it.
        Artifact.objects.filter(pk=artifact.pk, tree_sha="").update(tree_sha=tree_sha[:64])
        artifact.tree_sha = tree_sha[:64]
    artifact.deduplicated = True
    return artifact


def _spool(fileobj: BinaryIO, out: BinaryIO) -> tuple[str, int]:
    """Copy ``fileobj`` to ``out`` in chunks; returns (sha256 hex, size). Stops reading as soon as
    the zip limit is passed (raises ArtifactTooLarge)."""
    hasher = hashlib.sha256()
    size = 0
    while True:
        chunk = fileobj.read(CHUNK)
        if not chunk:
            break
        size += len(chunk)
        if size > MAX_ZIPPED_BYTES:
            raise ArtifactTooLarge(
                f"The zip is over Lambda's limit of {_mb(MAX_ZIPPED_BYTES)} for a function's code."
            )
        hasher.update(chunk)
        out.write(chunk)
    return hasher.hexdigest(), size


def _mb(n: int) -> str:
    return f"{n / MB:g} MB"


# --- Checking --------------------------------------------------------------------------------------


def check_zip(path: Path, *, runtime: str, handler: str) -> int:
    """Check the zip at ``path`` against Lambda's rules and the app's handler; returns its unzipped
    size, counted by inflating every entry as a stream (nothing is written, at most CHUNK is held):
    the sizes a zip declares in its headers are not trusted. Raises as store_artifact does, and
    ArtifactTooLarge for more than MAX_ENTRIES entries or an entry inflating beyond MAX_RATIO."""
    names, total = inspect_zip(path)
    candidates = handler_module_files(runtime=runtime, handler=handler)
    if candidates and not names.intersection(candidates):
        raise HandlerMissing(
            f"The handler '{handler}' needs {' or '.join(candidates)} at the top of the zip, and the zip "
            "has none of them. Zip the contents of your build folder, not the folder itself.",
            fields={"file": [f"No {' or '.join(candidates)} in the zip."]},
        )
    return total


def inspect_zip(path: Path) -> tuple[set[str], int]:
    """The entry names of the zip at ``path`` and the bytes they really inflate to, after checking
    every entry (paths, symlinks, encryption, method, sizes, CRCs, the caps). Raises InvalidArtifact,
    UnsafeArtifact or ArtifactTooLarge."""
    _check_entry_count(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError):
        raise InvalidArtifact("The file is not a zip archive.")
    with archive:
        infos = archive.infolist()
        if not infos:
            raise InvalidArtifact("The zip archive is empty.")
        if len(infos) > MAX_ENTRIES:
            raise _too_many_entries()
        names: set[str] = set()
        total = 0
        for info in infos:
            name = info.filename
            _check_entry_path(name)
            if info.flag_bits & 0x1:
                raise InvalidArtifact(f"'{name}' is encrypted; Lambda cannot unpack encrypted entries.")
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                raise InvalidArtifact(
                    f"'{name[:200]}' is compressed with method {info.compress_type}; "
                    "zip it with deflate (the default of every zip tool) or store it uncompressed."
                )
            if _is_symlink(info):
                _check_symlink(archive, info)
            total += _inflated_size(archive, info, budget=MAX_UNZIPPED_BYTES - total)
            names.add(name.removeprefix("./"))
    return names, total


def _inflated_size(archive: zipfile.ZipFile, info: zipfile.ZipInfo, *, budget: int) -> int:
    """The bytes ``info`` really inflates to, read in CHUNKs and never kept. Raises ArtifactTooLarge
    as soon as the count passes ``budget`` (what is left of MAX_UNZIPPED_BYTES) or the ratio cap,
    and InvalidArtifact when the entry holds other bytes than its header declares (size or CRC)."""
    name = info.filename[:200]
    limit = min(budget, max(RATIO_FLOOR, MAX_RATIO * info.compress_size))
    # zipfile stops an entry at the size its header declares (and checks the CRC there): a copy
    # declaring one byte past the limit, without a CRC, lets the count see what an unzipper would
    # really produce; the CRC is checked here instead.
    probe = copy.copy(info)
    probe.file_size = limit + 1
    del probe.CRC
    size = 0
    crc = 0
    try:
        with archive.open(probe) as stream:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > limit:
                    break
                crc = zlib.crc32(chunk, crc)
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError) as err:
        raise InvalidArtifact(f"The zip entry '{name}' is damaged ({err}).")
    if size > budget:
        raise ArtifactTooLarge(
            f"The zip unpacks to more than Lambda's limit of {_mb(MAX_UNZIPPED_BYTES)} "
            f"(counted while inflating; its headers declare {_declared_total(archive) / MB:.1f} MB).",
            extra={"limit": "unzipped_bytes", "max": MAX_UNZIPPED_BYTES},
        )
    if size > limit:
        raise ArtifactTooLarge(
            f"The zip entry '{name}' inflates to over {MAX_RATIO} times its compressed size, the "
            "limit for one entry: it looks like a zip bomb.",
            extra={"limit": "compression_ratio", "max": MAX_RATIO},
        )
    if size != info.file_size or crc != info.CRC:
        raise InvalidArtifact(
            f"The zip entry '{name}' declares {info.file_size} bytes but holds {size}"
            + (" with another checksum." if size == info.file_size else "."),
            extra={"limit": "declared_sizes"},
        )
    return size


def _declared_total(archive: zipfile.ZipFile) -> int:
    return sum(info.file_size for info in archive.infolist())


def _too_many_entries() -> ArtifactTooLarge:
    return ArtifactTooLarge(
        f"The zip holds more than {MAX_ENTRIES:,} entries, the limit for one artifact.",
        extra={"limit": "entries", "max": MAX_ENTRIES},
    )


_EOCD = struct.Struct("<4s4H2LH")
_ZIP64_LOCATOR_SIZE = 20
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_CENTRAL_ENTRY_SIZE = 46


def _check_entry_count(path: Path) -> None:
    """Raise ArtifactTooLarge when the zip's central directory holds more than MAX_ENTRIES entries,
    walking it record by record before zipfile builds an object for each. Anything unreadable is
    left to zipfile to refuse."""
    with open(path, "rb") as fp:
        end = fp.seek(0, os.SEEK_END)
        tail_start = max(0, end - (_EOCD.size + 0xFFFF))
        fp.seek(tail_start)
        tail = fp.read()
        at = tail.rfind(b"PK\x05\x06")
        if at < 0 or len(tail) - at < _EOCD.size:
            return
        _sig, _disk, _cd_disk, _here, count, cd_size, _offset, _comment = _EOCD.unpack_from(tail, at)
        cd_end = tail_start + at
        if count == 0xFFFF or cd_size == 0xFFFFFFFF:
            record_at = cd_end - _ZIP64_LOCATOR_SIZE - _ZIP64_EOCD.size
            if record_at < 0:
                return
            fp.seek(record_at)
            record = fp.read(_ZIP64_EOCD.size)
            if len(record) < _ZIP64_EOCD.size or record[:4] != b"PK\x06\x06":
                return
            count, cd_size = _ZIP64_EOCD.unpack(record)[7:9]
            cd_end = record_at
        if count > MAX_ENTRIES:
            raise _too_many_entries()
        if cd_size > cd_end:
            return
        fp.seek(cd_end - cd_size)
        seen = 0
        while fp.tell() < cd_end:
            header = fp.read(_CENTRAL_ENTRY_SIZE)
            if len(header) < _CENTRAL_ENTRY_SIZE or header[:4] != b"PK\x01\x02":
                return
            name_len, extra_len, comment_len = struct.unpack_from("<3H", header, 28)
            fp.seek(name_len + extra_len + comment_len, os.SEEK_CUR)
            seen += 1
            if seen > MAX_ENTRIES:
                raise _too_many_entries()


def handler_module_files(*, runtime: str, handler: str) -> list[str]:
    """The files one of which must be in the zip for ``handler`` on ``runtime`` (``app.handler`` on
    Python: ``app.py`` or ``app/__init__.py``; ``index.handler`` on Node.js: ``index.js``,
    ``index.mjs`` or ``index.cjs``); [] for runtimes not checked (Java, .NET, Ruby, custom)."""
    module = handler.rsplit(".", 1)[0] if "." in handler else ""
    if not module:
        return []
    if runtime.startswith("python"):
        base = module.replace(".", "/")
        return [f"{base}.py", f"{base}/__init__.py"]
    if runtime.startswith("nodejs"):
        return [f"{module}.js", f"{module}.mjs", f"{module}.cjs"]
    return []


def _segments(name: str) -> list[str]:
    # Lambda unpacks on Linux, but zips made on Windows may use backslashes: treat both as separators.
    return name.replace("\\", "/").split("/")


def _check_entry_path(name: str) -> None:
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"^[a-zA-Z]:", normalized) or "\x00" in name:
        raise UnsafeArtifact(f"The zip holds an absolute path ('{name[:200]}').")
    if ".." in _segments(name):
        raise UnsafeArtifact(f"The zip holds a path that climbs out of its folder ('{name[:200]}').")


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _check_symlink(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    if info.file_size > 4096:
        raise InvalidArtifact(f"The symlink '{info.filename[:200]}' has an implausibly long target.")
    try:
        target = archive.read(info).decode("utf-8", "replace")
    except (zipfile.BadZipFile, zlib.error, OSError, ValueError, EOFError):
        raise InvalidArtifact(f"The zip entry '{info.filename[:200]}' is damaged.")
    target = target.replace("\\", "/")
    resolved = posixpath.normpath(posixpath.join(posixpath.dirname(info.filename.replace("\\", "/")), target))
    if target.startswith("/") or resolved == ".." or resolved.startswith("../"):
        raise UnsafeArtifact(
            f"The symlink '{info.filename[:200]}' points outside the zip ('{target[:200]}')."
        )


# --- Storage ---------------------------------------------------------------------------------------


def local_path(artifact: Artifact) -> Path:
    """Where ``ARTIFACT_STORAGE=local`` keeps the artifact: ``ARTIFACT_DIR/<team>/<app>/<sha256>.zip``."""
    return _local_path(artifact.app, artifact.sha256)


def _local_path(app: App, sha256: str) -> Path:
    return Path(settings.ARTIFACT_DIR) / app.team.slug / app.slug / f"{sha256}.zip"


def _cache_path(artifact: Artifact) -> Path:
    app = artifact.app
    return Path(settings.DATA_DIR) / "artifact-cache" / app.team.slug / app.slug / f"{artifact.sha256}.zip"


def _storage_key(app: App, sha256: str) -> str:
    return Artifact(app=app, sha256=sha256).storage_key


def central_region() -> str:
    """The region of the central artifact bucket (``ARTIFACT_STORAGE=s3``): ``AWS_DEFAULT_REGION``
    when set, so the answer does not change as regions are enabled, else the first enabled region."""
    configured = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION")
    if configured:
        return configured
    from regions.models import Region

    first = Region.objects.filter(enabled=True).order_by("code").values_list("code", flat=True).first()
    return first or "us-east-1"


def _s3_mode() -> bool:
    return settings.ARTIFACT_STORAGE == "s3"


def _save(app: App, sha256: str, path: Path) -> None:
    if _s3_mode():
        from regions.aws import s3
        from regions.aws.session import AwsError

        region, bucket, key = central_region(), settings.ARTIFACT_BUCKET, _storage_key(app, sha256)
        try:
            s3.upload_file(region, bucket, key, str(path), sha256_hex=sha256)
        except AwsError as err:
            if err.code not in ("NoSuchBucket", "NotFound"):
                raise
            s3.ensure_bucket(region, bucket)
            s3.upload_file(region, bucket, key, str(path), sha256_hex=sha256)
        return
    _place(path, _local_path(app, sha256))


def _place(source: Path, destination: Path) -> None:
    """Copy ``source`` to ``destination`` atomically (a reader never sees half a file)."""
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=destination.parent)
    try:
        with os.fdopen(fd, "wb") as out, source.open("rb") as src:
            while chunk := src.read(CHUNK):
                out.write(chunk)
        os.replace(tmp, destination)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def is_stored(artifact: Artifact) -> bool:
    """True when the artifact's zip is in storage (the local folder or the central bucket)."""
    if local_path(artifact).exists():
        return True
    if _s3_mode():
        from regions.aws import s3

        return s3.object_exists(central_region(), settings.ARTIFACT_BUCKET, artifact.storage_key)
    return False


def artifact_path(artifact: Artifact) -> Path:
    """A local file holding the artifact's zip: the stored file itself, or (S3 storage) a copy
    downloaded once into a cache in the data folder and checked against its sha256.

    Raises ArtifactUnavailable when the zip is in no storage, AwsError when S3 fails."""
    local = local_path(artifact)
    if local.exists():
        return local
    if not _s3_mode():
        raise ArtifactUnavailable(f"The zip of artifact {artifact.pk} ({artifact.sha256[:12]}) is missing.")
    cached = _cache_path(artifact)
    if cached.exists():
        return cached
    from regions.aws import s3
    from regions.aws.session import AwsError

    try:
        data = s3.get_bytes(central_region(), settings.ARTIFACT_BUCKET, artifact.storage_key)
    except AwsError as err:
        if err.code not in ("NoSuchKey", "NotFound", "NoSuchBucket"):
            raise
        raise ArtifactUnavailable(
            f"The zip of artifact {artifact.pk} ({artifact.sha256[:12]}) is missing from "
            f"s3://{settings.ARTIFACT_BUCKET}."
        )
    if hashlib.sha256(data).hexdigest() != artifact.sha256:
        raise ArtifactUnavailable(
            f"The stored zip of artifact {artifact.pk} does not match its sha256 {artifact.sha256[:12]}."
        )
    cached.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=cached.parent)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    os.replace(tmp, cached)
    return cached
