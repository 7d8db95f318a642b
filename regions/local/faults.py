"""Faults injected into the local regions for demos, drills and tests: per region, optionally
narrowed to one app (and stage)."""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass

MODES = ("down", "error", "slow", "hang", "flaky")


class BadFault(ValueError):
    """A fault request that makes no sense; the message says why."""


@dataclass
class Fault:
    """``down``: connections refused (narrowed to an app: closed without an answer); ``error``:
    503; ``slow``: ``ms`` added; ``hang``: no answer at all; ``flaky``: ``percent`` % of requests 503."""

    region: str
    mode: str
    app: str = ""
    stage: str = ""
    ms: int = 0
    percent: float = 0.0
    until: float = 0.0  # epoch seconds; 0: until cleared

    def matches(self, *, region: str, function_name: str, stage: str) -> bool:
        if self.region != region:
            return False
        if self.app and not (function_name == self.app or function_name.endswith("-" + self.app)):
            return False
        return not self.stage or self.stage == stage

    def as_dict(self) -> dict:
        out = asdict(self)
        out["expires_in_s"] = round(self.until - time.time(), 1) if self.until else None
        return out

    def trips(self) -> bool:
        """Whether this request fails (always for error, ``percent`` % for flaky)."""
        return self.mode == "error" or (self.mode == "flaky" and random.random() * 100 < self.percent)


def parse(data: dict, *, regions: set[str]) -> Fault:
    """A Fault from the admin API's JSON; raises BadFault."""
    if not isinstance(data, dict):
        raise BadFault("expected a JSON object")
    region, mode = data.get("region"), data.get("mode")
    if region not in regions:
        raise BadFault(f"unknown region {region!r}")
    if mode not in MODES:
        raise BadFault(f"mode must be one of {', '.join(MODES)}")
    try:
        ms = int(data.get("ms") or (2000 if mode == "slow" else 0))
        percent = float(data.get("percent") or (50 if mode == "flaky" else 0))
        duration = float(data.get("for_s") or 0)
    except (TypeError, ValueError) as exc:
        raise BadFault(f"ms, percent and for_s must be numbers: {exc}") from None
    if not 0 <= percent <= 100 or ms < 0 or duration < 0 or ms > 600_000:
        raise BadFault("percent must be 0..100; ms 0..600000; for_s not negative")
    app, stage = str(data.get("app") or ""), str(data.get("stage") or "")
    if stage and not app:
        raise BadFault("a stage narrows an app: give app too")
    return Fault(region, mode, app, stage, ms, percent, time.time() + duration if duration else 0.0)


class Faults:
    """The faults in force; the newest matching one applies."""

    def __init__(self) -> None:
        self.items: list[Fault] = []

    def add(self, fault: Fault) -> None:
        self.items = [
            f for f in self.items if (f.region, f.app, f.stage) != (fault.region, fault.app, fault.stage)
        ]
        self.items.append(fault)

    def clear(self, region: str = "") -> list[Fault]:
        gone = [f for f in self.items if not region or f.region == region]
        self.items = [f for f in self.items if region and f.region != region]
        return gone

    def expire(self) -> list[Fault]:
        now = time.time()
        gone = [f for f in self.items if f.until and f.until <= now]
        if gone:
            self.items = [f for f in self.items if f not in gone]
        return gone

    def find(self, *, region: str, function_name: str, stage: str) -> Fault | None:
        for fault in reversed(self.items):
            if fault.matches(region=region, function_name=function_name, stage=stage):
                return fault
        return None

    def region_down(self, region: str) -> bool:
        """A whole region is down (its port refuses connections)."""
        return any(f.region == region and f.mode == "down" and not f.app for f in self.items)

    def any_for(self, region: str) -> bool:
        return any(f.region == region for f in self.items)
