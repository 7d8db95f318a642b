import binascii
from base64 import b64decode
from urllib import parse

from django.core.exceptions import FieldDoesNotExist, ValidationError
from rest_framework import exceptions, pagination
from rest_framework.response import Response

from .errors import DomainError, InvalidParameter


class InvalidCursor(DomainError):
    code = "invalid_cursor"

    def __init__(self):
        message = "Not a cursor this list handed out; start again without it."
        super().__init__(f"cursor: {message}", fields={"cursor": [message]})


def int_parameter(request, name: str, *, default: int, minimum: int, maximum: int) -> int:
    """The integer query parameter ``name`` (``default`` when absent). Anything that is not a whole
    number from ``minimum`` to ``maximum`` is a 400 ``invalid`` naming it."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    text = raw.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()) or not minimum <= int(text) <= maximum:
        raise InvalidParameter(name, f"Must be a whole number from {minimum} to {maximum}.")
    return int(text)


class CursorPagination(pagination.CursorPagination):
    """``?limit=`` (1 to 200) and an opaque cursor: ``{"results": [...], "next": url|null}``.
    Any other ``limit`` is a 400 ``invalid``; a cursor that was not handed out by this list
    (tampered, truncated, from another list) is a 400 ``invalid_cursor``, never a 404 or a 500."""

    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200
    ordering = "-id"

    def get_page_size(self, request):
        return int_parameter(
            request, self.page_size_query_param, default=self.page_size, minimum=1, maximum=self.max_page_size
        )

    def paginate_queryset(self, queryset, request, view=None):
        if "ordering" in request.query_params:
            # Cursors need one fixed order; a client asking for another must not get this one silently.
            order = ", ".join(self.ordering) if not isinstance(self.ordering, str) else self.ordering
            raise InvalidParameter("ordering", f"This list has one order ({order}); it cannot be changed.")
        self._model = queryset.model
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound:
            raise InvalidCursor()

    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)
        if cursor is None:
            return cursor
        # DRF reads any base64 as a cursor, missing parts as defaults: "bm9uc2Vuc2U=" would be the
        # first page. Every cursor handed out holds a position or an offset, and nothing else.
        encoded = request.query_params.get(self.cursor_query_param, "")
        try:
            parts = parse.parse_qs(b64decode(encoded.encode("ascii")).decode("ascii"), keep_blank_values=True)
        except (TypeError, ValueError, binascii.Error):
            raise InvalidCursor()
        if not parts or not set(parts) <= {"o", "r", "p"} or any(len(v) != 1 for v in parts.values()):
            raise InvalidCursor()
        if cursor.position is None:
            return cursor
        name = self.ordering[0].lstrip("-")
        try:
            field = self._model._meta.get_field(name)
        except FieldDoesNotExist:
            return cursor
        try:
            if "\x00" in cursor.position:
                raise ValidationError("NUL")
            field.to_python(cursor.position)
        except (ValidationError, TypeError, ValueError):
            raise InvalidCursor()
        return cursor

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"Results per page, 1 to {self.max_page_size} (default {self.page_size})."
                )
                parameter["schema"].update(minimum=1, maximum=self.max_page_size)
        return parameters

    def get_paginated_response(self, data):
        return Response({"results": data, "next": self.get_next_link(), "previous": self.get_previous_link()})

    def get_paginated_response_schema(self, schema):
        return {
            "type": "object",
            "required": ["results", "next"],
            "properties": {
                "results": schema,
                "next": {"type": "string", "format": "uri", "nullable": True},
                "previous": {"type": "string", "format": "uri", "nullable": True},
            },
        }
