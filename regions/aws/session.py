"""boto3 clients for a region (and optionally an assumed role), and the one AWS error type.

Every other module in ``regions.aws`` gets its clients from :func:`client` and raises only
:class:`AwsError`, so callers never import botocore to tell a throttle from a denial.
"""

from __future__ import annotations

import functools
import inspect
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
import botocore.session
from boto3.exceptions import Boto3Error
from botocore.client import BaseClient
from botocore.config import Config
from botocore.credentials import CredentialProvider, CredentialResolver, DeferredRefreshableCredentials
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
    WaiterError,
)
from django.conf import settings

ROLE_SESSION_NAME = "controlplane"

# Error codes AWS uses for "slow down" across the services we call (API Gateway and Route 53 have
# their own spellings); botocore's standard retry mode retries the same family.
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "InternalError",
        "InternalFailure",
        "InternalServerError",
        "ServiceException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "IDPCommunicationError",
        "EndpointConnectionError",
        "ReadTimeout",
        "ConnectTimeout",
        "ConnectionClosed",
        "WaiterTimeout",
    }
)


class AwsError(Exception):
    """An AWS call failed. ``code`` is AWS's error code (``AccessDeniedException``, ...), ``retryable``
    says whether trying the same call again later may succeed (throttling, 5xx, network)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        operation: str = "",
        status: int = 0,
        retryable: bool | None = None,
        region: str = "",
    ):
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.operation = operation
        self.status = status
        self.retryable = is_retryable(code, status, message) if retryable is None else retryable
        self.region = region

    def __str__(self) -> str:
        where = " ".join(part for part in (self.region, self.operation) if part)
        return f"{where + ': ' if where else ''}{self.code}: {self.message}"

    def __reduce__(self):
        # Keeps every attribute across pickling (Celery results, multiprocessing).
        return (
            _rebuild_error,
            (self.code, self.message, self.operation, self.status, self.retryable, self.region),
        )


def _rebuild_error(code, message, operation, status, retryable, region) -> AwsError:
    return AwsError(code, message, operation=operation, status=status, retryable=retryable, region=region)


def is_retryable(code: str, status: int, message: str = "") -> bool:
    """True for throttling, 5xx and network failures; False for denials, validation, not found."""
    if code in THROTTLING_CODES or code in TRANSIENT_CODES:
        return True
    if code == "ResourceConflictException" and "in progress" in message.lower():
        # Lambda: "An update is in progress for resource ..." clears on its own.
        return True
    return status >= 500 or status == 429


_STATUS_CODES = {
    "400": "BadRequest",
    "403": "AccessDenied",
    "404": "NotFound",
    "429": "TooManyRequestsException",
}


def translate(exc: BaseException, *, region: str = "") -> AwsError:
    """The :class:`AwsError` for a botocore/boto3 exception (an ``AwsError`` is returned as is)."""
    if isinstance(exc, AwsError):
        if region and not exc.region:
            exc.region = region
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {}) or {}
        meta = exc.response.get("ResponseMetadata", {}) or {}
        status = int(meta.get("HTTPStatusCode") or 0)
        code = str(error.get("Code") or status or "Unknown")
        # HEAD answers carry no body, so botocore can only report the status as the code.
        code = _STATUS_CODES.get(code, code)
        message = str(error.get("Message") or exc)
        return AwsError(code, message, operation=exc.operation_name or "", status=status, region=region)
    if isinstance(exc, WaiterError):
        last = getattr(exc, "last_response", None) or {}
        error = last.get("Error") or {}
        code = str(error.get("Code") or "WaiterError")
        return AwsError(code, str(exc), operation=getattr(exc, "name", ""), region=region)
    if isinstance(exc, ConnectTimeoutError):
        return AwsError("ConnectTimeout", str(exc), region=region)
    if isinstance(exc, ReadTimeoutError):
        return AwsError("ReadTimeout", str(exc), region=region)
    if isinstance(exc, ConnectionClosedError):
        return AwsError("ConnectionClosed", str(exc), region=region)
    if isinstance(exc, EndpointConnectionError):
        return AwsError("EndpointConnectionError", str(exc), region=region)
    if isinstance(exc, NoCredentialsError):
        return AwsError("NoCredentials", str(exc), retryable=False, region=region)
    if isinstance(exc, ParamValidationError):
        return AwsError("ParamValidationError", str(exc), retryable=False, region=region)
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, Boto3Error) and isinstance(cause, ClientError | BotoCoreError):
        # The S3 transfer manager wraps the real error (S3UploadFailedError from ClientError).
        return translate(cause, region=region)
    return AwsError(type(exc).__name__, str(exc), retryable=False, region=region)


F = TypeVar("F", bound=Callable[..., Any])

# What an AWS call can raise; anything else is a bug and is left alone.
AWS_EXCEPTIONS = (BotoCoreError, ClientError, Boto3Error, AwsError)


def aws_errors(func: F) -> F:
    """Decorator: botocore/boto3 exceptions raised by ``func`` leave it as :class:`AwsError`, tagged
    with the ``region`` argument when the function has one."""
    signature = inspect.signature(func)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except AWS_EXCEPTIONS as exc:
            region = ""
            if "region" in signature.parameters:
                try:
                    region = str(signature.bind_partial(*args, **kwargs).arguments.get("region") or "")
                except TypeError:
                    region = ""
            raise translate(exc, region=region) from exc

    return wrapper  # type: ignore[return-value]


# --- Clients ------------------------------------------------------------------------------------
# boto3 clients are thread-safe, sessions are not. One client per (service, region, role) is shared
# by every thread; only building clients (which touches a session) happens under the lock. Client
# creation is CPU-bound Python, so per-thread sessions would not build them any faster under the
# GIL, and would build each one once per worker thread.
_lock = threading.RLock()
_clients: dict[tuple[str, str, str], BaseClient] = {}
_sessions: dict[tuple[str, str], boto3.session.Session] = {}
_caches: list[dict] = []


def register_cache(cache: dict) -> dict:
    """Have :func:`reset_clients` clear ``cache`` too (per-process caches of AWS lookups)."""
    _caches.append(cache)
    return cache


_account_ids: dict[str, str] = register_cache({})


def reset_clients() -> None:
    """Forget every cached client, session, assumed-role credential and lookup (tests switch
    endpoints and fake accounts between cases)."""
    with _lock:
        _clients.clear()
        _sessions.clear()
        for cache in _caches:
            cache.clear()


def endpoint_url(service: str) -> str | None:
    """The endpoint override for ``service`` from settings, or None for AWS's own endpoint.

    ``AWS_ENDPOINT_URLS`` keys may use the client name (``apigateway``, ``route53``) or botocore's
    environment spelling (``api_gateway``, ``route_53``)."""

    def norm(name: str) -> str:
        return name.replace("_", "").replace("-", "").replace(" ", "").lower()

    per_service = getattr(settings, "AWS_ENDPOINT_URLS", None) or {}
    for key, url in per_service.items():
        if url and norm(key) == norm(service):
            return url
    return getattr(settings, "AWS_ENDPOINT_URL", "") or None


def client_config() -> Config:
    """Retries, timeouts and pool size for every client, from settings."""
    return Config(
        retries={
            "mode": getattr(settings, "AWS_RETRY_MODE", "standard"),
            # Total attempts, first one included, as the AWS_MAX_ATTEMPTS environment variable means
            # it (botocore's "max_attempts" key would count retries only).
            "total_max_attempts": int(getattr(settings, "AWS_MAX_ATTEMPTS", 12)),
        },
        connect_timeout=float(getattr(settings, "AWS_CONNECT_TIMEOUT", 5)),
        read_timeout=float(getattr(settings, "AWS_READ_TIMEOUT", 60)),
        # Clients are shared by every worker thread; the default pool of 10 would discard connections.
        max_pool_connections=int(getattr(settings, "AWS_MAX_POOL_CONNECTIONS", 50)),
        # Settings are the one source of endpoints (they already read AWS_ENDPOINT_URL*); without
        # this botocore would also apply the environment's values behind the settings' back.
        ignore_configured_endpoint_urls=True,
        user_agent_appid="controlplane",
    )


class _FixedProvider(CredentialProvider):
    METHOD = "controlplane-assume-role"
    CANONICAL_NAME = "controlplane-assume-role"

    def __init__(self, credentials):
        self._credentials = credentials

    def load(self):
        return self._credentials


def _assume_role_fetcher(role_arn: str, region: str) -> Callable[[], dict]:
    def fetch() -> dict:
        response = client("sts", region).assume_role(
            RoleArn=role_arn,
            RoleSessionName=ROLE_SESSION_NAME,
            DurationSeconds=int(getattr(settings, "AWS_ROLE_DURATION", 3600)),
        )
        creds = response["Credentials"]
        return {
            "access_key": creds["AccessKeyId"],
            "secret_key": creds["SecretAccessKey"],
            "token": creds["SessionToken"],
            "expiry_time": creds["Expiration"].isoformat(),
        }

    return fetch


def _session(role_arn: str, region: str) -> boto3.session.Session:
    key = (role_arn, region if role_arn else "")
    session = _sessions.get(key)
    if session is None:
        core = botocore.session.Session()
        if role_arn:
            # Assumed through this region's STS endpoint, so one region's STS trouble never blocks
            # the others. botocore refreshes the credentials shortly before they expire (advisory
            # 15 min, mandatory 10 min), and defers the first AssumeRole to the first request.
            credentials = DeferredRefreshableCredentials(
                refresh_using=_assume_role_fetcher(role_arn, region), method="assume-role"
            )
            core.register_component("credential_provider", CredentialResolver([_FixedProvider(credentials)]))
        session = _sessions[key] = boto3.session.Session(botocore_session=core)
    return session


def client(service: str, region: str, *, role_arn: str = "") -> BaseClient:
    """A cached botocore client for ``service`` in ``region``, acting as ``role_arn`` when given."""
    key = (service, region, role_arn)
    found = _clients.get(key)
    if found is not None:
        return found
    with _lock:
        found = _clients.get(key)
        if found is None:
            found = _session(role_arn, region).client(
                service, region_name=region, endpoint_url=endpoint_url(service), config=client_config()
            )
            _tune_throttling_backoff(found)
            _limit_rate(found, service, region)
            found = _clients[key] = found
        return found


def _tune_throttling_backoff(client: BaseClient) -> None:
    """Standard retries wait ``rand(0, 1) * min(base * 2**i, cap)`` before retry ``i``, with a
    base of 1 s for throttling errors and a cap of 20 s. When half of the calls are throttled
    whatever the rate, each retry level adds ``base / 4`` on average (half as likely, twice as
    long), about ``1.75 * base`` per call over 8 attempts: with 1 s, a region's ~40 sequential
    calls waited over a minute more, and a deploy took 5-8x as long (tests/chaos/test_throttling.py).
    AWS_THROTTLE_BASE_DELAY (10 ms) and AWS_RETRY_MAX_DELAY (5 s) set both: a throttled call costs
    about one more round trip, and a quota that stays exceeded is still backed off from, doubling
    up to seconds. Adaptive mode has its own client-side rate limiter instead and is left as
    botocore makes it."""
    if getattr(settings, "AWS_RETRY_MODE", "standard") != "standard":
        return
    if client.meta.service_model.service_name == "route53":
        # Route 53's quota is a rate for the whole account that the shared bucket paces
        # (ROUTE53_REQUESTS_PER_SECOND); its retries keep botocore's longer backoff, so they
        # never come back faster than that rate.
        return
    service_event = client.meta.service_model.service_id.hyphenize()
    handlers = getattr(client.meta.events, "_emitter", client.meta.events)._unique_id_handlers
    registered = handlers.get(f"retry-config-{service_event}")
    backoff = getattr(getattr(getattr(registered, "get", lambda _k: None)("handler"), "__self__", None),
                      "_retry_policy", None)  # fmt: skip
    backoff = getattr(backoff, "_retry_backoff", None)
    if backoff is None:  # botocore changed shape: its own backoff stays (tests/regions/aws notice)
        return
    backoff._DEFAULT_BACKOFF_CONFIG = {
        **type(backoff)._DEFAULT_BACKOFF_CONFIG,
        "throttling_base_scale": float(settings.AWS_THROTTLE_BASE_DELAY),
    }
    backoff._max_backoff = float(settings.AWS_RETRY_MAX_DELAY)


def _limit_rate(client: BaseClient, service: str, region: str) -> None:
    """With AWS_REQUESTS_PER_SECOND, every request (retries included) to one service in one
    region takes a token of a bucket shared by every worker (:mod:`.ratelimit`) first."""
    rate = float(getattr(settings, "AWS_REQUESTS_PER_SECOND", 0) or 0)
    if rate <= 0 or service == "route53":  # (Route 53 has its own account-wide bucket)
        return
    from . import ratelimit

    def take_token(**_kwargs) -> None:
        ratelimit.acquire(f"aws:{service}:{region}", rate=rate, burst=max(1.0, rate), timeout=60)

    client.meta.events.register("before-send", take_token)


@aws_errors
def account_id(region: str, *, role_arn: str = "") -> str:
    """The AWS account id the calls in ``region`` (as ``role_arn``) act in; cached per role."""
    found = _account_ids.get(role_arn)
    if found is None:
        found = _account_ids[role_arn] = client("sts", region, role_arn=role_arn).get_caller_identity()[
            "Account"
        ]
    return found
