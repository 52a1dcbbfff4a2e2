"""The embedded journey analytics store: records and rollups in this process's memory (one process only,
lost on restart), beside the embedded visitor store. Semantics in ``service.analytics.store_base``; no
method awaits while it changes state, so each write is atomic with respect to the other coroutines."""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence

import msgspec
import numpy as np

from service.analytics.periods import Granularity, member_of, period_id
from service.analytics.store_base import (
    JourneyRecord,
    Period,
    PeriodData,
    PeriodDelta,
    RecordWrite,
    Retention,
    Snapshot,
    channel_name,
)
from service.store.base import VisitorStore


class _Rollup:
    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.counts_expire = 0.0
        self.sets: dict[str, set[str]] = {}
        self.sets_expire = 0.0


class MemoryAnalyticsStore:
    """AnalyticsStore in memory; the events come from ``visitors`` (any VisitorStore)."""

    def __init__(
        self,
        visitors: VisitorStore,
        retention: Retention,
        *,
        visitor_ttl: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.retention = retention
        self._visitors = visitors
        self._ttl = visitor_ttl
        self._clock = clock
        self._records: dict[str, tuple[JourneyRecord, float]] = {}  # visitor -> (record, expires at)
        self._rollups: dict[str, _Rollup] = {}  # period id -> rollup
        self._due: dict[str, float] = {}  # visitor -> due time

    def _record(self, visitor_id: str, now: float) -> JourneyRecord | None:
        got = self._records.get(visitor_id)
        if got is None or got[1] <= now:
            return None
        return got[0]

    async def snapshot(self, visitor_ids: Sequence[str]) -> Snapshot:
        now = self._clock()
        records = [self._record(v, now) for v in visitor_ids]
        for v, rec in zip(visitor_ids, records, strict=True):
            if rec is not None:  # evaluated: the record lives as long as the visitor
                self._records[v] = (rec, now + self._ttl)
        histories = [(await self._visitors.visitor(v)).events for v in visitor_ids]
        events = [e for h in histories for e in h]
        return Snapshot(
            records=records,
            counts=np.array([len(h) for h in histories], dtype=np.int64),
            ts=np.array([e.timestamp for e in events], dtype=np.float64),
            codes=np.array([e.event.code for e in events], dtype=np.int8),
            channel=lambda i: channel_name(events[i].channel),
        )

    async def commit(self, writes: Sequence[RecordWrite]) -> list[bool]:
        now = self._clock()
        out: list[bool] = []
        for w in writes:
            old = self._record(w.visitor_id, now)
            if (old.version if old is not None else 0) != w.expected:
                out.append(False)
                continue
            record = JourneyRecord(w.stage, w.since, w.expected + 1, old.seen if old is not None else "")
            self._records[w.visitor_id] = (record, now + self._ttl)
            out.append(True)
        return out

    def _rollup(self, pid: str, now: float) -> _Rollup:
        r = self._rollups.get(pid)
        if r is None:
            r = self._rollups[pid] = _Rollup()
        if r.counts_expire <= now:
            r.counts = {}
        if r.sets_expire <= now:
            r.sets = {}
        return r

    async def mark_seen(self, sightings: Sequence[tuple[str, str]]) -> None:
        now = self._clock()
        for visitor_id, seen in sightings:
            got = self._records.get(visitor_id)
            if got is not None and got[1] > now:
                self._records[visitor_id] = (msgspec.structs.replace(got[0], seen=seen), got[1])

    async def add(self, deltas: Mapping[Period, PeriodDelta], due: Mapping[str, float] | None = None) -> None:
        for visitor_id, when in (due or {}).items():
            if math.isinf(when):
                self._due.pop(visitor_id, None)
            else:
                self._due[visitor_id] = when
        now = self._clock()
        for (granularity, start), delta in deltas.items():
            r = self._rollup(period_id(granularity, start), now)
            if delta.counts:
                for field, n in delta.counts.items():
                    r.counts[field] = r.counts.get(field, 0) + n
                r.counts_expire = self.retention.counts_expire(granularity, start)
            if delta.members:
                for name, members in delta.members.items():
                    r.sets.setdefault(name, set()).update(members)
                r.sets_expire = self.retention.sets_expire(granularity, start)

    async def claim_due(self, now: float, limit: int, hold: float) -> list[str]:
        ready = heapq.nsmallest(limit, ((t, v) for v, t in self._due.items() if t < now))
        for _, v in ready:
            self._due[v] = now + hold
        return [v for _, v in ready]

    async def read(self, granularity: Granularity, starts: Sequence[float]) -> list[PeriodData]:
        now = self._clock()
        out: list[PeriodData] = []
        for start in starts:
            r = self._rollups.get(period_id(granularity, start))
            if r is None:
                out.append(PeriodData(start, {}, {}))
                continue
            r = self._rollup(period_id(granularity, start), now)
            out.append(PeriodData(start, dict(r.counts), {k: set(v) for k, v in r.sets.items() if v}))
        return out

    async def erase(self, visitor_id: str) -> int:
        now = self._clock()
        removed = int(self._record(visitor_id, now) is not None)
        self._records.pop(visitor_id, None)
        removed += int(self._due.pop(visitor_id, None) is not None)
        member = member_of(visitor_id)
        for r in self._rollups.values():
            if r.sets_expire <= now:
                continue
            for members in r.sets.values():
                if member in members:
                    members.discard(member)
                    removed += 1
        return removed

    async def close(self) -> None:
        return None
