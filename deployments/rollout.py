"""A stage's rollout policy: the JSON a team sets on a stage, validated once when it is saved
(:func:`validate_rollout`) and read everywhere else through :func:`rollout_of`, a typed object.

``{"waves": [[code | "*", ...], ...], "bake_s": 0..3600, "on_failure": "leave" | "rollback",
"canary": {"percent": 1..99, "bake_s": 0..3600}, "keep_failed": true | false}``, every key
optional. ``on_failure`` is about the *other* regions when one fails; a region that fails its
own checks after its alias moved goes back to the version it served before unless
``keep_failed`` is true (to debug the failed version where it runs).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from controlplane.errors import DomainError

from .choices import FailurePolicy

ROLLOUT_KEYS = frozenset({"waves", "bake_s", "on_failure", "canary", "keep_failed"})
CANARY_KEYS = frozenset({"percent", "bake_s"})
MAX_BAKE_S = 3600


class InvalidRollout(DomainError):
    code = "invalid_rollout"
    status_code = 400


@dataclass(frozen=True)
class Canary:
    percent: int  # share of requests on the new version while it bakes
    bake_s: int = 0

    @property
    def share(self) -> float:
        return self.percent / 100


@dataclass(frozen=True)
class Rollout:
    """A stage's rollout policy, as the engine and the services read it."""

    waves: tuple[tuple[str, ...], ...] = ()
    bake_s: int = 0  # between waves
    on_failure: str = FailurePolicy.LEAVE
    canary: Canary | None = None
    keep_failed: bool = False  # a region failing its own checks keeps serving the new version

    def wave_of(self, codes: Iterable[str]) -> dict[str, int]:
        """Wave number per region code (default: one wave). A code no wave names goes with
        ``"*"``, or after the last wave when there is no ``"*"``."""
        codes = list(codes)
        assigned: dict[str, int] = {}
        rest_wave = None
        for index, wave in enumerate(self.waves):
            for code in wave:
                if code == "*":
                    rest_wave = index if rest_wave is None else rest_wave
                elif code in codes and code not in assigned:
                    assigned[code] = index
        fallback = rest_wave if rest_wave is not None else len(self.waves)
        return {code: assigned.get(code, fallback) for code in codes}

    @property
    def region_codes(self) -> set[str]:
        """The region codes the waves name."""
        return {code for wave in self.waves for code in wave if code != "*"}

    @property
    def rolls_back(self) -> bool:
        return self.on_failure == FailurePolicy.ROLLBACK


def rollout_of(stage) -> Rollout:
    """The stage's rollout as saved (validated by :func:`validate_rollout` on its way in)."""
    raw = stage.rollout or {}
    canary = raw.get("canary")
    return Rollout(
        waves=tuple(tuple(wave) for wave in raw.get("waves") or ()),
        bake_s=int(raw.get("bake_s", 0) or 0),
        on_failure=raw.get("on_failure", FailurePolicy.LEAVE),
        canary=Canary(int(canary["percent"]), int(canary.get("bake_s", 0) or 0)) if canary else None,
        keep_failed=raw.get("keep_failed") is True,
    )


def validate_rollout(rollout: Any, *, region_codes: Iterable[str]) -> dict:
    """The rollout policy, checked: every key optional, every code one of the app's regions and
    used once, ``"*"`` (the regions not named) at most once. Returns it unchanged; raises
    InvalidRollout saying what is wrong."""
    if rollout is None:
        return {}
    if not isinstance(rollout, dict):
        raise InvalidRollout(
            "The rollout policy must be an object.", fields={"rollout": ["Must be an object."]}
        )
    unknown = sorted(set(rollout) - ROLLOUT_KEYS)
    if unknown:
        raise InvalidRollout(
            f"Unknown rollout keys: {', '.join(unknown)} (allowed: {', '.join(sorted(ROLLOUT_KEYS))}).",
            fields={"rollout": [f"Unknown keys: {', '.join(unknown)}."]},
        )
    problem = _waves_problem(rollout.get("waves", []), set(region_codes))
    if problem is None and "bake_s" in rollout and not _whole(rollout["bake_s"], 0, MAX_BAKE_S):
        problem = f"'bake_s' must be a whole number of seconds from 0 to {MAX_BAKE_S}."
    if problem is None and "on_failure" in rollout and rollout["on_failure"] not in FailurePolicy.values:
        problem = f"'on_failure' must be one of: {', '.join(FailurePolicy.values)}."
    if problem is None and "keep_failed" in rollout and not isinstance(rollout["keep_failed"], bool):
        problem = "'keep_failed' must be true or false."
    if problem is None and "canary" in rollout:
        problem = _canary_problem(rollout["canary"])
    if problem:
        raise InvalidRollout(problem, fields={"rollout": [problem]})
    return rollout


def _whole(value: Any, low: int, high: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and low <= value <= high


def _waves_problem(waves: Any, codes: set[str]) -> str | None:
    if not isinstance(waves, list):
        return "'waves' must be a list of lists of region codes."
    seen: set[str] = set()
    for index, wave in enumerate(waves, start=1):
        if not isinstance(wave, list) or not wave or not all(isinstance(c, str) for c in wave):
            return f"Wave {index} must be a non-empty list of region codes or '*'."
        for code in wave:
            if code in seen:
                return f"'{code}' appears in more than one place in the waves."
            if code != "*" and code not in codes:
                allowed = ", ".join(sorted(codes)) or "none"
                return f"'{code}' in wave {index} is not one of the app's regions ({allowed})."
            seen.add(code)
    return None


def _canary_problem(canary: Any) -> str | None:
    if not isinstance(canary, dict) or "percent" not in canary:
        return "'canary' must be an object with 'percent' (1 to 99) and optionally 'bake_s'."
    unknown = sorted(set(canary) - CANARY_KEYS)
    if unknown:
        return f"Unknown canary keys: {', '.join(unknown)} (allowed: {', '.join(sorted(CANARY_KEYS))})."
    if not _whole(canary["percent"], 1, 99):
        return (
            "'canary.percent' must be a whole number from 1 to 99 (the share of requests on the new version)."
        )
    if "bake_s" in canary and not _whole(canary["bake_s"], 0, MAX_BAKE_S):
        return f"'canary.bake_s' must be a whole number of seconds from 0 to {MAX_BAKE_S}."
    return None
