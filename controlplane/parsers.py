"""Request parsers that turn every malformed or oversized body into a 4xx, never a 500.

DRF reads a request's stream itself, around Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` check (which
only guards ``request.body`` and Django's own form parsing): these parsers apply the same limit to
JSON bodies, and to multipart bodies unless the view says how large its uploads may be with
``max_request_body`` (bytes). Django's limits on form fields (``DATA_UPLOAD_MAX_NUMBER_FIELDS``)
still apply to multipart bodies and answer 413 ``too_many_fields``.
"""

from __future__ import annotations

import io
from typing import Any

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


class NulCharacter(APIException):
    """A string in the body holds a NUL character: never valid input here, and PostgreSQL refuses
    to store one (in text and in jsonb), so it is refused as a whole rather than stripped. (An
    APIException, not a DomainError: controlplane.errors imports DRF's views, which import this.)"""

    status_code = 400
    default_code = "invalid_characters"


def nul_path(data: Any) -> str | None:
    """The path (``commits[2].author.name``) of the first string in ``data`` (a parsed JSON document)
    that holds a NUL character, as a key or a value; None when there is none. Walks without
    recursion, so a deeply nested document cannot exhaust the stack."""
    pending: list[tuple[str, Any]] = [("", data)]
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            if "\x00" in value:
                return path or "(body)"
        elif isinstance(value, dict):
            children = []
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if isinstance(key, str) and "\x00" in key:
                    return where.replace("\x00", "\\0")
                children.append((where, item))
            pending.extend(reversed(children))  # the first one in the document is reported
        elif isinstance(value, list):
            pending.extend(reversed([(f"{path}[{i}]", item) for i, item in enumerate(value)]))
    return None


def nul_detail(path: str, *, what: str = "The body") -> str:
    return f"{what}'s field '{path[:200]}' contains a NUL character, which is never valid."


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser within the body limit; a body nested too deep for Python's parser is
    malformed input too, and a NUL character in any string is a 400 ``invalid_characters`` (see
    NulCharacter)."""

    def parse(self, stream, media_type=None, parser_context=None):
        stream = read_limited(stream, parser_context)
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.")
        path = nul_path(data)
        if path is not None:
            raise NulCharacter(nul_detail(path))
        return data


class MultiPartParser(parsers.MultiPartParser):
    """DRF's multipart parser, refusing a body over the view's limit before it is spooled."""

    def parse(self, stream, media_type=None, parser_context=None):
        check_declared_length(parser_context, body_limit(parser_context))
        return super().parse(stream, media_type, parser_context)
