"""The AWS region catalog: the commercial partition's regions as botocore knows them."""

from __future__ import annotations

import re
from functools import lru_cache

import botocore.loaders

REGION_CODE_RE = re.compile(r"^[a-z]{2}(-gov|-iso[a-z]?)?-[a-z]+-\d{1,2}$")


@lru_cache(maxsize=1)
def commercial_regions() -> dict[str, str]:
    """``{code: name}`` of the commercial (``aws``) partition, from botocore's endpoint data."""
    data = botocore.loaders.create_loader().load_data("endpoints")
    partition = next(p for p in data["partitions"] if p["partition"] == "aws")
    return {code: info.get("description", code) for code, info in sorted(partition["regions"].items())}


@lru_cache(maxsize=1)
def known_regions() -> dict[str, str]:
    """Every region code of every partition botocore knows (GovCloud, China, ...), with names."""
    data = botocore.loaders.create_loader().load_data("endpoints")
    out: dict[str, str] = {}
    for partition in data["partitions"]:
        for code, info in partition["regions"].items():
            out[code] = info.get("description", code)
    return out


def validate_region_code(code: str) -> str | None:
    """None when ``code`` is a known AWS region, otherwise why not."""
    if not REGION_CODE_RE.match(code or ""):
        return f"'{code}' is not an AWS region code (like 'us-east-1')."
    if code not in known_regions():
        return f"'{code}' is not a known AWS region."
    return None
