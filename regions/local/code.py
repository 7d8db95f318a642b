"""Each version's code, unpacked once into the cache folder (versions are immutable)."""

from __future__ import annotations

import io
import logging
import os
import shutil
import stat
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

log = logging.getLogger("regions.local")


class UnsafeArchive(Exception):
    """The zip cannot be unpacked safely (or is no zip)."""


def safe_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    """Every member of ``archive``; raises UnsafeArchive for an absolute path, a ``..`` component,
    a drive letter or a symbolic link: none of them may land outside the folder it is unpacked in."""
    members = []
    for info in archive.infolist():
        name = info.filename.replace("\\", "/")
        parts = PurePosixPath(name).parts
        if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
            raise UnsafeArchive(f"zip entry {info.filename!r} points outside the function's folder")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchive(f"zip entry {info.filename!r} is a symbolic link")
        members.append(info)
    return members


def unpack(zip_bytes: bytes, target: Path) -> Path:
    """Unpack ``zip_bytes`` into ``target`` (made atomically: a half-unpacked folder is never seen).
    Returns ``target``; raises UnsafeArchive."""
    if target.is_dir():
        return target
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except zipfile.BadZipFile as exc:
        raise UnsafeArchive(f"the code is not a zip: {exc}") from exc
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".unpack-", dir=target.parent))
    os.chmod(scratch, 0o755)  # noqa: S103 - code, not secrets: the sandboxes' uids must read it
    try:
        root = scratch.resolve()
        for info in safe_members(archive):
            dest = (scratch / info.filename).resolve()
            if root not in dest.parents and dest != root:
                raise UnsafeArchive(f"zip entry {info.filename!r} points outside the function's folder")
            if info.is_dir():
                dest.mkdir(mode=0o755, parents=True, exist_ok=True)
                continue
            dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            with archive.open(info) as src, open(dest, "wb") as out:
                shutil.copyfileobj(src, out)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(dest, (mode | 0o444) & 0o755 if mode else 0o644)
        try:
            scratch.rename(target)
        except OSError:  # another unpack of the same version won the race
            shutil.rmtree(scratch, ignore_errors=True)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return target
