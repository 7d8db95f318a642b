"""What every API module shares: strict input, the error schema, ordered cursor pagination."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from controlplane.errors import DomainError
from controlplane.pagination import CursorPagination


class UnknownFields(DomainError):
    code = "unknown_field"
    status_code = 400


class StrictSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not know (or that cannot be written), so a
    typo in a CI script fails loudly instead of being ignored."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, f in self.fields.items() if not f.read_only}
            unknown = sorted(str(k) for k in data if k not in writable)
            if unknown:
                raise UnknownFields(
                    f"Unknown or read-only field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}.",
                    fields={k: ["Unknown or read-only field."] for k in unknown},
                )
        return super().to_internal_value(data)


class ErrorSerializer(serializers.Serializer):
    """Every error answer: a stable code, a sentence, and per-field messages."""

    code = serializers.CharField()
    detail = serializers.CharField()
    fields = serializers.DictField(child=serializers.JSONField())


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    """Error responses for ``extend_schema(responses=...)``."""
    text = {
        400: "Invalid input",
        401: "No or bad credentials",
        403: "Not allowed",
        404: "Not found (or another team's)",
        409: "Conflicts with the current state",
    }
    return {s: OpenApiResponse(ErrorSerializer, description=text.get(s, "")) for s in statuses}


def ordered_pagination(*ordering: str) -> type[CursorPagination]:
    """The API's cursor pagination, ordered by ``ordering`` (the first field positions the cursor)."""
    return type("CursorPagination", (CursorPagination,), {"ordering": ordering})
