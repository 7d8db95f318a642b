"""Request parsers that turn every malformed or oversized body into a 4xx, never a 500.

DRF reads a request's stream itself, around Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` check (which
only guards ``request.body`` and Django's own form parsing): these parsers apply the same limit to
JSON bodies, and to multipart bodies unless the view says how large its uploads may be with
``max_request_body`` (bytes). Django's limits on form fields (``DATA_UPLOAD_MAX_NUMBER_FIELDS``)
still apply to multipart bodies and answer 413 ``too_many_fields``.
"""

from __future__ import annotations

import io

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import APIException, ParseError


class RequestTooLarge(APIException):
    """413 ``request_too_large`` (the contract's JSON error, by the API's exception handler). Not a
    DomainError: DRF imports the parsers while ``controlplane.errors`` imports DRF."""

    status_code = 413
    default_code = "request_too_large"


def body_limit(parser_context) -> int:
    view = (parser_context or {}).get("view")
    return getattr(view, "max_request_body", None) or settings.DATA_UPLOAD_MAX_MEMORY_SIZE


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"The request body is over the limit of {limit // 1024} KB.")


def check_declared_length(parser_context, limit: int) -> None:
    """Refuse a body whose Content-Length is over ``limit`` before reading any of it."""
    request = (parser_context or {}).get("request")
    meta = getattr(request, "META", {}) if request is not None else {}
    try:
        declared = int(meta.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit:
        raise _too_large(limit)


def read_limited(stream, parser_context) -> io.BytesIO:
    """The body, read no further than the limit (a body without a Content-Length is cut off there)."""
    limit = body_limit(parser_context)
    check_declared_length(parser_context, limit)
    data = stream.read(limit + 1) if stream is not None else b""
    if len(data) > limit:
        raise _too_large(limit)
    return io.BytesIO(data)


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser within the body limit; a body nested too deep for Python's parser is
    malformed input too."""

    def parse(self, stream, media_type=None, parser_context=None):
        stream = read_limited(stream, parser_context)
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.")


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser, refusing a body over the view's limit before it is spooled."""

    def parse(self, stream, media_type=None, parser_context=None):
        check_declared_length(parser_context, body_limit(parser_context))
        return super().parse(stream, media_type, parser_context)
