"""Fake AWS for the ``regions.aws`` tests: moto in-process, a clean account per test."""

from __future__ import annotations

import io
import os
import zipfile

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto import mock_aws

from regions.aws import session

REGION = "eu-west-1"
ACCOUNT = "123456789012"  # moto's default account


@pytest.fixture
def fake_aws(settings, monkeypatch):
    """moto's in-process AWS; every client is rebuilt against it and no endpoint override applies
    (a moto server started by other tests in the run sets one in settings and the environment)."""
    settings.AWS_ENDPOINT_URL = ""
    settings.AWS_ENDPOINT_URLS = {}
    settings.ROUTE53_REQUESTS_PER_SECOND = 0  # moto in-process has no account-wide limit
    for name in list(os.environ):
        if name.startswith("AWS_ENDPOINT_URL"):
            monkeypatch.delenv(name)
    with mock_aws():
        session.reset_clients()
        yield
    session.reset_clients()


def plain(service: str, region: str = REGION):
    """A boto3 client made without ``regions.aws``, to read back what AWS really holds."""
    return boto3.client(service, region_name=region)


HANDLER = "def handler(event, context):\n    return {'statusCode': 200, 'body': 'ok'}\n"


def make_zip(body: str = HANDLER) -> bytes:
    """A real deployment package: ``app.py`` with ``body``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("app.py", body)
    return buffer.getvalue()


class _Raw(io.BytesIO):
    def stream(self, **kwargs):
        yield self.getvalue()


def canned_response(url: str, status: int, body: bytes, headers: dict | None = None) -> AWSResponse:
    """An HTTP answer as botocore's ``before-send`` hooks return it."""
    return AWSResponse(url, status, headers or {}, _Raw(body))


def fail_first(client, event: str, *, times: int, status: int, code: str, json_protocol: bool = True):
    """Answer the first ``times`` requests matching ``event`` (e.g. ``before-send.lambda.ListFunctions``)
    with ``status``/``code`` before they reach AWS; returns the list of attempts seen."""
    attempts: list[str] = []

    def hook(request, **kwargs):
        attempts.append(request.url)
        if len(attempts) > times:
            return None
        if json_protocol:
            body = f'{{"__type": "{code}", "message": "injected {code}"}}'.encode()
            headers = {"x-amzn-errortype": code, "content-type": "application/json"}
        else:
            body = (
                f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>"
                f"<Message>injected {code}</Message></Error></ErrorResponse>"
            ).encode()
            headers = {"content-type": "text/xml"}
        return canned_response(request.url, status, body, headers)

    client.meta.events.register_first(event, hook)
    return attempts
