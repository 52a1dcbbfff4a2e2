"""The journey analytics store: each visitor's current stage, and the hourly and daily rollups.

``AnalyticsStore`` is the interface; ``service.analytics.memory_store`` (one process) and
``service.analytics.redis_store`` (shared by every worker) implement it and pass the same contract tests
(``tests/service/test_analytics_store.py``).

Semantics
- Journey record (per visitor): the stage, when it was entered (``since``) and a version that every
  successful ``commit`` raises by one. It lives in the visitor's slot and expires with the visitor
  (``visitor_ttl`` after the visitor was last evaluated: ``snapshot`` refreshes it).
- ``snapshot`` reads, per visitor, the record and the stage-relevant fields (time, event, channel) of the
  events the visitor store holds.
- ``commit`` writes a record (only when the stage changed) if its version is still the one read
  (compare-and-set): of two requests that evaluated the same visitor at once, one wins, and the other reads
  again, so a transition is counted once. ``mark_seen`` notes in the record the last sighting added to the
  rollup sets (an optimisation: a repeated sighting is not sent again; the version does not move).
- Rollups (per period: a UTC hour or day): counters (``add`` adds to them) and sets of visitor pseudonyms
  (``periods.member_of``). Counters expire ``hourly_days`` / ``daily_days`` after their period; the visitor
  sets after ``sets_days`` (at most the counters' retention): they hold visitor pseudonyms, and only
  distinct counts need them. A change counted into a period whose sets have expired may count its
  visitor again there.
- Due times (per visitor): when the visitor's stage may next change by time alone
  (``models.analytics.Walk`` ``due``: a lower bound after an ingest, exact after a sweep), set with the
  rollups (``add``). ``claim_due`` hands out the visitors whose time has come, and moves it ``hold``
  seconds on, so a sweep that dies leaves them to the next; the sweep's walk sets the next due time. A
  visitor whose keys expired is walked once more and leaves the index.
- ``erase`` removes the record, the due time and the visitor's pseudonym from the visitor sets of every
  period whose sets may still exist. Counters hold no visitor data and stay.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import msgspec
import numpy as np

from models.domain import Channel, Stage
from service.analytics.periods import LENGTH, Granularity, covering

DAY = 86_400.0

#: the channel of a change no event caused, or of events that carry none
NO_CHANNEL = "none"
CHANNELS: tuple[str, ...] = (*(c.value for c in Channel), NO_CHANNEL)


def channel_name(channel: Channel | None) -> str:
    """A channel as the rollups name it (``NO_CHANNEL`` for none)."""
    return NO_CHANNEL if channel is None else channel.value


#: names of the per-period visitor sets
SEEN = "seen:"  # + stage: visitors evaluated in the stage, or who left it, during the period
ADVANCED = "adv:"  # + stage: visitors who moved from the stage to a later one during the period
CAME = "ch:"  # + channel: visitors whose events of the period came through the channel
CLICKED = "clk"  # visitors with a product view carrying a recommendation_id during the period
SET_NAMES: tuple[str, ...] = (
    *(SEEN + s.value for s in Stage),
    *(ADVANCED + s.value for s in Stage),
    *(CAME + c for c in CHANNELS),
    CLICKED,
)


class JourneyRecord(msgspec.Struct, frozen=True):
    """A visitor's current stage; ``version`` 0 is "no record". ``seen``: the last sighting the rollup sets
    hold for the visitor (``mark_seen``), "" when none."""

    stage: Stage
    since: float
    version: int
    seen: str = ""


class Snapshot(msgspec.Struct, frozen=True):
    """Records and events of ``m`` visitors, in the order asked.

    records  one per visitor (None: no record)
    counts   int64[m] how many events each visitor has (the events are grouped by visitor, in that order)
    ts       float64[n] event times; codes int8[n] ``EventType.code``
    channel  the channel of event i (``NO_CHANNEL`` when it carries none)
    """

    records: list[JourneyRecord | None]
    counts: np.ndarray
    ts: np.ndarray
    codes: np.ndarray
    channel: Callable[[int], str]


class RecordWrite(msgspec.Struct, frozen=True):
    """Write the record (stage, since) of ``visitor_id`` if its version is still ``expected``."""

    visitor_id: str
    expected: int
    stage: Stage
    since: float


class PeriodDelta(msgspec.Struct):
    """What one request adds to one period: counter increments and set members."""

    counts: dict[str, int] = msgspec.field(default_factory=dict)
    members: dict[str, set[str]] = msgspec.field(default_factory=dict)


class PeriodData(msgspec.Struct, frozen=True):
    """One period as stored: its counters and (when asked for) its visitor sets by name."""

    start: float
    counts: dict[str, int]
    sets: dict[str, set[str]]


class Retention:
    """How long rollups live: counters ``hourly_days`` / ``daily_days`` after their period ends, visitor
    sets ``sets_days`` (never longer than the counters)."""

    def __init__(self, *, hourly_days: int, daily_days: int, sets_days: int) -> None:
        if min(hourly_days, daily_days, sets_days) < 1:
            raise ValueError("analytics retention must be at least 1 day")
        self.days: dict[Granularity, int] = {"hour": hourly_days, "day": daily_days}
        self.sets_days = sets_days

    def counts_expire(self, granularity: Granularity, start: float) -> float:
        return start + LENGTH[granularity] + self.days[granularity] * DAY

    def sets_expire(self, granularity: Granularity, start: float) -> float:
        return start + LENGTH[granularity] + min(self.sets_days, self.days[granularity]) * DAY

    def sets_alive(self, granularity: Granularity, now: float) -> list[float]:
        """Starts of the periods whose visitor sets may still exist at ``now`` (up to a day ahead)."""
        keep = LENGTH[granularity] + min(self.sets_days, self.days[granularity]) * DAY
        return covering(now - keep, now + DAY, granularity)


Period = tuple[Granularity, float]  # (granularity, start)


class AnalyticsStore(Protocol):
    retention: Retention

    async def snapshot(self, visitor_ids: Sequence[str]) -> Snapshot:
        """Each visitor's record and stored events (time and event type), in one round trip."""
        ...

    async def commit(self, writes: Sequence[RecordWrite]) -> list[bool]:
        """Compare-and-set each record (module docstring); True where it was written."""
        ...

    async def add(self, deltas: Mapping[Period, PeriodDelta], due: Mapping[str, float] | None = None) -> None:
        """Add counts and set members to the periods' rollups and set the due time of each visitor of
        ``due`` (``math.inf``: none), in one round trip."""
        ...

    async def claim_due(self, now: float, limit: int, hold: float) -> list[str]:
        """About ``limit`` visitors (at most) whose due time is before ``now``, earliest first; their due
        time becomes ``now + hold`` (module docstring)."""
        ...

    async def mark_seen(self, sightings: Sequence[tuple[str, str]]) -> None:
        """Remember (visitor id, sighting) in the visitors' records, so that a sighting the rollup sets
        already hold is not sent again (a record that does not exist is not created)."""
        ...

    async def read(self, granularity: Granularity, starts: Sequence[float]) -> list[PeriodData]:
        """The rollups of these periods (empty where none), in the order asked."""
        ...

    async def erase(self, visitor_id: str) -> int:
        """Remove the visitor's record, due time and pseudonym from the rollup sets; returns how many keys,
        index entries or set memberships were removed."""
        ...

    async def close(self) -> None: ...
