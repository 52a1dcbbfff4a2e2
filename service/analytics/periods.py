"""Rollup periods (UTC hours and days): their start, their id in keys, the periods a range covers, and the
pseudonymous member a visitor is counted as in the per-period visitor sets."""

from __future__ import annotations

import hashlib
import math
import time
from typing import Literal

Granularity = Literal["hour", "day"]
GRANULARITIES: tuple[Granularity, ...] = ("hour", "day")
LENGTH: dict[Granularity, float] = {"hour": 3_600.0, "day": 86_400.0}


def start_of(t: float, granularity: Granularity) -> float:
    """Start (POSIX s) of the period holding ``t``."""
    n = LENGTH[granularity]
    return math.floor(t / n) * n


def period_id(granularity: Granularity, start: float) -> str:
    """``h:YYYYMMDDHH`` or ``d:YYYYMMDD`` (UTC): the period's part of a key."""
    tm = time.gmtime(start)
    if granularity == "hour":
        return f"h:{tm.tm_year:04d}{tm.tm_mon:02d}{tm.tm_mday:02d}{tm.tm_hour:02d}"
    return f"d:{tm.tm_year:04d}{tm.tm_mon:02d}{tm.tm_mday:02d}"


def covering(start: float, end: float, granularity: Granularity) -> list[float]:
    """Starts of the periods that overlap [start, end), oldest first."""
    n = LENGTH[granularity]
    first = start_of(start, granularity)
    count = max(math.ceil((end - first) / n), 0)
    return [first + i * n for i in range(count)]


def member_of(visitor_id: str) -> str:
    """The visitor as counted in the per-period visitor sets: 20 hex digits of a BLAKE2b hash of the id
    (a fixed size whatever the id; a pseudonym, so erase still removes it)."""
    return hashlib.blake2b(visitor_id.encode("utf-8"), digest_size=10).hexdigest()
