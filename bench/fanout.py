"""Fan-out: deploy a new app to 1, 4, 16 and 32 regions through the real worker under the realistic
AWS model (bench/aws_model.py: round trip by region from the home region, service time per
operation, Lambda Pending/InProgress settling), and compare the worker's CPU per region deploy
with a bare boto3 script making the same calls.

    python bench/fanout.py [--quick] [--sizes 1,4,16,32] [--repeat 1] [--home-region us-east-1]
                           [--pending-s 2] [--update-s 1.5] [--settle-jitter 0] [--service-scale 1]
                           [--flat-ms 50] [--concurrency N]

Targets: 16 regions <= 1.10 x 1 region, 32 regions <= 1.20 x; worker CPU per region deploy <=
1.3 x the bare sequence's. Every region set holds the farthest regions from home first, so
each deploy waits for the same slowest region (af-south-1 from us-east-1) and the ratios
measure what the fan-out costs, not geography: "1 region" is that farthest region alone.

The bare sequence runs in a process of its own (``--bare``, so its CPU is its own): for each
region, on a thread per region as the worker does, the calls the engine makes for a first
deploy of an app (S3 HeadObject + upload, GetFunctionConfiguration, CreateFunction, polls of
GetFunctionConfiguration with the engine's schedule until Active, PublishVersion, CreateAlias,
AddPermission; the REST API's calls alongside; one GET of the health URL), with its clients made
beforehand, as the worker's are cached. The calls each side made per region are counted by the
emulator and printed when they differ.

Then the emulator switches to a flat 50 ms per call (no service time, no settling) and a
16-region deploy gives the CPU figures of the older benchmark (``--flat-ms 0`` skips it).
``--quick``: 1 and 16 regions once, no flat variant.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
ACCOUNT = "123456789012"  # moto's
# The engine's wait for a function to settle (regions/aws/lambda_.py wait_until_updated):
# first pause, growth factor, longest pause.
POLL_FIRST_S, POLL_FACTOR, POLL_MAX_S = 0.1, 2.0, 1.0


# --- the bare boto3 sequence (in its own process) -------------------------------------------------


def bare_region(clients: dict, spec: dict, region: str) -> None:
    """A first deploy of function ``spec["name"]`` in ``region``: the engine's calls, in its order."""
    import httpx

    s3, lam, apigw = clients[region]
    name, bucket, key = spec["name"], spec["buckets"][region], f"bare/{spec['name']}.zip"

    def rest_api() -> None:
        apigw.get_rest_apis(limit=500)
        api = apigw.create_rest_api(
            name=name, description="Managed by controlplane", endpointConfiguration={"types": ["REGIONAL"]}
        )
        root = api["rootResourceId"]
        proxy = apigw.create_resource(restApiId=api["id"], parentId=root, pathPart="{proxy+}")["id"]
        uri = (
            f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/arn:aws:lambda:{region}:"
            f"{ACCOUNT}:function:{name}:${{stageVariables.alias}}/invocations"
        )
        for resource, params in ((root, {}), (proxy, {"method.request.path.proxy": True})):
            apigw.put_method(restApiId=api["id"], resourceId=resource, httpMethod="ANY",
                             authorizationType="NONE", requestParameters=params)  # fmt: skip
            apigw.put_integration(restApiId=api["id"], resourceId=resource, httpMethod="ANY",
                                  type="AWS_PROXY", integrationHttpMethod="POST", uri=uri)  # fmt: skip
        apigw.create_deployment(restApiId=api["id"], stageName="production",
                                variables={"alias": "production"}, description="bare")  # fmt: skip
        return api["id"]

    with ThreadPoolExecutor(max_workers=1) as side:
        api_id = side.submit(rest_api)
        try:
            s3.head_object(Bucket=bucket, Key=key)
        except s3.exceptions.ClientError:
            pass
        with open(spec["zip"], "rb") as body:
            s3.put_object(Bucket=bucket, Key=key, Body=body, Metadata={"sha256": spec["sha256"]})
        try:
            lam.get_function_configuration(FunctionName=name)
        except lam.exceptions.ResourceNotFoundException:
            pass
        config = lam.create_function(
            FunctionName=name, Role=spec["role"], Runtime="python3.12", Handler="app.handler",
            MemorySize=256, Timeout=30, Environment={"Variables": {}},
            Code={"S3Bucket": bucket, "S3Key": key}, Description="bench/bare", PackageType="Zip",
            Publish=False,
        )  # fmt: skip
        pause = POLL_FIRST_S
        while config.get("State") == "Pending" or config.get("LastUpdateStatus") == "InProgress":
            time.sleep(pause)
            pause = min(POLL_MAX_S, pause * POLL_FACTOR)
            config = lam.get_function_configuration(FunctionName=name)
        guard = {"RevisionId": config["RevisionId"]} if config.get("RevisionId") else {}
        version = lam.publish_version(
            FunctionName=name, Description="bare", CodeSha256=config["CodeSha256"], **guard
        )["Version"]
        api_id = api_id.result()
    lam.create_alias(FunctionName=name, Name="production", FunctionVersion=version,
                     RoutingConfig={"AdditionalVersionWeights": {}})  # fmt: skip
    lam.add_permission(
        FunctionName=name, Qualifier="production", StatementId="controlplane-apigateway-production",
        Action="lambda:InvokeFunction", Principal="apigateway.amazonaws.com",
        SourceArn=f"arn:aws:execute-api:{region}:{ACCOUNT}:{api_id}/*/*/*",
    )  # fmt: skip
    assert httpx.get(spec["health"][region], timeout=10).status_code == 200


def bare_main(spec: dict) -> None:
    """Run the bare sequence in every region of ``spec`` at once; print its wall and CPU as JSON."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(aws_access_key_id="bench", aws_secret_access_key="bench")
    config = Config(retries={"mode": "standard", "total_max_attempts": 8}, max_pool_connections=50)
    clients = {
        region: tuple(
            session.client(s, region_name=region, endpoint_url=spec["endpoint"], config=config)
            for s in ("s3", "lambda", "apigateway")
        )
        for region in spec["regions"]
    }

    def run(name: str) -> dict:
        cpu, wall = time.process_time(), time.perf_counter()
        with ThreadPoolExecutor(max_workers=len(spec["regions"])) as pool:
            list(pool.map(lambda r: bare_region(clients, {**spec, "name": name}, r), spec["regions"]))
        return {"cpu": time.process_time() - cpu, "wall": time.perf_counter() - wall}

    # A first pass warms the clients (connections, the operation models botocore loads on first
    # use), as the worker's are warm; the second is measured.
    run(spec["name"] + "-warm")
    print(json.dumps(run(spec["name"])))


# --- the benchmark --------------------------------------------------------------------------------


def per_region(calls: Counter, regions: list[str]) -> Counter:
    """Calls per operation per region (the regional ones, averaged over ``regions``)."""
    out: Counter = Counter()
    for key, n in calls.items():
        region, operation = key.split(" ", 1)
        if region in regions:
            out[operation] += n
    return Counter({op: round(n / len(regions), 1) for op, n in out.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 and 16 regions once, no flat variant")
    parser.add_argument("--sizes", default="1,4,16,32")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--home-region", default="us-east-1")
    parser.add_argument("--pending-s", type=float, default=2.0)
    parser.add_argument("--update-s", type=float, default=1.5)
    parser.add_argument("--settle-jitter", type=float, default=0.0)
    parser.add_argument("--service-scale", type=float, default=1.0)
    parser.add_argument("--flat-ms", type=float, default=50.0, help="the flat variant's latency (0: skip it)")
    parser.add_argument("--concurrency", type=int, default=None, help="worker threads (default: the setting)")
    parser.add_argument("--bare", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare:
        bare_main(json.loads(args.bare))
        return

    sys.path.insert(0, str(HERE))
    from aws_model import Model, regions_by_distance
    from harness import CpuMeter, Stack, handler_zip

    from deployments.services.deployments import create_deployment
    from regions.catalog import commercial_regions

    sizes = [1, 16] if args.quick else sorted(int(s) for s in args.sizes.split(","))
    flat_ms = 0 if args.quick else args.flat_ms
    model = Model(
        home=args.home_region, pending_s=args.pending_s, update_s=args.update_s,
        settle_jitter=args.settle_jitter, service_scale=args.service_scale,
    )  # fmt: skip
    regions = regions_by_distance(commercial_regions(), args.home_region)
    cores = len(os.sched_getaffinity(0))
    print(f"model: {model.describe()}")
    print(f"machine: {os.cpu_count()} cores, this run on {cores}; load average {os.getloadavg()[0]:.1f}")
    print(f"regions, farthest first: {', '.join(regions[: max(sizes)])}")

    results: dict[int, list[tuple[float, CpuMeter, Counter]]] = {n: [] for n in sizes}
    with Stack(model=model, concurrency=args.concurrency) as stack:
        zip_path = Path(os.environ["CONTROLPLANE_DATA_DIR"]) / "bare.zip"
        zip_path.write_bytes(handler_zip())
        import hashlib

        from regions.models import Region

        def deploy(slug: str, where: list[str]) -> tuple[float, CpuMeter, Counter]:
            app, artifact = stack.app(slug, where)
            stage = app.stages.get()
            principal = stack.principal(app)
            before = stack.aws.calls()
            with CpuMeter(stack) as meter:
                deployment = stack.wait(
                    create_deployment(app=app, stage=stage, principal=principal, artifact=artifact).pk
                )
            assert deployment.status == "succeeded", (deployment.status, deployment.error)
            return meter.wall, meter, stack.aws.calls() - before

        def bare(name: str, where: list[str]) -> tuple[dict, Counter]:
            buckets = {r.code: r.bucket for r in Region.objects.filter(code__in=where)}
            spec = {
                "endpoint": stack.aws.url, "regions": where, "name": name, "zip": str(zip_path),
                "sha256": hashlib.sha256(zip_path.read_bytes()).hexdigest(), "role": role,
                "buckets": buckets,
                "health": {code: f"{stack.endpoints.url}/{code}/health" for code in where},
            }  # fmt: skip
            before = stack.aws.calls()
            out = subprocess.run(
                [sys.executable, __file__, "--bare", json.dumps(spec)], capture_output=True, text=True
            )
            if out.returncode:
                raise RuntimeError(f"the bare sequence failed:\n{out.stderr[-3000:]}")
            calls = stack.aws.calls() - before
            # (Two passes made them: the warm-up pass, then the measured one.)
            return json.loads(out.stdout.strip().splitlines()[-1]), Counter(
                {k: n / 2 for k, n in calls.items()}
            )

        # Buckets, the execution role, every region's clients, imports: nothing measured is a first.
        deploy("warmup", regions[: max(sizes)])
        import boto3

        iam = boto3.client("iam", region_name="us-east-1", endpoint_url=stack.aws.moto_url,
                           aws_access_key_id="bench", aws_secret_access_key="bench")  # fmt: skip
        role = iam.get_role(RoleName="controlplane-lambda")["Role"]["Arn"]
        for rep in range(args.repeat):
            for n in sizes:
                results[n].append(deploy(f"fan{n}-{rep}", regions[:n]))
                wall, meter, _ = results[n][-1]
                print(f"  {n:2d} region(s), run {rep + 1}: {meter.line()}", flush=True)
        big = max(sizes)
        bare_one, _ = bare("bare-one", regions[:1])
        bare_run, bare_calls = bare("bare-real", regions[:big])
        engine_calls = per_region(results[big][-1][2], regions[:big])
        flat = None
        if flat_ms:
            stack.aws.use(Model(flat_ms=flat_ms))
            flat_n = min(16, big)
            flat = (deploy("flat", regions[:flat_n]), bare("bare-flat", regions[:flat_n]), flat_n)

    def median(xs):
        xs = sorted(xs)
        return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2

    print()
    header = "CPU s per deploy: worker, AWS emulator, API+polling | worker CPU per region"
    print(f"{'regions':>7} {'wall s':>7} {'ratio':>6} {'target':>6} | {header}")
    base = median(w for w, _, _ in results[sizes[0]])
    targets = {16: 1.10, 32: 1.20}
    for n in sizes:
        wall = median(w for w, _, _ in results[n])
        meters = [m for _, m, _ in results[n]]
        worker = median(m.workers for m in meters)
        aws = median(m.spent["aws"] for m in meters)
        api = median(m.spent["api"] for m in meters)
        target = f"<={targets[n]:.2f}" if n in targets else ""
        cpu = f"{worker:6.2f} {aws:6.2f} {api:6.2f}"
        print(f"{n:7d} {wall:7.2f} {wall / base:6.2f} {target:>6} | {cpu:46s} | {worker / n * 1000:6.0f} ms")
    worker_big = median(m.workers for _, m, _ in results[big]) / big
    bare_per_region = bare_run["cpu"] / big
    floor = bare_run["wall"] / bare_one["wall"]
    print(
        f"\nbare boto3, same calls and waits: 1 region {bare_one['wall']:.2f} s, {big} regions "
        f"{bare_run['wall']:.2f} s (ratio {floor:.2f}: what this machine allows without the control "
        f"plane); engine {big}/1: {median(w for w, _, _ in results[big]) / base:.2f}"
    )
    print(
        f"CPU per region deploy ({big} regions at once): worker {worker_big * 1000:.0f} ms, bare boto3 "
        f"{bare_per_region * 1000:.0f} ms -> {worker_big / bare_per_region:.2f} x bare (target <= 1.30)"
    )
    bare_per = per_region(bare_calls, regions[:big])
    differ = {
        op: (engine_calls.get(op, 0), bare_per.get(op, 0))
        for op in engine_calls | bare_per
        if engine_calls.get(op, 0) != bare_per.get(op, 0)
    }
    same = "; the same operations, as often"
    if differ:
        same = "; differing (engine/bare): " + ", ".join(
            f"{op} {e}/{b}" for op, (e, b) in sorted(differ.items())
        )
    engine_total, bare_total = sum(engine_calls.values()), sum(bare_per.values())
    print(f"AWS calls per region: engine {engine_total:.1f}, bare {bare_total:.1f}{same}")
    if flat:
        (wall, meter, _), (bare_flat, _), n = flat
        print(
            f"flat {flat_ms:.0f} ms per call, {n} regions: wall {wall:.2f} s; CPU worker "
            f"{meter.workers:.2f} s ({meter.workers / n * 1000:.0f} ms per region), AWS emulator "
            f"{meter.spent['aws']:.2f} s, API+polling {meter.spent['api']:.2f} s; bare boto3 "
            f"{bare_flat['cpu'] / n * 1000:.0f} ms per region"
        )


if __name__ == "__main__":
    main()
