from django.core.exceptions import FieldDoesNotExist, ValidationError
from rest_framework import exceptions, pagination
from rest_framework.response import Response


class InvalidCursor(exceptions.APIException):
    status_code = 400
    default_code = "invalid_cursor"
    default_detail = "The cursor is not one this list handed out; start again without it."


class CursorPagination(pagination.CursorPagination):
    """``?limit=`` (max 200) and an opaque cursor: ``{"results": [...], "next": url|null}``.
    A cursor that was not handed out by this list (tampered, truncated, from another list) is a
    400 ``invalid_cursor``, never a 404 or a 500."""

    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200
    ordering = "-id"

    def paginate_queryset(self, queryset, request, view=None):
        self._model = queryset.model
        try:
            return super().paginate_queryset(queryset, request, view)
        except exceptions.NotFound:
            raise InvalidCursor()

    def decode_cursor(self, request):
        cursor = super().decode_cursor(request)
        if cursor is None or cursor.position is None:
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
