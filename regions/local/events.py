"""API Gateway REST proxy integration, payload format 1.0: a request becomes the event a Lambda
function receives, and the function's answer becomes the HTTP response, as API Gateway maps them."""

from __future__ import annotations

import base64
import json
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

MAX_BODY = 10 * 1024 * 1024  # API Gateway's payload limit
INTEGRATION_TIMEOUT_S = 29.0  # API Gateway's integration timeout
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript",
               "application/x-www-form-urlencoded")  # fmt: skip

INTERNAL_ERROR = (502, {"content-type": "application/json"}, b'{"message": "Internal server error"}')
FORBIDDEN = (403, {"content-type": "application/json"}, b'{"message":"Forbidden"}')
TIMED_OUT = (504, {"content-type": "application/json"}, b'{"message": "Endpoint request timed out"}')
TOO_LARGE = (413, {"content-type": "application/json"}, b'{"message": "Request Too Long"}')


@dataclass
class Request:
    """One HTTP request as the server parsed it."""

    method: str
    path: str  # without the query string
    query: str
    headers: list[tuple[str, str]]
    body: bytes
    source_ip: str
    request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def header(self, name: str, default: str = "") -> str:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), default)


def _multi(pairs: list[tuple[str, str]]) -> tuple[dict | None, dict | None]:
    if not pairs:
        return None, None
    single: dict[str, str] = {}
    multi: dict[str, list[str]] = {}
    for key, value in pairs:
        single[key] = value  # the last value wins, as in API Gateway's single-value map
        multi.setdefault(key, []).append(value)
    return single, multi


def _is_text(content_type: str) -> bool:
    return not content_type or content_type.startswith(_TEXT_TYPES) or "+json" in content_type


def proxy_event(
    request: Request, *, stage: str, resource: str, proxy: str, stage_variables: dict, rest_api_id: str,
    account_id: str, domain: str = "",
) -> dict:  # fmt: skip
    """The REST API proxy event for ``request`` reaching ``resource`` (``/`` or ``/{proxy+}``)."""
    headers, multi_headers = _multi(request.headers)
    query, multi_query = _multi(parse_qsl(request.query, keep_blank_values=True))
    content_type = request.header("content-type")
    if request.body and not _is_text(content_type):
        body, encoded = base64.b64encode(request.body).decode(), True
    else:
        body, encoded = (request.body.decode("utf-8", "replace") if request.body else None), False
    now = time.time()
    resource_path = f"/{proxy}" if proxy else "/"
    return {
        "resource": resource,
        "path": resource_path,
        "httpMethod": request.method,
        "headers": headers,
        "multiValueHeaders": multi_headers,
        "queryStringParameters": query,
        "multiValueQueryStringParameters": multi_query,
        "pathParameters": {"proxy": proxy} if resource != "/" else None,
        "stageVariables": stage_variables or None,
        "requestContext": {
            "accountId": account_id,
            "apiId": rest_api_id,
            "domainName": domain or request.header("host"),
            "httpMethod": request.method,
            "path": f"/{stage}{resource_path}",
            "protocol": "HTTP/1.1",
            "requestId": request.request_id,
            "requestTime": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "requestTimeEpoch": int(now * 1000),
            "resourcePath": resource,
            "stage": stage,
            "identity": {"sourceIp": request.source_ip, "userAgent": request.header("user-agent") or None},
        },
        "body": body,
        "isBase64Encoded": encoded,
    }


def proxy_response(result) -> tuple[int, list[tuple[str, str]], bytes] | None:
    """The HTTP response for a function's answer, or None when the answer is malformed (API Gateway
    answers that with 502)."""
    if not isinstance(result, dict):
        return None
    allowed = {"statusCode", "headers", "multiValueHeaders", "body", "isBase64Encoded", "cookies"}
    if set(result) - allowed:
        return None
    try:
        status = int(result.get("statusCode", 200))
    except (TypeError, ValueError):
        return None
    if not 100 <= status <= 599:
        return None
    headers: list[tuple[str, str]] = []
    single = result.get("headers") or {}
    multi = result.get("multiValueHeaders") or {}
    if not isinstance(single, dict) or not isinstance(multi, dict):
        return None
    for key, values in multi.items():
        if not isinstance(values, list):
            return None
        headers.extend((str(key), str(v)) for v in values)
    seen = {k.lower() for k, _ in headers}
    headers.extend((str(k), str(v)) for k, v in single.items() if str(k).lower() not in seen)
    body = result.get("body")
    if body is None:
        data = b""
    elif isinstance(body, str):
        if result.get("isBase64Encoded"):
            try:
                data = base64.b64decode(body, validate=True)
            except ValueError:
                return None
        else:
            data = body.encode()
    else:
        return None  # API Gateway requires a string body
    return status, headers, data


def json_body(obj) -> bytes:
    return json.dumps(obj).encode()
