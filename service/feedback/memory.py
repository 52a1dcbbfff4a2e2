"""The embedded feedback store: the Redis store's semantics in this process's memory (one process only).

Per visitor: the kept served lists (at most ``cap``, each for ``windows.retention`` seconds), the exposures
(forgotten ``visitor_ttl`` seconds after the visitor's last feedback write) and the event ids seen within
the retention (deduplication). Counters never expire; those of a deleted experiment are dropped, and its
id counts nothing for the retention after (``retire_experiment``).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

from models.attribution import ATTRIBUTABLE, Method, ServedList, Windows
from models.domain import Event, EventType
from service.feedback import ledger
from service.feedback.store_base import (
    DailyCell,
    Deltas,
    FeedbackResult,
    VariantStageStats,
    count_outcome,
    shard_of,
    stats_of,
)


class FeedbackLimits:
    """What both stores are configured with, checked once."""

    def __init__(self, *, windows: Windows, cap: int, visitor_ttl: int, clock: Callable[[], float]) -> None:
        if cap < 1 or visitor_ttl < 1 or windows.click <= 0 or windows.impression <= 0:
            raise ValueError("cap, visitor_ttl and both attribution windows must be positive")
        self.windows = windows
        self.cap = cap
        self.visitor_ttl = visitor_ttl
        self.clock = clock


class MemoryFeedbackStore(FeedbackLimits):
    def __init__(
        self, *, windows: Windows, cap: int, visitor_ttl: int, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(windows=windows, cap=cap, visitor_ttl=visitor_ttl, clock=clock)
        self._state: dict[str, ledger.VisitorFeedback] = {}
        self._written: dict[str, float] = {}  # visitor -> last write (exposures expire after visitor_ttl)
        self._seen: dict[str, dict[str, float]] = {}  # visitor -> event id -> when it was counted
        self._counters: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._retired: dict[str, float] = {}  # experiment -> until when it counts nothing

    def _load(self, visitor_id: str, now: float) -> ledger.VisitorFeedback:
        state = self._state.get(visitor_id)
        if state is None or now - self._written.get(visitor_id, now) > self.visitor_ttl:
            state = ledger.VisitorFeedback()
        state.served = ledger.keep(state.served, now, self.windows.retention, self.cap)
        return state

    def _save(self, visitor_id: str, state: ledger.VisitorFeedback, now: float) -> None:
        self._state[visitor_id] = state
        self._written[visitor_id] = now

    async def log_served(self, visitor_id: str, served: ServedList) -> None:
        now = self.clock()
        state = self._load(visitor_id, now)
        state.served = ledger.keep([*state.served, served], now, self.windows.retention, self.cap)
        self._save(visitor_id, state, now)

    async def send_served(self, visitor_id: str, served: ServedList) -> Awaitable[None]:
        await self.log_served(visitor_id, served)  # in this process: done when it returns
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def count_served(self, lists: Sequence[tuple[str, ServedList]]) -> Deltas:
        now = self.clock()
        deltas = Deltas()
        for visitor_id, served in lists:
            state = self._load(visitor_id, now)
            deltas.merge(ledger.count_served(state, served, shard=shard_of(visitor_id)))
            self._save(visitor_id, state, now)
        return deltas

    async def add(self, deltas: Deltas) -> None:
        for (experiment, _shard), names in deltas.by_key.items():
            if await self.retired_until(experiment) is not None:
                continue
            mine = self._counters[experiment]
            for name, amount in names.items():
                mine[name] += amount

    async def record_events(self, events: list[Event]) -> FeedbackResult:
        now = self.clock()
        impressions = duplicates = 0
        outcomes: dict[tuple[str, str], int] = {}
        deltas = Deltas()
        for e in events:
            if e.event not in ATTRIBUTABLE:
                continue
            seen = self._seen.setdefault(e.visitor_id, {})
            for eid in [i for i, t in seen.items() if t < now - self.windows.retention]:
                del seen[eid]
            if e.event_id is not None and e.event_id in seen:
                duplicates += e.event is EventType.IMPRESSION
                continue
            impressions += e.event is EventType.IMPRESSION
            state = self._load(e.visitor_id, now)
            if not state.served and not state.exposures:
                count_outcome(outcomes, e, Method.UNATTRIBUTED)
                continue  # nothing to credit: not remembered (as in the Redis store)
            method = ledger.record(state, e, self.windows, shard=shard_of(e.visitor_id), deltas=deltas)
            count_outcome(outcomes, e, method)
            if e.event_id is not None:
                seen[e.event_id] = now
            self._save(e.visitor_id, state, now)
        await self.add(deltas)
        return FeedbackResult(impressions=impressions, duplicates=duplicates, outcomes=outcomes)

    async def served(self, visitor_id: str) -> list[ServedList]:
        return list(self._load(visitor_id, self.clock()).served)

    async def experiment_stats(self, experiment: str) -> tuple[list[VariantStageStats], list[DailyCell]]:
        return stats_of(self._counters.get(experiment, {}))

    async def retire_experiment(self, experiment: str) -> float:
        until = self.clock() + self.windows.retention
        self._counters.pop(experiment, None)
        self._retired[experiment] = until
        return until

    async def retired_until(self, experiment: str) -> float | None:
        until = self._retired.get(experiment)
        if until is not None and until <= self.clock():
            del self._retired[experiment]
            return None
        return until

    async def erase(self, visitor_id: str) -> int:
        state = self._state.pop(visitor_id, None)
        self._written.pop(visitor_id, None)
        seen = self._seen.pop(visitor_id, None)
        # as the Redis store counts: its served-lists, state and seen-ids keys
        return sum(bool(x) for x in (state and state.served, state and state.exposures, seen))

    async def close(self) -> None:
        return None
