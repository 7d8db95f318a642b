"""What checking an artifact costs now that the unzipped size is counted by inflating every entry
(not read from the zip's headers): an honest zip of the size Lambda allows, and the zip bomb the
check refuses (1.1 GB of zeros in about 1 MB of zip, declaring 1 KB). Wall and CPU time per check,
and the peak memory the check allocates.

    python bench/artifact_check.py [--unzipped-mb 200] [--files 20000] [--bomb-mb 1100]

Target: an honest artifact near Lambda's limits (~50 MB zipped, ~180 MB unzipped, 20,000 files)
is checked in about 2 s of CPU; the bomb is refused after inflating at most 200 x its compressed
size (about 0.6 s of CPU); neither allocates more than ~15 MB (the entries' list, one chunk).
"""

from __future__ import annotations

import argparse
import os
import random
import struct
import sys
import tempfile
import time
import tracemalloc
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")

import django  # noqa: E402

django.setup()

from deployments import artifacts  # noqa: E402

MB = 1024 * 1024
WORDS = [
    "function", "return", "const", "export", "import", "await", "module", "require", "handler",
    "request", "response", "status", "headers", "body", "JSON", "parse", "stringify", "error",
]  # fmt: skip


def honest_zip(path: Path, *, unzipped_mb: int, files: int) -> None:
    """``files`` source-like files (compressing ~4:1), ``unzipped_mb`` in all, like node_modules."""
    rng = random.Random(7)
    per_file = unzipped_mb * MB // files
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("index.js", "exports.handler = async () => ({statusCode: 200});\n")
        for i in range(files):
            text = " ".join(rng.choice(WORDS) + str(rng.randrange(40)) for _ in range(per_file // 10))
            zf.writestr(f"node_modules/pkg{i // 50}/lib/file{i}.js", text.encode()[:per_file])


def bomb_zip(path: Path, *, mb: int) -> None:
    """``mb`` MB of zeros in one entry whose headers then say 1 KB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("index.js", "exports.handler = async () => ({statusCode: 200});\n")
        with zf.open("data.bin", "w", force_zip64=False) as out:
            zeros = bytes(MB)
            for _ in range(mb):
                out.write(zeros)
    data = bytearray(path.read_bytes())
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = data.find(signature)
        while at >= 0:
            if data[at + name_at : at + name_at + 8] == b"data.bin":
                struct.pack_into("<L", data, at + size_at, 1024)
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))


def check(path: Path) -> str:
    try:
        size = artifacts.check_zip(path, runtime="nodejs22.x", handler="index.handler")
    except (artifacts.ArtifactTooLarge, artifacts.InvalidArtifact) as err:
        return f"refused: {err.code} ({err.extra.get('limit')})"
    return f"accepted, {size / MB:.0f} MB"


def measure(path: Path) -> tuple[float, float, float, str]:
    """Wall and CPU seconds of one check, then the peak it allocates (a second run, traced)."""
    wall, cpu = time.perf_counter(), time.process_time()
    outcome = check(path)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tracemalloc.start()
    check(path)
    peak = tracemalloc.get_traced_memory()[1] / MB
    tracemalloc.stop()
    return wall, cpu, peak, outcome


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unzipped-mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--bomb-mb", type=int, default=1100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        honest, bomb = Path(tmp) / "honest.zip", Path(tmp) / "bomb.zip"
        honest_zip(honest, unzipped_mb=args.unzipped_mb, files=args.files)
        bomb_zip(bomb, mb=args.bomb_mb)
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        for name, path in (("honest", honest), ("bomb", bomb)):
            wall, cpu, peak, outcome = measure(path)
            print(
                f"{name:7} {path.stat().st_size / MB:6.1f} MB zipped: {outcome}; "
                f"wall {wall:.2f} s, CPU {cpu:.2f} s, peak allocated {peak:.1f} MB"
            )


if __name__ == "__main__":
    main()
