from rest_framework import pagination


class CursorPagination(pagination.CursorPagination):
    """``?limit=`` (max 200) and an opaque cursor: ``{"results": [...], "next": url|null}``."""

    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200
    ordering = "-id"

    def get_paginated_response(self, data):
        from rest_framework.response import Response

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
