"""What every API module shares: strict input, the error schema, ordered cursor pagination."""

from __future__ import annotations

from django.http import QueryDict
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from controlplane.errors import DomainError
from controlplane.pagination import CursorPagination


class UnknownFields(DomainError):
    code = "unknown_field"
    status_code = 400


def json_type_error(field: serializers.Field, value) -> str | None:
    """Why ``value`` (decoded JSON) is not of the JSON type the schema gives ``field``, or None.
    DRF alone takes 0 for false, 5 for "5" and "5" for 5; the schema promises more."""
    if value is None:
        return None  # allow_null is the field's own check
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Must be true or false."
    if isinstance(field, serializers.IntegerField):
        return None if isinstance(value, int) and not isinstance(value, bool) else "Must be an integer."
    if isinstance(field, serializers.FloatField | serializers.DecimalField):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        return None if ok else "Must be a number."
    if isinstance(field, serializers.CharField | serializers.ChoiceField | serializers.DateTimeField):
        return None if isinstance(value, str) else "Must be a string."
    if isinstance(field, serializers.ListField | serializers.ListSerializer):
        return None if isinstance(value, list) else "Must be a list."
    if isinstance(field, serializers.DictField | serializers.Serializer):
        return None if isinstance(value, dict) else "Must be an object."
    return None


class StrictSerializer(serializers.Serializer):
    """An input serializer that refuses fields it does not know (or that cannot be written), so a
    typo in a CI script fails loudly instead of being ignored, and values of another JSON type than
    the schema says (``"enabled": 0``, ``"name": 5``)."""

    def to_internal_value(self, data):
        if isinstance(data, dict):
            writable = {name for name, f in self.fields.items() if not f.read_only}
            unknown = sorted(str(k) for k in data if k not in writable)
            if unknown:
                raise UnknownFields(
                    f"Unknown or read-only field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}.",
                    fields={k: ["Unknown or read-only field."] for k in unknown},
                )
            if not isinstance(data, QueryDict):  # a form's values are all text
                wrong = {}
                for name, value in data.items():
                    field = self.fields[name]
                    problem = json_type_error(field, value)
                    if problem is None and isinstance(field, serializers.ListField) and value:
                        problem = next(
                            (p for p in (json_type_error(field.child, v) for v in value) if p), None
                        )
                        problem = problem and f"Every item: {problem[0].lower()}{problem[1:]}"
                    if problem:
                        wrong[name] = [problem]
                if wrong:
                    raise serializers.ValidationError(wrong)
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
