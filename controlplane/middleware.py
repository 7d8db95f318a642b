"""Request guards that run before any view."""

from __future__ import annotations

from urllib.parse import unquote

from .errors import json_error


class RefuseNulCharactersMiddleware:
    """A NUL character in a URL path or query string is never valid here, and PostgreSQL refuses it
    in text columns: answer 400 before it reaches a lookup."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        raw = request.META.get("QUERY_STRING", "")
        if "\x00" in request.path or "\x00" in unquote(raw) or "%00" in raw:
            return json_error(
                "invalid_characters", "The URL contains a NUL character, which is never valid.", 400
            )
        return self.get_response(request)
