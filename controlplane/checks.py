"""System checks: configuration mistakes are reported by ``manage.py check`` at start-up, not by
the first request that touches a secret."""

from __future__ import annotations

from cryptography.fernet import Fernet
from django.conf import settings
from django.core.checks import Error, register


@register()
def encryption_keys_check(app_configs, **kwargs):
    keys = list(getattr(settings, "ENCRYPTION_KEYS", []))
    if not keys:
        return [
            Error("ENCRYPTION_KEYS is empty: secrets at rest cannot be encrypted.", id="controlplane.E001")
        ]
    errors = []
    for position, key in enumerate(keys, start=1):
        try:
            Fernet(key.encode())
        except (ValueError, TypeError):
            errors.append(
                Error(
                    f"ENCRYPTION_KEYS: key {position} of {len(keys)} is not a Fernet key "
                    "(32 url-safe base64-encoded bytes).",
                    hint='Generate one with: python -c "from cryptography.fernet import Fernet; '
                    'print(Fernet.generate_key().decode())"',
                    id="controlplane.E002",
                )
            )
    return errors
