"""Deploy to 1 and to 16 regions through the real worker with 50 ms added to every AWS call;
print both wall times, their ratio (target <= 1.25) and the overhead of a 1-region deploy
against a bare boto3 sequence doing the same work (target <= 10 %).

    python bench/fanout.py [--delay-ms 50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import statistics

import boto3
from harness import Stack, handler_zip, timed


def bare_boto3_deploy(endpoint: str, region: str, name: str) -> None:
    """The same deploy as the engine's, as a plain sequence of boto3 calls with no reads first."""
    kw = dict(
        region_name=region, endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench"
    )
    s3, lam, apigw, iam, sts = (boto3.client(s, **kw) for s in ("s3", "lambda", "apigateway", "iam", "sts"))
    bucket = f"{name}-{region}"
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    s3.create_bucket(Bucket=bucket, **location)
    s3.put_object(Bucket=bucket, Key=f"{name}.zip", Body=handler_zip())
    role = iam.create_role(RoleName=f"{name}-role", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    lam.create_function(
        FunctionName=name,
        Runtime="python3.12",
        Role=role,
        Handler="app.handler",
        Code={"S3Bucket": bucket, "S3Key": f"{name}.zip"},
        MemorySize=256,
        Timeout=30,
        Environment={"Variables": {}},
    )
    lam.get_waiter("function_active_v2").wait(FunctionName=name)
    version = lam.publish_version(FunctionName=name, Description="release 1")["Version"]
    api = apigw.create_rest_api(name=name, endpointConfiguration={"types": ["REGIONAL"]})["id"]
    root = apigw.get_resources(restApiId=api)["items"][0]["id"]
    proxy = apigw.create_resource(restApiId=api, parentId=root, pathPart="{proxy+}")["id"]
    account = sts.get_caller_identity()["Account"]
    uri = (
        f"arn:aws:apigateway:{region}:lambda:path/2015-03-31/functions/arn:aws:lambda:{region}:"
        f"{account}:function:{name}:${{stageVariables.alias}}/invocations"
    )
    for resource in (root, proxy):
        apigw.put_method(restApiId=api, resourceId=resource, httpMethod="ANY", authorizationType="NONE")
        apigw.put_integration(
            restApiId=api,
            resourceId=resource,
            httpMethod="ANY",
            type="AWS_PROXY",
            integrationHttpMethod="POST",
            uri=uri,
        )
    apigw.create_deployment(restApiId=api, stageName="production", variables={"alias": "production"})
    lam.create_alias(FunctionName=name, Name="production", FunctionVersion=version)
    lam.add_permission(
        FunctionName=name,
        Qualifier="production",
        StatementId="apigw",
        Action="lambda:InvokeFunction",
        Principal="apigateway.amazonaws.com",
        SourceArn=f"arn:aws:execute-api:{region}:{account}:{api}/*/*/*",
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its waited-for children, from /proc."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from deployments.services.deployments import create_deployment
    from regions.catalog import commercial_regions

    regions16 = list(commercial_regions())[:16]
    one, sixteen, bare = [], [], []
    cpu16: list[tuple[float, float, float]] = []  # worker, AWS emulator, this process (API, polling)
    with Stack(delay_ms=args.delay_ms) as stack:
        # Warm the worker (imports, first clients) so the first timing is not a cold start.
        def deploy(slug: str, regions: list[str]) -> float:
            app, artifact = stack.app(slug, regions)
            stage = app.stages.get()
            principal = stack.principal(app)
            elapsed, deployment = timed(
                lambda: stack.wait(
                    create_deployment(app=app, stage=stage, principal=principal, artifact=artifact).pk
                )
            )
            assert deployment.status == "succeeded", (deployment.status, deployment.error)
            return elapsed

        deploy("warmup", regions16)  # imports and first clients, so no timing is a cold start
        for n in range(args.repeat):
            one.append(deploy(f"fan1-{n}", regions16[:1]))
            before = (cpu_seconds(stack.worker.proc.pid), cpu_seconds(stack.aws.proc.pid), os.times())
            sixteen.append(deploy(f"fan16-{n}", regions16))
            after = (cpu_seconds(stack.worker.proc.pid), cpu_seconds(stack.aws.proc.pid), os.times())
            own = (after[2].user + after[2].system) - (before[2].user + before[2].system)
            cpu16.append((after[0] - before[0], after[1] - before[1], own))
            name = f"bare{n}"
            bare.append(timed(lambda: bare_boto3_deploy(stack.proxy.url, regions16[0], name))[0])  # noqa: B023
        calls = stack.proxy.requests

    t1, t16, tb = statistics.median(one), statistics.median(sixteen), statistics.median(bare)
    print(f"AWS latency added per call: {args.delay_ms:.0f} ms; runs: {args.repeat}; AWS calls seen: {calls}")
    print(f"deploy to  1 region : {t1:.3f} s (runs: {', '.join(f'{x:.3f}' for x in one)})")
    print(f"deploy to 16 regions: {t16:.3f} s (runs: {', '.join(f'{x:.3f}' for x in sixteen)})")
    print(f"ratio 16/1          : {t16 / t1:.2f} (target <= 1.25)")
    print(f"bare boto3, 1 region: {tb:.3f} s (runs: {', '.join(f'{x:.3f}' for x in bare)})")
    print(f"overhead vs bare    : {(t1 - tb) / tb * 100:+.1f} % (target <= 10 %)")
    worker, aws, own = (statistics.median(c[i] for c in cpu16) for i in range(3))
    cores = len(os.sched_getaffinity(0))
    print(
        f"CPU per 16-region deploy: worker {worker:.2f} s, AWS emulator {aws:.2f} s, API + polling "
        f"{own:.2f} s; on {cores} cores no run can take less than {(worker + aws + own) / cores:.2f} s, "
        f"and the worker's share alone (one process, one GIL) {worker:.2f} s"
    )


if __name__ == "__main__":
    main()
