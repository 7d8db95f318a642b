"""The demo a newcomer follows (``dev.py up --demo``): a sample app with a Python handler in three
regions and a stage with a domain in a hosted zone of the local AWS, deployed through the REST API
like any other, with an email channel whose alerts the console shows."""

from __future__ import annotations

import io
import time
import zipfile
from dataclasses import dataclass

import httpx

DEMO_APP = "hello"
DEMO_REGIONS = ("us-east-1", "eu-west-1", "ap-southeast-2")
DEMO_DOMAIN = "hello.demo.example"
DEMO_EMAIL = "oncall@demo.example"
HANDLER = '''"""The demo app: says hello from the region that served it."""
import json
import os


def handler(event, context):
    if event["path"] == "/health":
        return {"statusCode": 200, "body": "ok"}
    print("hello from", os.environ["AWS_REGION"], "for", event["path"])
    body = {
        "message": os.environ.get("GREETING", "hello"),
        "region": os.environ["AWS_REGION"],
        "version": context.function_version,
        "path": event["path"],
    }
    return {"statusCode": 200, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}
'''


class DemoFailed(Exception):
    """The demo could not be set up; the message says where it stopped."""


@dataclass
class DemoResult:
    regions: dict[str, str]  # region -> its endpoint
    global_url: str
    deployment: dict


def demo_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        info = zipfile.ZipInfo("app.py", date_time=(2024, 1, 1, 0, 0, 0))
        archive.writestr(info, HANDLER)
    return buf.getvalue()


def _check(response: httpx.Response, what: str) -> dict:
    if response.status_code >= 400:
        raise DemoFailed(f"{what}: HTTP {response.status_code} {response.text[:300]}")
    return response.json() if response.content else {}


def run_demo(*, site: str, token: str, zone_id: str, say=print, timeout: float = 180) -> DemoResult:
    """Make (once) and deploy the demo app through the API at ``site``; returns where it answers."""
    api = httpx.Client(base_url=f"{site}/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    with api:
        app = api.get(f"/apps/{DEMO_APP}/")
        if app.status_code == 404:
            say(f"creating the app '{DEMO_APP}' in {', '.join(DEMO_REGIONS)}")
            _check(api.post("/apps/", json={
                "slug": DEMO_APP, "name": "Hello (demo)", "runtime": "python3.12", "handler": "app.handler",
                "health_path": "/health", "regions": list(DEMO_REGIONS), "timeout_s": 10, "memory_mb": 128,
            }), "create the app")  # fmt: skip
            _check(api.post(f"/apps/{DEMO_APP}/env/", json={"key": "GREETING", "value": "hello"}), "env")
            _check(api.post(f"/apps/{DEMO_APP}/env/", json={"key": "GREETING", "value": "bonjour",
                                                            "region": "eu-west-1"}), "env")  # fmt: skip
            _check(api.post("/channels/", json={
                "kind": "email", "target": DEMO_EMAIL, "apps": [DEMO_APP],
            }), "create the email channel")  # fmt: skip
        else:
            _check(app, "read the app")
        stages = {s["name"]: s for s in _check(api.get(f"/apps/{DEMO_APP}/stages/"), "stages")["results"]}
        wanted = {"domain": DEMO_DOMAIN, "hosted_zone_id": zone_id}
        if "production" not in stages:
            _check(api.post(f"/apps/{DEMO_APP}/stages/", json={"name": "production", **wanted}), "stage")
        elif (stages["production"]["domain"], stages["production"]["hosted_zone_id"]) != (
            DEMO_DOMAIN,
            zone_id,
        ):
            # The local AWS forgets everything when it stops: the zone is new on every start.
            _check(api.patch(f"/apps/{DEMO_APP}/stages/production/", json=wanted), "stage")

        say("uploading the demo code and deploying it through the API")
        artifact = _check(
            api.post(f"/apps/{DEMO_APP}/artifacts/", files={"file": ("hello.zip", demo_zip())}), "upload"
        )
        started = _check(api.post(f"/apps/{DEMO_APP}/deployments/", json={
            "stage": "production", "artifact": artifact["id"],
            "commit": {"sha": "0" * 40, "branch": "main", "message": "Demo deploy", "author": "dev.py"},
        }), "deploy")  # fmt: skip
        deadline = time.monotonic() + timeout
        while True:
            deployment = _check(api.get(f"/deployments/{started['id']}/"), "follow the deployment")
            if deployment["finished_at"]:
                break
            if time.monotonic() > deadline:
                raise DemoFailed(f"deployment {started['id']} did not finish in {timeout:.0f}s")
            time.sleep(0.5)
        stage = _check(api.get(f"/apps/{DEMO_APP}/stages/production/"), "read the stage")
        regions = {row["region"]: row["endpoint"] for row in stage["regions"]}
        return DemoResult(regions=regions, global_url=stage["global_url"] or "", deployment=deployment)
