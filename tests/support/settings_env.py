"""What ``controlplane/settings.py`` reads from the environment, found in its source, so the README,
docker-compose.yml and the settings cannot drift apart silently."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_SOURCE = ROOT / "controlplane" / "settings.py"

_READ = re.compile(
    r"""(?:\benv(?:\.\w+)?|\b_secret|os\.environ\.get|os\.getenv)\(\s*["']([A-Z][A-Z0-9_]*)["']"""
    r"""|os\.environ\[\s*["']([A-Z][A-Z0-9_]*)["']\s*\]"""
)
_SECRET = re.compile(r"""\b_secret\(\s*["']([A-Z][A-Z0-9_]*)["']""")
_PREFIX = re.compile(r"""\.startswith\(\s*["']([A-Z][A-Z0-9_]*_)["']\s*\)""")


def settings_env_names() -> set[str]:
    """Every variable name the settings read, with ``NAME_FILE`` for each secret read via ``_secret``."""
    source = SETTINGS_SOURCE.read_text()
    names = {a or b for a, b in _READ.findall(source)}
    names |= {f"{name}_FILE" for name in _SECRET.findall(source)}
    return names


def settings_env_prefixes() -> set[str]:
    """Prefixes of variable families the settings read (e.g. ``AWS_ENDPOINT_URL_``)."""
    return set(_PREFIX.findall(SETTINGS_SOURCE.read_text()))


def is_read_by_settings(name: str) -> bool:
    return name in settings_env_names() or any(name.startswith(p) for p in settings_env_prefixes())


def load_settings(env: dict[str, str], *names: str) -> dict:
    """The named settings as a fresh process started with exactly ``env`` sees them."""
    code = (
        "import json; from django.conf import settings as s; "
        f"print(json.dumps({{n: getattr(s, n) for n in {list(names)!r}}}, default=str))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])
