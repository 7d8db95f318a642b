"""Request parsers that turn every malformed body into a 400, never a 500."""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import APIException, ParseError


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
    """DRF's JSON parser; a body nested too deep for Python's parser is malformed input too, and a
    NUL character in any string is a 400 ``invalid_characters`` (see NulCharacter)."""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.")
        path = nul_path(data)
        if path is not None:
            raise NulCharacter(nul_detail(path))
        return data
