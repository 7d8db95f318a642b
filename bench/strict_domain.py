"""A first deploy of a stage with a custom domain, to 1 and to 16 regions, under the strict AWS
emulator with its default delays (tests/support/strict_aws.py: certificates issued 5 s after
their validation record is in the zone, Lambda Pending 2 s and InProgress 1 s, Route 53 at 5
requests/s for the account, API Gateway's control-plane quotas) plus 50 ms per AWS call.
Prints both wall times, their ratio (target <= 1.5), the Route 53 calls per deployment (target
<= 3 + one per region) and the CPU each process spent.

    python bench/strict_domain.py [--delay-ms 50] [--repeat 2]

Each measured deploy is a new app with a new domain (a new certificate in every region). API
Gateway allows one CreateDomainName per account and region every 30 s, so the runs are 30 s
apart, as they would have to be on AWS.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import boto3
from harness import Stack, cpu_seconds, timed


def route53_calls(stats: dict) -> int:
    return sum(n for key, n in stats["calls"].items() if key.startswith("route53:"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 deploy of each size")
    args = parser.parse_args()
    if args.quick:
        args.repeat = 1

    from deployments.services.deployments import create_deployment
    from regions.catalog import commercial_regions

    regions16 = list(commercial_regions())[:16]
    results: dict[int, list[tuple[float, int, int, tuple[float, float, float]]]] = {1: [], 16: []}
    with Stack(delay_ms=args.delay_ms, strict=True) as stack:
        r53 = boto3.client(
            "route53", region_name="us-east-1", endpoint_url=stack.aws.moto_url,
            aws_access_key_id="bench", aws_secret_access_key="bench",
        )  # fmt: skip
        zone = r53.create_hosted_zone(Name="example.com", CallerReference="bench")["HostedZone"]["Id"]
        zone = zone.rsplit("/", 1)[-1]

        def deploy(slug: str, regions: list[str], domain: str = "") -> tuple[float, int, int, tuple]:
            app, artifact = stack.app(slug, regions, domain=domain, zone=zone if domain else "")
            stage = app.stages.get()
            principal = stack.principal(app)
            before_stats = stack.aws.strict_stats()
            before = (cpu_seconds(stack.worker.proc.pid), cpu_seconds(stack.aws.proc.pid), os.times())
            elapsed, deployment = timed(
                lambda: stack.wait(
                    create_deployment(app=app, stage=stage, principal=principal, artifact=artifact).pk
                )
            )
            after = (cpu_seconds(stack.worker.proc.pid), cpu_seconds(stack.aws.proc.pid), os.times())
            after_stats = stack.aws.strict_stats()
            assert deployment.status == "succeeded", (deployment.status, deployment.error)
            own = (after[2].user + after[2].system) - (before[2].user + before[2].system)
            refused = sum(after_stats["refused"].values()) - sum(before_stats["refused"].values())
            calls = route53_calls(after_stats) - route53_calls(before_stats)
            return elapsed, calls, refused, (after[0] - before[0], after[1] - before[1], own)

        # The execution role (IAM propagation), imports and first clients: not part of a timing.
        deploy("warmup", regions16)
        for n in range(args.repeat):
            for count in (1, 16):
                time.sleep(31)  # API Gateway: one CreateDomainName per account and region every 30 s
                results[count].append(
                    deploy(f"dom{count}-{n}", regions16[:count], f"app{count}-{n}.example.com")
                )

    t1 = statistics.median(r[0] for r in results[1])
    t16 = statistics.median(r[0] for r in results[16])
    print(
        f"strict emulator, default delays, AWS latency added per call: {args.delay_ms:.0f} ms; "
        f"runs: {args.repeat}"
    )
    for count in (1, 16):
        runs = results[count]
        print(
            f"first deploy with a domain to {count:2d} region(s): "
            f"{statistics.median(r[0] for r in runs):.2f} s "
            f"(runs: {', '.join(f'{r[0]:.2f}' for r in runs)}); Route 53 calls per deployment: "
            f"{', '.join(str(r[1]) for r in runs)} (target <= {3 + count}); AWS refusals: "
            f"{', '.join(str(r[2]) for r in runs)}"
        )
    print(f"ratio 16/1: {t16 / t1:.2f} (target <= 1.5)")
    worker, aws, own = (statistics.median(r[3][i] for r in results[16]) for i in range(3))
    print(
        f"CPU per 16-region deploy: worker {worker:.2f} s, AWS emulator {aws:.2f} s, "
        f"API + polling {own:.2f} s (wall {t16:.2f} s, {len(os.sched_getaffinity(0))} cores)"
    )


if __name__ == "__main__":
    main()
