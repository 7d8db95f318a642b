"""The OpenAPI schema's view of the contract (drf-spectacular's AutoSchema, extended).

Every operation documents the error answers the API really gives beside those its view declares:

- 400 ``invalid`` / ``unknown_field`` / ``malformed_request`` for a request body,
  ``invalid`` / ``invalid_cursor`` for query parameters (``limit``, filters, cursors);
- 401 when credentials are needed, 403 when the role or the token's scope falls short;
- 404 under a path with an object in it (another team's object is a 404 too);
- 413 ``request_too_large`` / ``too_many_fields`` and 415 for a request body.

Output fields read from a model column that may be NULL are marked ``nullable``, and request bodies
of serializers that refuse unknown fields (:class:`~controlplane.api.common.StrictSerializer`) say
so with ``additionalProperties: false``.
"""

from __future__ import annotations

import copy

from django.core.exceptions import FieldDoesNotExist
from drf_spectacular import openapi
from drf_spectacular.utils import OpenApiResponse
from rest_framework import serializers

from .common import ErrorSerializer, StrictSerializer

ERROR_DESCRIPTIONS = {
    400: "Invalid input: `invalid` (a field, see `fields`), `unknown_field`, `malformed_request`, "
    "`invalid` (a query parameter, named in `fields`) or `invalid_cursor`",
    401: "No credentials, or bad ones (`not_authenticated`, `authentication_failed`)",
    403: "Not allowed: the caller's role or token scope (`permission_denied`)",
    404: "Not found, or another team's (`not_found`)",
    409: "Conflicts with the current state",
    413: "The body is over the size limit (`request_too_large`) or has too many form fields "
    "(`too_many_fields`)",
    415: "The body's content type is not accepted (`unsupported_media_type`)",
}


def error_response(status_code: int, description: str | None = None) -> OpenApiResponse:
    description = description or ERROR_DESCRIPTIONS.get(status_code, "")
    return OpenApiResponse(ErrorSerializer, description=description)


def _model_column_may_be_null(field) -> bool:
    """Whether ``field`` of a ModelSerializer reads a column (or goes through a foreign key) that
    may be NULL."""
    parent = field.parent
    if isinstance(parent, serializers.ListSerializer):
        return False
    model = getattr(getattr(parent, "Meta", None), "model", None)
    if model is None or field.source == "*" or not field.source_attrs:
        return False
    for attr in field.source_attrs:
        if model is None:
            return False
        try:
            model_field = model._meta.get_field(attr)
        except FieldDoesNotExist:
            return False
        if not model_field.concrete:
            return False
        if model_field.null:
            return True
        model = model_field.related_model
    return False


class AutoSchema(openapi.AutoSchema):
    def _map_serializer_field(self, field, direction, bypass_extensions=False):
        if (
            direction == "response"
            and not getattr(field, "allow_null", False)
            and not isinstance(field, serializers.ManyRelatedField | serializers.ListSerializer)
            and _model_column_may_be_null(field)
        ):
            field = copy.copy(field)
            field.allow_null = True
        return super()._map_serializer_field(field, direction, bypass_extensions)

    def _map_basic_serializer(self, serializer, direction):
        schema = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False
        return schema

    def _error_statuses(self) -> list[int]:
        statuses = []
        has_body = self.method in ("POST", "PUT", "PATCH") and self.get_request_serializer() is not None
        has_query = any(p.get("in") == "query" for p in self._get_parameters())
        if has_body or has_query:
            statuses.append(400)
        if self.get_auth():
            statuses += [401, 403]
        if "{" in self.path:
            statuses.append(404)
        if has_body:
            statuses += [413, 415]
        return statuses

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status_code in self._error_statuses():
            if str(status_code) not in responses:
                responses[str(status_code)] = self._get_response_for_code(
                    error_response(status_code), str(status_code), direction=direction
                )
        return dict(sorted(responses.items()))
