"""Zipping a directory for upload, honouring ``.controlplaneignore`` (gitignore-like patterns)."""

from __future__ import annotations

import fnmatch
import io
import os
import zipfile
import zlib
from pathlib import Path

from . import exits
from .exits import CliError

IGNORE_FILE = ".controlplaneignore"
# Never shipped, whatever the ignore file says.
ALWAYS_IGNORED = (".git/", ".hg/", ".svn/", IGNORE_FILE)
# Lambda's limits for a function's code (the server checks them again).
MAX_ZIPPED_BYTES = 50 * 1024 * 1024
MAX_UNZIPPED_BYTES = 250 * 1024 * 1024
# A fixed timestamp: the same files make the same bytes, so the server deduplicates the upload.
ZIP_DATE = (1980, 1, 1, 0, 0, 0)
# zlib's fastest level: about four times faster than its default for some 15% more bytes, which
# on a CI runner's link cost less time to send than the default level costs to compute.
COMPRESS_LEVEL = 1
# Files that are compressed already are stored as they are: deflating them again costs as much
# CPU as any file and saves nothing. Known by name, or by a sample that does not shrink.
COMPRESSED_SUFFIXES = frozenset(
    ".zip .jar .whl .egg .gz .tgz .bz2 .xz .zst .br .7z .png .jpg .jpeg .gif .webp .avif .woff .woff2"
    " .mp3 .mp4 .webm".split()
)
SAMPLE_BYTES = 64 * 1024


def compress_type(name: str, data: bytes) -> int:
    """ZIP_STORED for a file that does not shrink (by its suffix, or a sample of a big one)."""
    if Path(name).suffix.lower() in COMPRESSED_SUFFIXES:
        return zipfile.ZIP_STORED
    if len(data) > SAMPLE_BYTES:
        sample = data[:SAMPLE_BYTES]
        if len(zlib.compress(sample, COMPRESS_LEVEL)) > 0.97 * len(sample):
            return zipfile.ZIP_STORED
    return zipfile.ZIP_DEFLATED


class IgnoreRules:
    """gitignore's common subset: ``#`` comments, globs, ``dir/`` for directories only, a
    leading ``/`` anchoring to the root, ``**`` across directories, ``!`` to re-include."""

    def __init__(self, lines: list[str]):
        self.rules: list[tuple[bool, bool, bool, str]] = []  # (negate, dir_only, anchored, glob)
        for raw in lines:
            line = raw.rstrip("\n").rstrip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            line = line[1:] if negate else line
            dir_only = line.endswith("/")
            line = line.rstrip("/")
            anchored = line.startswith("/") or "/" in line
            self.rules.append((negate, dir_only, anchored, line.lstrip("/")))

    @classmethod
    def for_root(cls, root: Path) -> IgnoreRules:
        path = root / IGNORE_FILE
        lines = list(ALWAYS_IGNORED)
        if path.is_file():
            lines += path.read_text(errors="replace").splitlines()
        return cls(lines)

    def ignored(self, rel: str, *, is_dir: bool) -> bool:
        result = False
        for negate, dir_only, anchored, glob in self.rules:
            if dir_only and not is_dir:
                continue
            if anchored:
                hit = fnmatch.fnmatchcase(rel, glob) or (
                    "**" in glob and fnmatch.fnmatchcase(rel, glob.replace("**/", ""))
                )
            else:
                hit = fnmatch.fnmatchcase(rel.rsplit("/", 1)[-1], glob)
            if hit:
                result = not negate
        return result


def zip_directory(root: Path) -> bytes:
    """The zip of ``root``'s files (paths relative to it, sorted, fixed timestamps), without the
    ignored ones, compressed ones stored as they are. Raises CliError(REFUSED) past Lambda's size limits."""
    rules = IgnoreRules.for_root(root)
    buf = io.BytesIO()
    total = 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for dirpath, dirnames, filenames in os.walk(root):
            base = Path(dirpath).relative_to(root).as_posix()
            base = "" if base == "." else base + "/"
            dirnames[:] = sorted(d for d in dirnames if not rules.ignored(base + d, is_dir=True))
            for name in sorted(filenames):
                rel = base + name
                full = Path(dirpath) / name
                if rules.ignored(rel, is_dir=False) or not full.is_file():
                    continue
                stat = full.stat()
                total += stat.st_size
                if total > MAX_UNZIPPED_BYTES:
                    raise CliError(
                        exits.REFUSED, f"{root} holds over {MAX_UNZIPPED_BYTES // 2**20} MB, Lambda's limit"
                    )
                data = full.read_bytes()
                info = zipfile.ZipInfo(rel, ZIP_DATE)
                info.compress_type = compress_type(name, data)
                info.external_attr = ((stat.st_mode & 0o777) | 0o100000) << 16
                zf.writestr(info, data, compresslevel=COMPRESS_LEVEL)
    return buf.getvalue()


def load(path: str) -> tuple[bytes, str]:
    """The zip to upload for ``path`` (a directory or a .zip) and a name for it. Raises CliError:
    2 for a path that does not exist or is not a zip, 5 for a zip over Lambda's limits."""
    target = Path(path)
    if not target.exists():
        raise CliError(exits.USAGE, f"{path}: no such file or directory")
    if target.is_dir():
        data = zip_directory(target)
        name = (target.resolve().name or "app") + ".zip"
    else:
        if not zipfile.is_zipfile(target):
            raise CliError(exits.USAGE, f"{path}: not a zip file (give a directory or a .zip)")
        data = target.read_bytes()
        name = target.name
    if len(data) > MAX_ZIPPED_BYTES:
        raise CliError(
            exits.REFUSED,
            f"{path}: the zip is {len(data) / 2**20:.1f} MB, over Lambda's limit of "
            f"{MAX_ZIPPED_BYTES // 2**20} MB",
        )
    return data, name
