"""The API's filter backend: a filter value the endpoint cannot use is a 400 naming the parameter."""

from __future__ import annotations

from django_filters.rest_framework import DjangoFilterBackend

from .errors import InvalidParameter


class FilterBackend(DjangoFilterBackend):
    """django-filter's backend; an invalid filter (``?status=bogus``, ``?sha=xyz``) answers 400
    ``invalid`` with the parameter and its message, never an unfiltered list."""

    def filter_queryset(self, request, queryset, view):
        filterset = self.get_filterset(request, queryset, view)
        if filterset is None:
            return queryset
        if not filterset.is_valid():
            name, messages = next(iter(filterset.errors.items()))
            error = InvalidParameter(name, " ".join(str(m) for m in messages))
            error.fields = {k: [str(m) for m in v] for k, v in filterset.errors.items()}
            raise error
        return filterset.qs
