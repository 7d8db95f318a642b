"""Rollback under the realistic AWS model (bench/aws_model.py): a stage live in 16 regions is rolled
back through the REST API, again and again (each rollback goes back to the release the previous
one left), and each run is timed from the API call to

- every alias moved: the control plane has recorded every region's alias on the target version
  (its UpdateAlias answered); also shown, the moment AWS applied the last of the moves (the
  emulator's clock, the same machine's), half a round trip earlier;
- the rollback deployment ``succeeded``: every region moved and verified (its health URL probed).

Targets: p50 <= 0.3 s to every alias moved, p50 <= 1.0 s to succeeded.

    python bench/rollback.py [--quick] [--runs 20] [--regions 16] [--home-region us-east-1]
                             [--flat-ms N]

The regions are the farthest from home first, as in bench/fanout.py. A rollback is planned
before it acts: the API checks in every region that the target version still exists
(GetFunctionConfiguration, in parallel) before the aliases move (UpdateAlias, in parallel), so
no run can beat two round trips to the farthest region plus those calls' service times: the
floor the model gives is printed next to the figures. ``--quick``: 5 runs.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def other_zip(n: int) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(
            "app.py", f"def handler(event, context):\n    return {{'statusCode': 200, 'body': '{n}'}}\n"
        )
    return buf.getvalue()


def percentile(values: list[float], p: float) -> float:
    """The ``p`` percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 runs")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--regions", type=int, default=16)
    parser.add_argument("--home-region", default="us-east-1")
    parser.add_argument(
        "--flat-ms", type=float, default=None, help="a flat latency per call instead of the model"
    )
    args = parser.parse_args()
    runs = 5 if args.quick else args.runs

    sys.path.insert(0, str(HERE))
    from aws_model import Model, regions_by_distance
    from harness import CpuMeter, Stack
    from rest_framework.test import APIClient

    from controlplane.models import ApiToken
    from deployments.artifacts import store_artifact
    from deployments.services.deployments import create_deployment
    from regions.catalog import commercial_regions
    from regions.models import StagePlacement

    model = Model(home=args.home_region) if args.flat_ms is None else Model(flat_ms=args.flat_ms)
    regions = regions_by_distance(commercial_regions(), args.home_region)[: args.regions]
    print(f"model: {model.describe()}")
    print(f"machine: {os.cpu_count()} cores, this run on {len(os.sched_getaffinity(0))}; "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"regions ({len(regions)}, farthest first): {', '.join(regions)}")
    check = max(sum(model.latency_s(r, "lambda:GetFunctionConfiguration")) for r in regions)
    move = max(sum(model.latency_s(r, "lambda:UpdateAlias")) for r in regions)
    applied = max(model.latency_s(r, "lambda:UpdateAlias")[0] / 2 for r in regions)

    moved_s, applied_s, done_s, accepted_s = [], [], [], []
    with Stack(model=model) as stack:
        app, v1 = stack.app("rollback-bench", regions)
        stage = app.stages.get()
        principal = stack.principal(app)
        v2 = store_artifact(app=app, fileobj=io.BytesIO(other_zip(2)))
        for artifact in (v1, v2):
            deployment = stack.wait(
                create_deployment(app=app, stage=stage, principal=principal, artifact=artifact).pk
            )
            assert deployment.status == "succeeded", deployment.error
        raw = ApiToken.generate()
        ApiToken.objects.create(
            team=app.team, name="bench", role="deployer", token_hash=ApiToken.hash(raw), prefix=raw[:8]
        )
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw}")
        live = StagePlacement.objects.filter(stage=stage)
        url = f"/api/v1/apps/{app.slug}/rollback/"
        # One rollback first, not timed: the API process's first Lambda calls in each region
        # build its clients (once per process, as on a long-running web server).
        first = client.post(url, {"stage": stage.name}, format="json")
        assert first.status_code == 202, first.json()
        stack.wait(first.json()["id"])
        from deployments.models import Deployment

        with CpuMeter(stack) as meter:
            for n in range(runs):
                wall0, start = time.time(), time.perf_counter()
                answer = client.post(url, {"stage": stage.name}, format="json")
                assert answer.status_code == 202, answer.json()
                accepted_s.append(time.perf_counter() - start)
                (version,) = {r["version"] for r in answer.json()["regions"]}
                while live.filter(version=version).count() < len(regions):
                    time.sleep(0.002)
                moved_s.append(time.perf_counter() - start)
                row = Deployment.objects.filter(pk=answer.json()["id"]).values_list("status", flat=True)
                while (status := row.get()) not in ("succeeded", "failed", "cancelled", "partial"):
                    time.sleep(0.002)
                done_s.append(time.perf_counter() - start)
                assert status == "succeeded", status
                when = stack.aws.applied()
                applied_s.append(max(when[f"{code} lambda:UpdateAlias"] for code in regions) - wall0)
                print(
                    f"  run {n + 1:2d}: 202 after {accepted_s[-1] * 1000:4.0f} ms; every alias moved "
                    f"{moved_s[-1] * 1000:4.0f} ms (AWS applied the last move at "
                    f"{applied_s[-1] * 1000:4.0f} ms); "
                    f"succeeded {done_s[-1] * 1000:4.0f} ms",
                    flush=True,
                )
        # Confirm in AWS that the aliases really moved.
        from regions.aws import lambda_

        moved = {lambda_.get_alias(code, app.function_name, stage.name).version for code in regions}
        assert moved == {version}, moved

    def figure(values: list[float]) -> str:
        return f"p50 {percentile(values, 50):.3f} s, p95 {percentile(values, 95):.3f} s"

    print()
    print(f"rollback of {len(regions)} regions, {runs} runs:")
    print(f"  API answered 202 (the plan: a version check in every region) : {figure(accepted_s)}")
    print(f"  API call -> every alias moved (recorded)   : {figure(moved_s)}  (target p50 <= 0.3 s)")
    print(f"  API call -> AWS applied the last move      : {figure(applied_s)}")
    print(f"  API call -> deployment succeeded (verified): {figure(done_s)}  (target p50 <= 1.0 s)")
    if model.flat_ms is None:
        print(
            f"  floor under the model: the check {check:.3f} s + the move {move:.3f} s = "
            f"{check + move:.3f} s to every alias moved; AWS applies a move {applied:.3f} s after it is sent"
        )
    per = {k: v / runs for k, v in meter.spent.items()}
    print(
        f"  CPU per rollback: worker {per['worker1']:.3f} s, AWS emulator {per['aws']:.3f} s, "
        f"API + polling (this process) {per['api']:.3f} s; wall per run {meter.wall / runs:.2f} s"
    )


if __name__ == "__main__":
    main()
