"""The local regions: what serving deployed code on one machine costs.

- warm latency: a hello handler through a regional endpoint, minus the same handler called
  in-process (target: added p50 <= 2 ms, p99 <= 10 ms), one request at a time on a kept-alive
  connection;
- throughput: requests per second with the local regions process and its workers pinned to one
  core (target >= 1,500/s), many connections from a client process on another core;
- cold start: the first request to a new Python version (target <= 300 ms);
- a warm worker's memory (target <= 30 MB RSS for the interpreter running the handler; the
  sandbox's init and network forwarder are reported next to it);
- failover: a region taken down until the global endpoint answers from another region (target
  <= interval x threshold + 1 s).

Every figure is printed with the wall time and the CPU each process spent. The moto server runs
in a process of its own; workers run sandboxed unless LOCAL_REGIONS_SANDBOX=false.

    python bench/local_regions.py [--requests 5000] [--strict]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CONTROLPLANE_DATA_DIR", tempfile.mkdtemp(prefix="controlplane-bench-"))
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
for key, value in {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "LOG_LEVEL": "WARNING",
}.items():
    os.environ.setdefault(key, value)

import django  # noqa: E402

django.setup()

from tests.support.localregions import LocalRegionsProcess, free_port_block, publish_function, zip_of  # noqa: E402
from tests.support.processes import wait_for  # noqa: E402

HELLO = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'hello'}\n"
REGION = "eu-west-1"
CHECK_INTERVAL = 1.0  # the local Route 53 checkers' interval for the failover figure
TICKS = os.sysconf("SC_CLK_TCK")


class Moto:
    """moto's server in a process of its own."""

    def __init__(self) -> None:
        self.port = free_port_block(1, start=22900, stop=22999)
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: _open(self.port), timeout=30, message="moto")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def _open(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    out, pending = [], [pid]
    while pending:
        current = pending.pop()
        out.append(current)
        try:
            for task in os.listdir(f"/proc/{current}/task"):
                with open(f"/proc/{current}/task/{task}/children") as children:
                    pending.extend(int(c) for c in children.read().split())
        except OSError:
            continue
    return out


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except OSError:
        return 0.0


def rss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(x.split()[1]) for x in status if x.startswith("VmRSS:")), 0)
    except OSError:
        return 0


def command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return cmdline.read().replace(b"\0", b" ").decode()[:90]
    except OSError:
        return "?"


class CpuMeter:
    """CPU seconds of the local regions process and of its workers between start and stop."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __enter__(self) -> CpuMeter:
        self.wall, self.server = time.perf_counter(), cpu_seconds(self.pid)
        self.workers = sum(cpu_seconds(p) for p in tree(self.pid)[1:])
        self.client = time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.server = cpu_seconds(self.pid) - self.server
        self.workers = sum(cpu_seconds(p) for p in tree(self.pid)[1:]) - self.workers
        self.client = time.process_time() - self.client

    def line(self, requests: int = 0) -> str:
        text = (
            f"wall {self.wall:.2f}s; CPU: local regions {self.server:.2f}s, workers {self.workers:.2f}s, "
            f"client {self.client:.2f}s"
        )
        if requests:
            per = (self.server + self.workers) / requests * 1e6
            text += (
                f"\n  CPU per request: local regions {self.server / requests * 1e6:.0f} us + workers "
                f"{self.workers / requests * 1e6:.0f} us = {per:.0f} us, so one idle core serves "
                f"~{1e6 / per:.0f} requests/s"
            )
        return text


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def in_process_ms(count: int) -> list[float]:
    namespace: dict = {}
    exec(HELLO, namespace)  # noqa: S102 - the benchmark's own handler
    handler, event = namespace["handler"], {"path": "/", "httpMethod": "GET"}
    out = []
    for _ in range(count):
        start = time.perf_counter()
        json.dumps(handler(event, None))
        out.append((time.perf_counter() - start) * 1000)
    return out


def warm_latency(regions, api: str, count: int) -> tuple[list[float], CpuMeter]:
    conn = http.client.HTTPConnection("127.0.0.1", regions.ports[REGION])
    path = f"/{api}/live/hello"
    for _ in range(200):  # warm: the worker, the caches
        conn.request("GET", path)
        conn.getresponse().read()
    times = []
    with CpuMeter(regions.proc.pid) as meter:
        for _ in range(count):
            start = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            response.read()
            times.append((time.perf_counter() - start) * 1000)
            assert response.status == 200
    conn.close()
    return times, meter


async def _load(port: int, path: str, connections: int, seconds: float) -> int:
    request = f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    done = 0
    deadline = time.perf_counter() + seconds

    async def one() -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while time.perf_counter() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ", 1)[1].split(b"\r\n", 1)[0])
            await reader.readexactly(length)
            done += 1
        writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return done


def throughput(regions, api: str, seconds: float, connections: int) -> tuple[float, CpuMeter]:
    with CpuMeter(regions.proc.pid) as meter:
        done = asyncio.run(_load(regions.ports[REGION], f"/{api}/live/", connections, seconds))
    return done / meter.wall, meter, done


def cold_starts(moto, regions, count: int) -> list[float]:
    out = []
    for i in range(count):
        api = publish_function(moto, REGION, f"cold{i}", zip_of({"app.py": HELLO}))
        conn = http.client.HTTPConnection("127.0.0.1", regions.ports[REGION])
        start = time.perf_counter()
        conn.request("GET", f"/{api}/live/")
        assert conn.getresponse().status == 200
        out.append((time.perf_counter() - start) * 1000)
        conn.close()
    return out


def global_domain(moto_url: str, regions_list: list[str], domain: str) -> None:
    """What the deploy engine makes for a stage with a domain: per region a function behind a REST
    API stage, a custom domain mapped to it, a health check and a latency record."""
    from regions.aws import acm, apigateway, route53
    from regions.aws.serving import ensure_hosted_zone

    class Aws:
        url = moto_url

    zone = ensure_hosted_zone(domain.split(".", 1)[1])
    for code in regions_list:
        api = publish_function(Aws, code, "globe", zip_of({"app.py": HELLO}), stage="production")
        cert = acm.request_certificate(code, domain)
        target = apigateway.ensure_custom_domain(code, domain=domain, certificate_arn=cert)
        apigateway.ensure_base_path_mapping(code, domain=domain, rest_api_id=api, stage="production")
        host = f"{api}.execute-api.{code}.amazonaws.com"
        check = route53.ensure_health_check(
            fqdn=host, path="/production/health", region=code, caller_reference=f"bench-{code}"
        )
        route53.upsert_latency_record(
            zone_id=zone, name=domain, region=code, set_identifier=code, target=target[0],
            target_zone_id=target[1], health_check_id=check,
        )  # fmt: skip


def failover(regions, domain: str) -> tuple[float, float]:
    """Seconds from a region going down until the global endpoint answers from another one."""
    url = f"{regions.url}/{domain}/"

    def served() -> str | None:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", regions.base, timeout=2)
            conn.request("GET", f"/{domain}/", headers={"X-Client-Region": "eu-central-1"})
            response = conn.getresponse()
            response.read()
            return response.getheader("X-Served-By-Region") if response.status == 200 else None
        except OSError:
            return None

    wait_for(lambda: served() == REGION, timeout=30, message=f"{url} served by {REGION}")
    status = regions.status()["health_checks"]
    check = next(iter(status.values()))
    start = time.perf_counter()
    regions.fault(region=REGION, mode="down")
    wait_for(lambda: served() not in (None, REGION), timeout=60, interval=0.02, message="failover")
    took = time.perf_counter() - start
    regions.clear()
    return took, check["interval_s"] * check["failure_threshold"] + 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=5.0, help="throughput run length")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--quick", action="store_true", help="1,000 requests, 2 s throughput run")
    args = parser.parse_args()
    if args.quick:
        args.requests, args.seconds = min(args.requests, 1000), min(args.seconds, 2.0)

    moto = Moto()
    os.environ["AWS_ENDPOINT_URL"] = moto.url
    from django.conf import settings

    settings.AWS_ENDPOINT_URL = moto.url
    regions = LocalRegionsProcess(
        aws_url=moto.url, env={"LOCAL_REGIONS_CHECK_INTERVAL": str(CHECK_INTERVAL), "LOG_LEVEL": "WARNING"}
    ).start()
    misses = []
    try:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) > 1:  # the server and its workers on one core, this client on another
            os.sched_setaffinity(regions.proc.pid, {cores[0]})
            os.sched_setaffinity(0, set(cores[1:]))
        sandboxed = regions.status()["sandboxed"]
        print(f"local regions: pid {regions.proc.pid}, pinned to core {cores[0]}; sandboxed: {sandboxed}")
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"machine: {os.cpu_count()} cores, load average {load} (others' work competes for the cores)")

        api = publish_function(moto, REGION, "hello", zip_of({"app.py": HELLO}))
        baseline = in_process_ms(args.requests)
        times, meter = warm_latency(regions, api, args.requests)
        base50, base99 = pct(baseline, 50), pct(baseline, 99)
        added50, added99 = pct(times, 50) - base50, pct(times, 99) - base99
        print(f"\nwarm latency, {args.requests} sequential requests on one kept-alive connection")
        print(f"  through the regional endpoint: p50 {pct(times, 50):.3f} ms, p99 {pct(times, 99):.3f} ms, "
              f"max {max(times):.2f} ms")  # fmt: skip
        print(f"  handler in-process:            p50 {base50:.4f} ms, p99 {base99:.4f} ms")
        print(f"  added: p50 {added50:.3f} ms (target <= 2), p99 {added99:.3f} ms (target <= 10)")
        print(f"  {meter.line(args.requests)}")
        if added50 > 2 or added99 > 10:
            misses.append("warm latency")

        rate, meter, done = throughput(regions, api, args.seconds, args.connections)
        workers = [w for w in regions.status()["workers"] if w["function"] == "hello"]
        print(f"\nthroughput, {args.connections} connections for {args.seconds:.0f}s, all on one core")
        print(f"  {rate:.0f} requests/s (target >= 1500) with {len(workers)} warm worker(s)")
        print(f"  {meter.line(done)}")
        if rate < 1500:
            misses.append("throughput")

        idle = len(regions.status()["workers"])
        with CpuMeter(regions.proc.pid) as meter:
            time.sleep(3)
        print(f"\nidle, {idle} warm worker(s) for 3s: {meter.line()}")
        print("  (a sandbox's watchdog reads /proc every 0.1 s in the local regions process)")

        colds = cold_starts(moto, regions, 5)
        print(f"\ncold start (first request to a new Python version), 5 versions: median "
              f"{statistics.median(colds):.0f} ms, max {max(colds):.0f} ms (target <= 300)")  # fmt: skip
        print("  " + ", ".join(f"{c:.0f}" for c in colds) + " ms")
        if statistics.median(colds) > 300:
            misses.append("cold start")

        print("\nwarm worker memory (RSS)")
        worst = 0
        for worker in regions.status()["workers"][:3]:
            parts = [(p, command(p), rss_kb(p)) for p in tree(worker["pid"])]
            interpreter = max(
                (kb for _, cmd, kb in parts if "_runtimes" in cmd or "bootstrap" in cmd), default=0
            )
            worst = max(worst, interpreter)
            print(f"  {worker['function']}: interpreter {interpreter / 1024:.1f} MB; whole sandbox "
                  f"{sum(kb for *_, kb in parts) / 1024:.1f} MB")  # fmt: skip
            for _pid, cmd, kb in parts:
                print(f"      {kb / 1024:6.1f} MB  {cmd}")
        if worst / 1024 > 30:
            misses.append("worker memory")

        domain = "bench.local-regions.example"
        global_domain(moto.url, [REGION, "us-east-1", "ap-southeast-2"], domain)
        took, budget = failover(regions, domain)
        print(f"\nfailover: {REGION} down -> the global endpoint answers from another region in {took:.2f}s")
        print(f"  (target <= interval x threshold + 1 = {budget:.1f}s; checker interval {CHECK_INTERVAL}s)")
        if took > budget:
            misses.append("failover")
    finally:
        regions.stop()
        moto.stop()
    print("\n" + ("PASS: every target met" if not misses else "FAIL: " + ", ".join(misses)))
    return 1 if misses and args.strict else 0


if __name__ == "__main__":
    raise SystemExit(main())
