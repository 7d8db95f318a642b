"""Helpers for tests that deploy through the API and a real worker, and read AWS with boto3."""

from __future__ import annotations

import io
import zipfile

import boto3

from deployments.choices import ACTIVE_DEPLOYMENT_STATUSES
from deployments.models import Deployment

from .processes import wait_for


def make_zip(body: str = "def handler(event, context):\n    return {'statusCode': 200}\n") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("app.py", body)
    return buf.getvalue()


def boto(service: str, region: str, aws):
    return boto3.client(
        service, region_name=region, endpoint_url=aws.url,
        aws_access_key_id="testing", aws_secret_access_key="testing",
    )  # fmt: skip


def upload(client, app, content: bytes) -> int:
    response = client.post(
        f"/api/v1/apps/{app.slug}/artifacts/",
        {"file": io.BytesIO(content)},
        format="multipart",
    )
    assert response.status_code in (200, 201), response.json()
    return response.json()["id"]


def deploy(client, app, stage: str, artifact_id: int, sha: str = "a" * 40, **extra) -> dict:
    response = client.post(
        f"/api/v1/apps/{app.slug}/deployments/",
        {"stage": stage, "artifact": artifact_id,
         "commit": {"sha": sha, "branch": "main", "message": "Ship it", "author": "Ada"}, **extra},
        format="json",
    )  # fmt: skip
    assert response.status_code == 202, response.json()
    return response.json()


def wait_finished(pk: int, timeout: float = 90) -> Deployment:
    def done():
        d = Deployment.objects.get(pk=pk)
        return d if d.status not in ACTIVE_DEPLOYMENT_STATUSES and d.finished_at else None

    try:
        return wait_for(done, timeout=timeout, message=f"deployment {pk} to finish")
    except AssertionError:
        events = "\n".join(
            f"{e.seq} {e.step} {e.message}" for e in Deployment.objects.get(pk=pk).events.order_by("seq")
        )
        raise AssertionError(f"deployment {pk} did not finish; log:\n{events}") from None
