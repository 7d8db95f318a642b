"""Alert channels: one module per kind behind :class:`base.ChannelBackend`, found through the
registry of dotted paths in ``settings.CHANNEL_BACKENDS``."""

from __future__ import annotations

from functools import lru_cache

from django.conf import settings
from django.utils.module_loading import import_string

from .base import ChannelBackend


@lru_cache(maxsize=16)
def _load(path: str) -> ChannelBackend:
    return import_string(path)()


def backend_for(kind: str) -> ChannelBackend:
    """The backend for a channel kind. Raises KeyError for a kind with no backend."""
    return _load(settings.CHANNEL_BACKENDS[kind])


def kinds() -> list[str]:
    """Channel kinds this installation can deliver to."""
    return list(settings.CHANNEL_BACKENDS)
