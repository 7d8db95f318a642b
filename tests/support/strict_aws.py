"""The strict mode of the AWS emulator: WSGI middleware in front of moto's server application that
refuses what real AWS refuses and moto lets through, with AWS's own error codes and messages.

It lives with the test support code because it is a test double: the tests serve it from the
test process (see :class:`tests.support.processes.MotoServer`), and ``bench/aws_emulator.py``
serves it from the benchmarks' emulator process, so both exercise the same rules. It runs in
moto's own process and reads moto's backends directly (a certificate's validation record is
looked up in the emulated hosted zones, an API Gateway domain's certificate in the emulated
ACM), which a forwarding proxy could not do.

Every rule can be switched off or tuned per test (``strict.rules.lambda_states = False``), or
over HTTP for an emulator in another process (``POST /_strict/rules`` with a JSON object of rule
fields; ``GET /_strict/stats`` answers the calls seen per service and operation and the
refusals per rule; ``POST /moto-api/reset`` also resets the rules' state).

The rules and where AWS documents them:

- ``acm_validation``: a DNS-validated certificate stays ``PENDING_VALIDATION`` until its
  validation CNAME exists in a hosted zone, then is ``ISSUED`` ``acm_issue_delay_s`` later.
  https://docs.aws.amazon.com/acm/latest/userguide/dns-validation.html
- ``apigw_domain_needs_issued``: ``CreateDomainName`` with a certificate that is not issued is a
  ``BadRequestException``.
  https://docs.aws.amazon.com/apigateway/latest/developerguide/how-to-custom-domains-prerequisites.html
- ``lambda_states``: a new function is ``Pending`` for ``lambda_pending_s``, an update leaves
  ``LastUpdateStatus: InProgress`` for ``lambda_update_s`` (each window drawn uniformly within
  ``lambda_jitter``, a fraction, of its length; 0: exactly); an update or a publish meanwhile is a
  ``ResourceConflictException``.
  https://docs.aws.amazon.com/lambda/latest/dg/functions-states.html
- ``iam_propagation``: for ``iam_propagation_s`` after ``CreateRole``, ``CreateFunction`` with the
  role is an ``InvalidParameterValueException`` ("The role defined for the function cannot be
  assumed by Lambda.").
  https://docs.aws.amazon.com/IAM/latest/UserGuide/troubleshoot_general.html#troubleshoot_general_eventual-consistency
- ``route53_rate``: ``route53_rps`` requests per second per account, all Route 53 operations
  together (a token bucket of ``route53_burst``); beyond, HTTP 400 ``Throttling`` "Rate exceeded".
  https://repost.aws/knowledge-center/route-53-avoid-throttling-errors
- ``route53_pending``: a change to a record set whose previous change is still ``PENDING``
  (``route53_pending_s``) is HTTP 400 ``PriorRequestNotComplete``. (Same page.)
- ``apigw_limits``: ``CreateRestApi`` one request every 3 s, ``CreateDeployment`` every 5 s,
  ``CreateDomainName`` and ``UpdateDomainName`` every 30 s, per account and region; beyond,
  HTTP 429 ``TooManyRequestsException``.
  https://docs.aws.amazon.com/apigateway/latest/developerguide/limits.html
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import re
import threading
import time
import uuid
from collections import Counter
from urllib.parse import parse_qs, unquote
from xml.etree import ElementTree

ACCOUNT = "123456789012"  # moto's default account
_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/([^/]+)/")
_LAMBDA_FN = re.compile(r"^/2015-03-31/functions/([^/]+)(/[a-z]+)?/?$")
_R53_NS = "{https://route53.amazonaws.com/doc/2013-04-01/}"


@dataclasses.dataclass
class Rules:
    """Which rules are on, and their delays (defaults: what AWS typically does, kept short)."""

    acm_validation: bool = True
    acm_issue_delay_s: float = 5.0
    apigw_domain_needs_issued: bool = True
    lambda_states: bool = True
    lambda_pending_s: float = 2.0
    lambda_update_s: float = 1.0
    lambda_jitter: float = 0.0
    iam_propagation: bool = True
    iam_propagation_s: float = 5.0
    route53_rate: bool = True
    route53_rps: float = 5.0
    route53_burst: float = 5.0
    route53_pending: bool = True
    route53_pending_s: float = 2.0
    apigw_limits: bool = True
    # What the account's quotas read as (AWS's defaults for an established account): Lambda's
    # GetAccountSettings and Service Quotas' GetServiceQuota for them, which moto lacks.
    lambda_concurrency: int = 1000
    acm_certificate_quota: int = 2500
    apigw_intervals_s: dict = dataclasses.field(
        default_factory=lambda: {
            "CreateRestApi": 3.0,
            "CreateDeployment": 5.0,
            "CreateDomainName": 30.0,
            "UpdateDomainName": 30.0,
        }
    )

    @classmethod
    def fast(cls, scale: float = 0.05) -> Rules:
        """Every rule on, every delay and interval ``scale`` times the default (tests)."""
        rules = cls()
        for f in dataclasses.fields(cls):
            value = getattr(rules, f.name)
            if f.name.endswith("_s") and isinstance(value, float):
                setattr(rules, f.name, value * scale)
        rules.apigw_intervals_s = {k: v * scale for k, v in rules.apigw_intervals_s.items()}
        rules.route53_rps = cls.route53_rps  # the rate is the rule; tests keep AWS's
        return rules

    def update(self, values: dict) -> None:
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"unknown rules: {sorted(unknown)}")
        for name, value in values.items():
            setattr(self, name, value)


@dataclasses.dataclass
class Call:
    service: str
    region: str
    method: str
    path: str
    query: dict
    body: bytes

    @property
    def operation(self) -> str:
        return _operation(self)


def _operation(call: Call) -> str:
    """The AWS operation of a call, for the services the rules know (else METHOD path)."""
    s, m, p = call.service, call.method, call.path.rstrip("/")
    if s == "lambda":
        if p == "/2015-03-31/functions" and m == "POST":
            return "CreateFunction"
        match = _LAMBDA_FN.match(call.path)
        if match:
            tail = match.group(2) or ""
            return {
                ("GET", ""): "GetFunction",
                ("GET", "/configuration"): "GetFunctionConfiguration",
                ("PUT", "/configuration"): "UpdateFunctionConfiguration",
                ("PUT", "/code"): "UpdateFunctionCode",
                ("POST", "/versions"): "PublishVersion",
            }.get((m, tail), f"{m} {p}")
    if s == "route53":
        if m == "POST" and p.endswith("/rrset"):
            return "ChangeResourceRecordSets"
        if m == "GET" and p.endswith("/rrset"):
            return "ListResourceRecordSets"
        if "/tags/healthcheck/" in p:
            return "ChangeTagsForResource"
        if p.endswith("/healthcheck"):
            return "CreateHealthCheck" if m == "POST" else "ListHealthChecks"
        if "/healthcheck/" in p:
            return {"GET": "GetHealthCheck", "POST": "UpdateHealthCheck", "DELETE": "DeleteHealthCheck"}.get(
                m, f"{m} healthcheck"
            )
        return f"{m} {p.split('/')[2] if p.count('/') > 1 else p}"
    if s == "apigateway":
        if m == "POST" and p == "/restapis":
            return "CreateRestApi"
        if m == "POST" and re.fullmatch(r"/restapis/[^/]+/deployments", p):
            return "CreateDeployment"
        if p == "/domainnames" and m == "POST":
            return "CreateDomainName"
        if re.fullmatch(r"/domainnames/[^/]+", p) and m == "PATCH":
            return "UpdateDomainName"
        return f"{m} {p}"
    if s in ("iam", "sts"):
        action = call.query.get("Action") or parse_qs(call.body.decode(errors="replace")).get("Action", [""])
        return action[0] if action else ""
    if s == "acm":
        return ""  # (the target header; not needed by the rules)
    return f"{m} {p}"


class StrictAws:
    """WSGI middleware: ``StrictAws(moto_app, rules)``."""

    def __init__(self, app, rules: Rules | None = None) -> None:
        from moto import settings as moto_settings

        # moto issues a pending certificate after ACM_VALIDATION_WAIT whatever DNS says; here
        # the acm_validation rule decides.
        moto_settings.ACM_VALIDATION_WAIT = 10**9
        self.app = app
        self.rules = rules or Rules()
        self._lock = threading.Lock()
        self.reset()

    # --- state ---------------------------------------------------------------------------

    def reset(self) -> None:
        with self._lock:
            self.calls: Counter = Counter()  # "service:Operation" -> n
            self.refused: Counter = Counter()  # rule -> n
            self._tokens = self.rules.route53_burst
            self._refilled = time.monotonic()
            self._pending_until: dict[tuple, float] = {}  # (region, function) -> end of Pending
            self._updating_until: dict[tuple, float] = {}  # (region, function) -> end of InProgress
            self._roles: dict[str, float] = {}  # role ARN -> created (monotonic)
            self._rrset_changed: dict[tuple, float] = {}  # (zone, name, type, set id) -> INSYNC at
            self._apigw_last: dict[tuple, float] = {}  # (region, operation) -> last allowed
            self._validated: dict[str, float] = {}  # certificate ARN -> record first seen

    def stats(self) -> dict:
        with self._lock:
            return {"calls": dict(self.calls), "refused": dict(self.refused)}

    # --- WSGI ----------------------------------------------------------------------------

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_strict/"):
            return self._control(environ, start_response, path)
        if path.startswith("/moto-api/reset"):
            self.reset()
            return self.app(environ, start_response)
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        environ["wsgi.input"] = io.BytesIO(body)
        scope = _SCOPE.search(environ.get("HTTP_AUTHORIZATION", ""))
        if not scope:
            return self.app(environ, start_response)
        call = Call(
            service=scope.group(2), region=scope.group(1), method=environ.get("REQUEST_METHOD", "GET"),
            path=unquote(path), query={k: v for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()},
            body=body,
        )  # fmt: skip
        operation = call.operation
        with self._lock:
            self.calls[f"{call.service}:{operation}"] += 1
        answer = self._answer(call)
        if answer is not None:
            status, headers, payload = answer
            start_response(status, [*headers, ("Content-Length", str(len(payload)))])
            return [payload]
        refusal = self._before(call, operation)
        if refusal is not None:
            rule, status, headers, payload = refusal
            with self._lock:
                self.refused[rule] += 1
            start_response(status, [*headers, ("Content-Length", str(len(payload)))])
            return [payload]
        captured: dict = {}

        def capture(status, headers, exc_info=None):
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        result = self.app(environ, capture)
        try:
            payload = b"".join(result)
        finally:
            if hasattr(result, "close"):
                result.close()
        status, headers = captured["status"], captured["headers"]
        if status.startswith("2"):
            payload = self._after(call, operation, payload)
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, [*headers, ("Content-Length", str(len(payload)))])
        return [payload]

    def _control(self, environ, start_response, path):
        if path == "/_strict/rules" and environ.get("REQUEST_METHOD") == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            self.rules.update(json.loads(environ["wsgi.input"].read(length) or b"{}"))
            payload = json.dumps(dataclasses.asdict(self.rules)).encode()
        elif path == "/_strict/stats":
            payload = json.dumps(self.stats()).encode()
        else:
            start_response("404 Not Found", [("Content-Length", "0")])
            return [b""]
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]
        )
        return [payload]

    # --- before: refusals ------------------------------------------------------------------

    def _answer(self, call: Call):
        """Answers moto lacks (the account's quotas)."""
        r = self.rules
        if call.service == "lambda" and call.path.rstrip("/") == "/2016-08-19/account-settings":
            body = {
                "AccountLimit": {
                    "ConcurrentExecutions": r.lambda_concurrency,
                    "UnreservedConcurrentExecutions": r.lambda_concurrency,
                    "CodeSizeUnzipped": 262144000, "CodeSizeZipped": 52428800, "TotalCodeSize": 80530636800,
                },
                "AccountUsage": {"FunctionCount": 0, "TotalCodeSize": 0},
            }  # fmt: skip
            return "200 OK", [("Content-Type", "application/json")], json.dumps(body).encode()
        if call.service == "servicequotas" and b"QuotaCode" in call.body:
            asked = json.loads(call.body)
            values = {
                ("acm", "L-F141DD1D"): r.acm_certificate_quota,
                ("lambda", "L-B99A9384"): r.lambda_concurrency,
            }
            value = values.get((asked.get("ServiceCode"), asked.get("QuotaCode")))
            if value is None:
                return None
            quota = {"ServiceCode": asked["ServiceCode"], "QuotaCode": asked["QuotaCode"],
                     "Value": float(value), "Adjustable": True, "GlobalQuota": False}  # fmt: skip
            return (
                "200 OK",
                [("Content-Type", "application/x-amz-json-1.1")],
                json.dumps({"Quota": quota}).encode(),
            )
        return None

    def _before(self, call: Call, operation: str):
        r = self.rules
        now = time.monotonic()
        if call.service == "route53":
            if r.route53_rate and not self._take_token(now):
                return "route53_rate", *_r53_error("Throttling", "Rate exceeded")
            if r.route53_pending and operation == "ChangeResourceRecordSets":
                keys = _rrset_keys(call)
                with self._lock:
                    busy = any(self._rrset_changed.get(key, 0) > now for key in keys)
                if busy:
                    return "route53_pending", *_r53_error(
                        "PriorRequestNotComplete",
                        "The request was rejected because Route 53 was still processing a prior request.",
                    )
        if call.service == "lambda" and r.lambda_states:
            if operation in ("UpdateFunctionCode", "UpdateFunctionConfiguration", "PublishVersion"):
                key = (call.region, _function_name(call.path))
                with self._lock:
                    pending = self._pending_until.get(key, 0) > now
                    updating = self._updating_until.get(key, 0) > now
                arn = f"arn:aws:lambda:{call.region}:{ACCOUNT}:function:{key[1]}"
                if pending:
                    return "lambda_states", *_json_error(
                        409, "ResourceConflictException",
                        "The operation cannot be performed at this time. The function is currently in "
                        "the following state: Pending",
                    )  # fmt: skip
                if updating:
                    return "lambda_states", *_json_error(
                        409, "ResourceConflictException",
                        f"The operation cannot be performed at this time. An update is in progress for "
                        f"resource: {arn}",
                    )  # fmt: skip
        if call.service == "lambda" and r.iam_propagation and operation == "CreateFunction":
            role = json.loads(call.body or b"{}").get("Role", "")
            with self._lock:
                created = self._roles.get(role)
            if created is not None and now - created < r.iam_propagation_s:
                return "iam_propagation", *_json_error(
                    400, "InvalidParameterValueException",
                    "The role defined for the function cannot be assumed by Lambda.",
                )  # fmt: skip
        if call.service == "apigateway":
            if r.apigw_domain_needs_issued and operation == "CreateDomainName":
                arn = json.loads(call.body or b"{}").get("regionalCertificateArn", "")
                status = self.certificate_status(call.region, arn)
                if status != "ISSUED":
                    return "apigw_domain_needs_issued", *_json_error(
                        400, "BadRequestException",
                        f"Certificate {arn} in account {ACCOUNT} not yet issued"
                        if status
                        else f"Invalid certificate ARN: {arn}. Certificate must be in 'ISSUED' state.",
                    )  # fmt: skip
            interval = r.apigw_intervals_s.get(operation) if r.apigw_limits else None
            if interval:
                key = (call.region, operation)
                with self._lock:
                    last = self._apigw_last.get(key)
                    if last is not None and now - last < interval:
                        refused = True
                    else:
                        refused = False
                        self._apigw_last[key] = now
                if refused:
                    return "apigw_limits", *_json_error(429, "TooManyRequestsException", "Too Many Requests")
        if call.service == "acm":
            self.refresh_certificates()
        return None

    def _take_token(self, now: float) -> bool:
        r = self.rules
        with self._lock:
            self._tokens = min(r.route53_burst, self._tokens + (now - self._refilled) * r.route53_rps)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False

    # --- after: what AWS would answer --------------------------------------------------------

    def _after(self, call: Call, operation: str, payload: bytes) -> bytes:
        r = self.rules
        now = time.monotonic()
        if call.service == "iam" and operation == "CreateRole":
            match = re.search(rb"<Arn>([^<]+)</Arn>", payload)
            if match:
                with self._lock:
                    self._roles[match.group(1).decode()] = now
        if call.service == "route53" and operation == "ChangeResourceRecordSets":
            with self._lock:
                for key in _rrset_keys(call):
                    self._rrset_changed[key] = now + r.route53_pending_s
        if call.service == "lambda" and r.lambda_states:
            if operation == "CreateFunction":
                data = json.loads(payload)
                key = (call.region, data.get("FunctionName", ""))
                with self._lock:
                    self._pending_until[key] = now + _window(r.lambda_pending_s, r.lambda_jitter)
                    self._updating_until.pop(key, None)
                return json.dumps(self._with_state(key, data, now)).encode()
            if operation in ("UpdateFunctionCode", "UpdateFunctionConfiguration"):
                data = json.loads(payload)
                key = (call.region, data.get("FunctionName", ""))
                with self._lock:
                    self._updating_until[key] = now + _window(r.lambda_update_s, r.lambda_jitter)
                return json.dumps(self._with_state(key, data, now)).encode()
            if operation in ("GetFunction", "GetFunctionConfiguration"):
                data = json.loads(payload)
                config = data.get("Configuration", data)
                key = (call.region, config.get("FunctionName", ""))
                if "Configuration" in data:
                    data["Configuration"] = self._with_state(key, config, now)
                else:
                    data = self._with_state(key, data, now)
                return json.dumps(data).encode()
        return payload

    def _with_state(self, key: tuple, config: dict, now: float) -> dict:
        with self._lock:
            pending = self._pending_until.get(key, 0) > now
            updating = self._updating_until.get(key, 0) > now
        config = dict(config)
        if pending:
            config.update(
                State="Pending", StateReason="The function is being created.", StateReasonCode="Creating",
                LastUpdateStatus="InProgress",
            )  # fmt: skip
        else:
            config.update(State="Active", LastUpdateStatus="InProgress" if updating else "Successful")
            if updating:
                config.update(
                    LastUpdateStatusReason="The function is being updated.",
                    LastUpdateStatusReasonCode="Updating",
                )  # fmt: skip
        return config

    # --- ACM, read from moto's backends ------------------------------------------------------

    def certificate_status(self, region: str, arn: str) -> str:
        """The certificate's status after this rule's refresh ("" when there is none)."""
        self.refresh_certificates()
        from moto.acm.models import acm_backends

        cert = acm_backends[ACCOUNT][region]._certificates.get(arn)
        return cert.status if cert is not None else ""

    def refresh_certificates(self) -> None:
        """Issue the pending certificates whose validation record has been in a hosted zone for
        ``acm_issue_delay_s`` (all of them at once when the rule is off)."""
        from moto.acm.models import acm_backends

        now = time.monotonic()
        records = None
        for backend in list(acm_backends.get(ACCOUNT, {}).values()):
            for arn, cert in list(backend._certificates.items()):
                if cert.type != "AMAZON_ISSUED" or cert.status != "PENDING_VALIDATION":
                    continue
                if not self.rules.acm_validation:
                    cert.status = "ISSUED"
                    continue
                if arn not in self._validated:
                    if records is None:
                        records = _zone_records()
                    wanted = _validation_records(cert)
                    if wanted and all(w in records for w in wanted):
                        self._validated[arn] = now
                seen = self._validated.get(arn)
                if seen is not None and now - seen >= self.rules.acm_issue_delay_s:
                    cert.status = "ISSUED"


def _window(length_s: float, jitter: float) -> float:
    """A settling window of about ``length_s``: exactly, or drawn within ``jitter`` of it."""
    if not jitter:
        return length_s
    return random.uniform(length_s * (1 - jitter), length_s * (1 + jitter))  # noqa: S311 - not security


def _validation_records(cert) -> list[tuple[str, str]]:
    options = cert.describe()["Certificate"].get("DomainValidationOptions") or []
    return [
        (o["ResourceRecord"]["Name"].lower().rstrip("."), o["ResourceRecord"]["Value"].lower().rstrip("."))
        for o in options
        if o.get("ResourceRecord")
    ]


def _zone_records() -> set[tuple[str, str]]:
    """Every (name, value) of the CNAME records in the emulated hosted zones."""
    from moto.route53.models import route53_backends

    found = set()
    backend = route53_backends[ACCOUNT]["global"]
    for zone in list(backend.zones.values()):
        for record in list(zone.rrsets):
            if record.type != "CNAME":
                continue
            for value in record.records or []:
                value = value.get("Value", "") if isinstance(value, dict) else value
                found.add((record.name.lower().rstrip("."), value.lower().rstrip(".")))
    return found


def _function_name(path: str) -> str:
    match = _LAMBDA_FN.match(path)
    name = match.group(1) if match else ""
    if name.startswith("arn:"):
        name = name.split(":")[6]
    return name.split(":")[0]


def _rrset_keys(call: Call) -> list[tuple]:
    zone = call.path.rstrip("/").split("/")[-2]
    try:
        root = ElementTree.fromstring(call.body)  # noqa: S314 - the tests' own requests
    except ElementTree.ParseError:
        return []
    keys = []
    for rrset in root.iter(f"{_R53_NS}ResourceRecordSet"):
        name = (rrset.findtext(f"{_R53_NS}Name") or "").lower().rstrip(".")
        kind = rrset.findtext(f"{_R53_NS}Type") or ""
        ident = rrset.findtext(f"{_R53_NS}SetIdentifier") or ""
        keys.append((zone, name, kind, ident))
    return keys


def _r53_error(code: str, message: str):
    payload = (
        '<?xml version="1.0"?>\n<ErrorResponse xmlns="https://route53.amazonaws.com/doc/2013-04-01/">'
        f"<Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error>"
        f"<RequestId>{uuid.uuid4()}</RequestId></ErrorResponse>"
    ).encode()
    return "400 Bad Request", [("Content-Type", "text/xml")], payload


def _json_error(status: int, code: str, message: str):
    reason = {400: "Bad Request", 409: "Conflict", 429: "Too Many Requests"}[status]
    payload = json.dumps({"Type": "User", "message": message, "Message": message}).encode()
    headers = [("Content-Type", "application/json"), ("x-amzn-ErrorType", code)]
    if status == 429:
        headers.append(("Retry-After", "1"))
    return f"{status} {reason}", headers, payload


def serve(app, host: str = "127.0.0.1", port: int = 0):
    """Serve a WSGI app (threaded, moto's request handler) in a daemon thread; returns
    ``(server, url)``."""
    from moto.moto_server.threaded_moto_server import MotoRequestHandler
    from werkzeug.serving import make_server

    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://{host}:{server.server_address[1]}"


def moto_app():
    """moto's server application (every service, one state per process)."""
    from moto.server import DomainDispatcherApplication, create_backend_app

    return DomainDispatcherApplication(create_backend_app)
