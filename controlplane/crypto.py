"""Encryption of secrets at rest: Fernet keys from settings, newest first (MultiFernet rotation)."""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models

__all__ = ["EncryptedTextField", "InvalidToken", "decrypt", "encrypt", "fernet", "rotate"]


@lru_cache(maxsize=4)
def _fernet_for(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(k.encode()) for k in keys])


def fernet() -> MultiFernet:
    """The MultiFernet for the configured keys (cached per key list, so tests can swap keys)."""
    return _fernet_for(tuple(settings.ENCRYPTION_KEYS))


def encrypt(plaintext: str) -> str:
    """Encrypt with the newest key; returns the Fernet token as text."""
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    """Decrypt with any configured key. Raises InvalidToken when no key fits."""
    return fernet().decrypt(token.encode()).decode()


def rotate(token: str) -> str:
    """Re-encrypt a token with the newest key."""
    return fernet().rotate(token.encode()).decode()


class EncryptedTextField(models.TextField):
    """A text column holding a Fernet token; Python code sees the plaintext.

    The column never holds the plaintext. An empty string stays empty (no secret set).
    """

    def from_db_value(self, value, expression, connection):
        if value is None or value == "":
            return value
        return decrypt(value)

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value is None or value == "":
            return value
        return encrypt(value)
