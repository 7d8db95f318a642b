"""The local regions (``manage.py local_regions``) as a real process for tests, on a free block of
loopback ports, reading the session's moto server; and a Lambda function plus REST API made in
moto directly, for tests that need no deploy."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
from django.conf import settings

from regions.aws import apigateway
from regions.local.endpoints import region_ports

from .deploys import boto
from .processes import ROOT, wait_for

PORT_RANGE = (22000, 22999)


def free_port_block(size: int, *, start: int = PORT_RANGE[0], stop: int = PORT_RANGE[1]) -> int:
    """The first port of ``size`` consecutive free loopback ports in [start, stop]."""
    blocks = (stop - start + 1) // size
    first = os.getpid() % blocks  # two runs at once rarely start at the same block
    for i in range(blocks):
        base = start + ((first + i) % blocks) * size
        if all(_free(port) for port in range(base, base + size)):
            return base
    raise RuntimeError(f"no {size} free ports in {start}-{stop}")


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalRegionsProcess:
    def __init__(self, *, aws_url: str, env: dict[str, str] | None = None) -> None:
        self.base = free_port_block(len(region_ports(0)) + 1)
        self.ports = region_ports(self.base)
        self.aws_url = aws_url
        self.extra_env = env or {}
        self.log_path = Path(settings.DATA_DIR) / f"local-regions-{self.base}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.base}"

    def region_url(self, region: str) -> str:
        return f"http://127.0.0.1:{self.ports[region]}"

    def start(self) -> LocalRegionsProcess:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONUNBUFFERED": "1",
            "AWS_ENDPOINT_URL": self.aws_url,
            "LOCAL_REGIONS_CHECK_INTERVAL": "0.5",
            **self.extra_env,
        }
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "manage.py", "local_regions", "--port", str(self.base)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(self._ready, timeout=30, interval=0.1, message="the local regions to listen")
        return self

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"the local regions exited:\n{self.log()}")
        try:
            return httpx.get(self.url + "/_status", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_log(self, *needles: str, timeout: float = 10) -> str:
        """The output once it holds every one of ``needles``."""

        def found():
            text = self.log()
            return text if all(n in text for n in needles) else None

        return wait_for(found, timeout=timeout, message=f"{needles} in the local regions' output")

    def status(self) -> dict:
        return httpx.get(self.url + "/_status", timeout=5).json()

    def fault(self, **fault) -> dict:
        response = httpx.post(self.url + "/_faults", json=fault, timeout=5)
        assert response.status_code == 201, response.text
        return response.json()

    def clear(self, region: str = "") -> None:
        httpx.delete(self.url + "/_faults", params={"region": region} if region else None, timeout=5)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def zip_of(files: dict[str, str], *, raw: list[tuple[zipfile.ZipInfo, bytes]] = ()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, body in files.items():
            zf.writestr(name, body)
        for info, data in raw:
            zf.writestr(info, data)
    return buf.getvalue()


def publish_function(
    aws, region: str, name: str, code: bytes, *, handler: str = "app.handler", runtime: str = "python3.12",
    env: dict | None = None, timeout: int = 3, stage: str = "live",
) -> str:  # fmt: skip
    """A function with one published version behind alias ``stage`` and a REST API stage whose
    ``{proxy+}`` invokes it, made in moto as the deploy engine makes them. Returns the API id."""
    s3, lam = boto("s3", region, aws), boto("lambda", region, aws)
    bucket = f"code-{region}"
    kwargs = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=bucket, **kwargs)
    except s3.exceptions.BucketAlreadyOwnedByYou:
        pass
    key = f"artifacts/{name}/{hashlib.sha256(code).hexdigest()}.zip"
    s3.put_object(Bucket=bucket, Key=key, Body=code)
    iam = boto("iam", region, aws)
    try:
        role = iam.get_role(RoleName="lambda-local")["Role"]["Arn"]
    except iam.exceptions.NoSuchEntityException:
        role = iam.create_role(RoleName="lambda-local", AssumeRolePolicyDocument=json.dumps({}))["Role"][
            "Arn"
        ]

    def create() -> bool:
        # As on AWS (and the strict emulator): a new role is assumable only after it propagates.
        try:
            lam.create_function(
                FunctionName=name, Runtime=runtime, Role=role, Handler=handler, Timeout=timeout,
                Code={"S3Bucket": bucket, "S3Key": key}, Environment={"Variables": env or {}},
            )  # fmt: skip
        except lam.exceptions.InvalidParameterValueException as exc:
            if "cannot be assumed" not in str(exc):
                raise
            return False
        return True

    wait_for(create, timeout=30, message=f"{name}'s role to be assumable by Lambda")
    # A new function is Pending before it is Active; a publish before then is refused.
    wait_for(
        lambda: lam.get_function_configuration(FunctionName=name).get("State", "Active") == "Active",
        timeout=30,
        message=f"{name} to become Active",
    )
    version = lam.publish_version(FunctionName=name)["Version"]
    lam.create_alias(FunctionName=name, Name=stage, FunctionVersion=version)
    account = boto("sts", region, aws).get_caller_identity()["Account"]
    return apigateway.ensure_lambda_api(
        region, name=name, function_name=name, account_id=account, stage=stage, variables={"alias": stage}
    ).id
