"""Domain errors and the one place they become HTTP answers.

Every error body is ``{"code": "<stable_snake_case>", "detail": "<sentence>", "fields": {...}}``.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import (
    RequestDataTooBig,
    SuspiciousOperation,
    TooManyFieldsSent,
    TooManyFilesSent,
)
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.template import loader
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler


class DomainError(Exception):
    """A rule of the domain was broken; ``code`` and ``status_code`` say how the API answers."""

    code = "invalid_request"
    status_code = 400

    def __init__(self, detail: str, *, fields: dict | None = None, extra: dict | None = None):
        super().__init__(detail)
        self.detail = detail
        self.fields = fields or {}
        self.extra = extra or {}


class NotFound(DomainError):
    code = "not_found"
    status_code = 404


class Forbidden(DomainError):
    """The caller sees the object but lacks the role (or token scope) for this action."""

    code = "permission_denied"
    status_code = 403


class Conflict(DomainError):
    code = "conflict"
    status_code = 409


class InvalidParameter(DomainError):
    """A query parameter (``limit``, a filter, ...) has a value the endpoint cannot use."""

    code = "invalid"

    def __init__(self, parameter: str, message: str):
        super().__init__(f"{parameter}: {message}", fields={parameter: [message]})
        self.parameter = parameter


class RequestTooLarge(DomainError):
    code = "request_too_large"
    status_code = 413


class TooManyFields(DomainError):
    code = "too_many_fields"
    status_code = 413


def _request_error(exc: Exception) -> DomainError | None:
    """Django's refusals of a request body (raised wherever the body is parsed: Django's forms,
    DRF's parsers, the multipart parser) as the contract's errors; ``None`` for anything else."""
    if isinstance(exc, RequestDataTooBig):
        return RequestTooLarge(
            f"The request body is over the limit of {settings.DATA_UPLOAD_MAX_MEMORY_SIZE // 1024} KB."
        )
    if isinstance(exc, TooManyFieldsSent):
        return TooManyFields(f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FIELDS} fields.")
    if isinstance(exc, TooManyFilesSent):
        return TooManyFields(f"The request has more than {settings.DATA_UPLOAD_MAX_NUMBER_FILES} files.")
    if isinstance(exc, SuspiciousOperation):
        return DomainError("The request could not be understood.")
    return None


_CODES = {
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_request",
    exceptions.Throttled: "throttled",
    exceptions.ValidationError: "invalid",
}


def _first_message(fields) -> str:
    if isinstance(fields, dict):
        for name, value in fields.items():
            msg = _first_message(value)
            if msg:
                return msg if name == "non_field_errors" else f"{name}: {msg}"
    if isinstance(fields, list):
        for value in fields:
            msg = _first_message(value)
            if msg:
                return msg
    if isinstance(fields, str):
        return fields
    return ""


def error_body(code: str, detail: str, fields: dict | None = None, **extra) -> dict:
    return {"code": code, "detail": detail, "fields": fields or {}, **extra}


def exception_handler(exc, context):
    """DRF's exception handler, answering every error in the contract's JSON shape."""
    exc = _request_error(exc) or exc
    if isinstance(exc, DomainError):
        return Response(error_body(exc.code, exc.detail, exc.fields, **exc.extra), status=exc.status_code)
    if isinstance(exc, DjangoValidationError):
        exc = exceptions.ValidationError(as_serializer_error(exc))
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    code = next((c for cls, c in _CODES.items() if isinstance(exc, cls)), None)
    code = code or getattr(exc, "default_code", "") or "error"
    if isinstance(exc, exceptions.ValidationError):
        fields = response.data if isinstance(response.data, dict) else {"non_field_errors": response.data}
        detail = _first_message(fields) or "Invalid input."
        response.data = error_body(code, detail, fields)
    else:
        detail = response.data.get("detail", "") if isinstance(response.data, dict) else str(response.data)
        response.data = error_body(code, str(detail))
    return response


def json_error(code: str, detail: str, status_code: int, **extra) -> JsonResponse:
    """The same error shape for plain Django views (webhooks, health)."""
    return JsonResponse(error_body(code, detail, **extra), status=status_code)


def _wants_json(request) -> bool:
    """The API (and anything asking for JSON) gets JSON errors; browsers get pages."""
    if request.path.startswith("/api/") or request.path.startswith("/healthz"):
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def _page(request, status_code: int, title: str, detail: str):
    return render(
        request,
        "deployments/error.html",
        {"status": status_code, "title": title, "detail": detail},
        status=status_code,
    )


def handler404(request, exception=None):
    if _wants_json(request):
        return json_error("not_found", "Not found.", status.HTTP_404_NOT_FOUND)
    return _page(request, 404, "Not found", "There is nothing here, or it is not yours to see.")


def handler403(request, exception=None):
    if _wants_json(request):
        return json_error("permission_denied", "Not allowed.", status.HTTP_403_FORBIDDEN)
    return _page(request, 403, "Not allowed", "You may not do that here.")


def handler400(request, exception=None):
    """Django's answer to a SuspiciousOperation: a body over the size or field-count limits is a
    413 ``request_too_large`` / ``too_many_fields``; anything else a 400 ``bad_request``."""
    error = _request_error(exception) if exception is not None else None
    if error is not None and error.status_code == 413:
        if _wants_json(request):
            return json_error(error.code, error.detail, error.status_code)
        return _page(request, 413, "Too large", error.detail)
    if _wants_json(request):
        return json_error("bad_request", "The request could not be understood.", status.HTTP_400_BAD_REQUEST)
    return _page(request, 400, "Bad request", "The request could not be understood.")


def handler500(request):
    if _wants_json(request):
        return json_error("server_error", "Something went wrong on our side.", 500)
    # A plain page: no context processors or database reads that could fail again.
    body = loader.get_template("500.html").render({})
    return HttpResponse(body, status=500)


def csrf_failure(request, reason=""):
    if _wants_json(request):
        return json_error("csrf_failed", f"CSRF check failed: {reason}", status.HTTP_403_FORBIDDEN)
    return _page(
        request,
        403,
        "Form expired",
        "The form was not accepted (its security token is missing or old). "
        "Go back, reload the page and try again.",
    )
