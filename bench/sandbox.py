"""What the build sandbox adds to a build: the build command step of 20 builds of a no-op command
(``true``), run as builds ran before the sandbox (``bash -c`` on the worker, ``run_streaming``) and
in the sandbox with network off and with network on (the default: the proxy's forwarder starts
with the command), interleaved in one run. Prints the median and p90 wall time and the CPU time per
build of this process and of its children (bwrap and everything in the sandbox). Target: the
sandbox adds <= 150 ms to the median (network on, the default). ``--strict`` exits 1 on a miss.

    python bench/sandbox.py [builds] [--strict]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONTROLPLANE_DATA_DIR", tempfile.mkdtemp(prefix="controlplane-bench-"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django  # noqa: E402

django.setup()

from controlplane import sandbox  # noqa: E402
from deployments.builds import CHECKOUT, DEFAULT_PATH  # noqa: E402
from deployments.gitutil import run_streaming  # noqa: E402

TARGET_MS = 150.0
ENV = {"PATH": DEFAULT_PATH, "HOME": sandbox.INSIDE_HOME, "LANG": "C.UTF-8", "CI": "true"}
LIMITS = sandbox.Limits(wall_seconds=600, cpu_seconds=600, memory_bytes=4096 << 20, processes=1024,
                        disk_bytes=8192 << 20)  # fmt: skip


def on_host(checkout: Path) -> None:
    result = run_streaming(
        ["bash", "-c", "true"], cwd=checkout, env={**ENV, "HOME": str(checkout)}, timeout=600,
        on_line=lambda line: None,
    )  # fmt: skip
    assert result.ok


def in_sandbox(checkout: Path, network: str) -> None:
    result = sandbox.run(
        ["bash", "-c", "true"], cwd=CHECKOUT, env=ENV, writable=[(checkout, CHECKOUT)], network=network,
        limits=LIMITS, on_line=lambda line: None,
    )  # fmt: skip
    assert result.ok, result


def measure(fn) -> tuple[float, float, float]:
    """Wall ms, this process's CPU ms, children's CPU ms of one call."""
    self0, kids0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    fn()
    wall = (time.perf_counter() - started) * 1000
    self1, kids1 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_self = (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime) * 1000
    cpu_kids = (kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime) * 1000
    return wall, cpu_self, cpu_kids


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("builds", type=int, nargs="?", default=20)
    parser.add_argument("--strict", action="store_true")
    parser.add_argument("--quick", action="store_true", help="5 builds")
    args = parser.parse_args()
    if args.quick:
        args.builds = min(args.builds, 5)
    problems = sandbox.missing()
    if problems:
        print("The sandbox cannot run here:", *problems, sep="\n  ")
        return 1
    checkout = sandbox.workdir("bench-")
    (checkout / "app.py").write_text("def handler(event, context):\n    return {}\n")
    variants = {
        "host (no sandbox)": lambda: on_host(checkout),
        "sandbox, network off": lambda: in_sandbox(checkout, "off"),
        "sandbox, network on": lambda: in_sandbox(checkout, "public"),
    }
    for fn in variants.values():  # warm caches (page cache, the missing() probe)
        fn()
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    for _ in range(args.builds):
        for name, fn in variants.items():
            results[name].append(measure(fn))

    print(f"{args.builds} builds of a no-op build command, each variant interleaved with the others")
    print(f"{'variant':<24} {'wall median':>12} {'wall p90':>10} {'CPU worker':>11} {'CPU children':>13}")
    medians = {}
    for name, rows in results.items():
        walls = sorted(r[0] for r in rows)
        medians[name] = statistics.median(walls)
        p90 = walls[min(len(walls) - 1, int(len(walls) * 0.9))]
        cpu_self = statistics.median(r[1] for r in rows)
        cpu_kids = statistics.median(r[2] for r in rows)
        print(f"{name:<24} {medians[name]:>9.1f} ms {p90:>7.1f} ms {cpu_self:>8.1f} ms {cpu_kids:>10.1f} ms")
    base = medians["host (no sandbox)"]
    ok = True
    for name in ("sandbox, network off", "sandbox, network on"):
        added = medians[name] - base
        print(f"{name}: adds {added:.1f} ms to the median build (target <= {TARGET_MS:.0f} ms)")
        ok = ok and added <= TARGET_MS
    print("PASS" if ok else "FAIL")
    sandbox._remove(checkout)
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    raise SystemExit(main())
