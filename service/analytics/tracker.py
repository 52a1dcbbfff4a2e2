"""Stage transitions at ingest: after the events of a request are stored, each visitor's stage before and
after, the transitions between them, and what they add to the rollups.

Per request (``JourneyTracker.observe``), whatever its size: one pipelined read of the records and stored
events of its visitors, one vectorised stage walk (``models.analytics.walk_stages``) for all of them, one
pipelined compare-and-set of the records, one pipelined write of the rollups. A visitor whose record
another request changed in between is read and walked again (at most ``ATTEMPTS`` times), so each
transition is counted once.

What is counted, and when
- A transition: the stage the model's journey engine gives the visitor changed. Changes caused by the
  request's events are dated at the ingest time and carry the channel of the visitor's newest event in the
  request that has one ("none" otherwise). Changes by time alone (an abandoned cart expiring after
  ``cart_ttl_hours``, a customer lapsing after ``retention_days``, ...) are counted when the visitor is
  next seen by ingest, dated at the moment they took effect, with channel "none": a visitor never seen
  again keeps the stage they were last seen in.
- A stage entry: every transition into a stage, and a visitor's first sighting (their first evaluated
  stage; not a transition).
- Time in stage: on leaving a stage, the time since it was entered, in ``models.analytics.DWELL_EDGES``
  buckets.
- Visitor sets per period: ``seen:<stage>`` (evaluated in the stage at a time inside the period, or left
  it then), ``adv:<stage>`` (moved from it to a later stage then), ``ch:<channel>`` (sent events through
  the channel then), ``clk`` (sent a product view carrying a ``recommendation_id`` then). Ingest-time
  entries fall in the period of the ingest time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from models.analytics import dwell_buckets, walk_stages
from models.domain import STAGES, Event, EventType
from models.errors import StoreUnavailableError
from models.journey import JourneyRules
from service import metrics
from service.analytics.periods import GRANULARITIES, member_of, period_id, start_of
from service.analytics.store_base import (
    ADVANCED,
    CAME,
    CLICKED,
    NO_CHANNEL,
    SEEN,
    AnalyticsStore,
    Period,
    PeriodDelta,
    RecordWrite,
)

log = logging.getLogger("journeyrec.service")

ATTEMPTS = 3  # reads of a visitor whose record other requests keep changing, before giving up on it
SKIP_LOG_INTERVAL_S = 10.0  # at most one log line this often about requests skipped by a store outage
_VIEW = EventType.PRODUCT_VIEW
_VALUE = [s.value for s in STAGES]
_SEEN = [SEEN + s.value for s in STAGES]
_IMPRESSION = EventType.IMPRESSION


class _Request:
    """What a request says about one visitor: the channel of its newest event with one, and a click."""

    __slots__ = ("channel", "channel_ts", "clicked")

    def __init__(self) -> None:
        self.channel = NO_CHANNEL
        self.channel_ts = -float("inf")
        self.clicked = False


class _Rollups:
    """The rollup additions of one request, by period (the hour and the day of each time)."""

    def __init__(self, store: AnalyticsStore) -> None:
        self.transitions: dict[tuple[str, str], int] = {}
        self._retention = store.retention
        self._periods: dict[float, list[tuple[Period, str, float]]] = {}
        self._counts: dict[tuple[float, str], int] = {}
        self._members: dict[tuple[float, str], list[str]] = {}

    def periods(self, t: float) -> list[tuple[Period, str, float]]:
        """((granularity, start), period id, visitor sets' expiry) of the hour and the day holding ``t``."""
        got = self._periods.get(t)
        if got is None:
            got = []
            for g in GRANULARITIES:
                start = start_of(t, g)
                got.append(((g, start), period_id(g, start), self._retention.sets_expire(g, start)))
            self._periods[t] = got
        return got

    def count(self, t: float, field: str) -> None:
        key = (t, field)
        self._counts[key] = self._counts.get(key, 0) + 1

    def put(self, t: float, name: str, member: str) -> None:
        got = self._members.get((t, name))
        if got is None:
            self._members[(t, name)] = [member]
        else:
            got.append(member)

    def deltas(self) -> dict[Period, PeriodDelta]:
        out: dict[Period, PeriodDelta] = {}
        for (t, field), n in self._counts.items():
            for period, _, _ in self.periods(t):
                delta = out.get(period)
                if delta is None:
                    delta = out[period] = PeriodDelta()
                delta.counts[field] = delta.counts.get(field, 0) + n
        for (t, name), members in self._members.items():
            for period, _, _ in self.periods(t):
                delta = out.get(period)
                if delta is None:
                    delta = out[period] = PeriodDelta()
                delta.members.setdefault(name, set()).update(members)
        return out


class JourneyTracker:
    """Counts stage transitions of ingested events into ``store`` (module docstring)."""

    def __init__(self, store: AnalyticsStore, *, enabled: bool = True) -> None:
        self.store = store
        self.enabled = enabled
        self._skipped = 0
        self._log_due = 0.0

    async def observe(self, events: Sequence[Event], rules: JourneyRules, now: float | None = None) -> int:
        """Evaluate the visitors of ``events`` (already stored) and count their transitions; returns how
        many transitions were counted. Never raises for a store outage: the events are stored, and the
        failure is logged (the visitor's next request counts the changes missed, by time or by event)."""
        if not self.enabled or not events:
            return 0
        when = time.time() if now is None else now
        seen: dict[str, _Request] = {}
        for e in events:
            if e.event is _IMPRESSION:  # not journey history: it changes no stage
                continue
            r = seen.get(e.visitor_id)
            if r is None:
                r = seen[e.visitor_id] = _Request()
            if e.channel is not None and e.timestamp >= r.channel_ts:
                r.channel, r.channel_ts = e.channel.value, e.timestamp
            if e.event is _VIEW and e.recommendation_id is not None:
                r.clicked = True
        if not seen:
            return 0
        rollups = _Rollups(self.store)
        pending = list(seen)
        try:
            for _ in range(ATTEMPTS):
                pending = await self._attempt(pending, seen, rules, when, rollups)
                if not pending:
                    break
            else:
                log.warning("journey analytics: %d visitors changed by other requests; skipped", len(pending))
            await self.store.add(rollups.deltas())
        except StoreUnavailableError as e:
            self._skipped += 1
            if time.monotonic() >= self._log_due:  # an outage would otherwise log every request
                self._log_due = time.monotonic() + SKIP_LOG_INTERVAL_S
                log.warning("journey analytics skipped %d requests: %s", self._skipped, e)
                self._skipped = 0
            return 0
        for (src, dst), n in rollups.transitions.items():
            metrics.STAGE_TRANSITIONS.labels(src, dst).inc(n)
        return sum(rollups.transitions.values())

    async def _attempt(
        self,
        visitors: list[str],
        seen: dict[str, _Request],
        rules: JourneyRules,
        now: float,
        rollups: _Rollups,
    ) -> list[str]:
        """Walk, commit and roll up ``visitors``; returns those whose commit lost to another request."""
        snap = await self.store.snapshot(visitors)
        m = len(visitors)
        prev_stage = np.full(m, -1, dtype=np.int8)
        prev_since = np.full(m, np.nan)
        prev_at = np.full(m, np.nan)
        versions = [0] * m
        for i, rec in enumerate(snap.records):
            if rec is not None:
                prev_stage[i], prev_since[i], prev_at[i] = rec.stage.index, rec.since, rec.at
                versions[i] = rec.version
        owner = np.repeat(np.arange(m, dtype=np.int64), snap.counts)
        walk = walk_stages(owner, snap.ts, snap.codes, prev_stage, prev_since, prev_at, now, rules)
        # each visitor's changes as (source, target, at, by time, dwell bucket), in time order
        changes: dict[int, list[tuple[int, int, float, bool, int]]] = {}
        for v, src, dst, at, by_time, bucket in zip(
            walk.visitor.tolist(),
            walk.source.tolist(),
            walk.target.tolist(),
            walk.at.tolist(),
            walk.by_time.tolist(),
            dwell_buckets(np.nan_to_num(walk.dwell)).tolist(),
            strict=True,
        ):
            changes.setdefault(v, []).append((src, dst, at, by_time, bucket))
        final_at = np.maximum(now, np.nan_to_num(prev_at, nan=-np.inf)).tolist()
        stage, since = walk.stage.tolist(), walk.since.tolist()
        marks_now = [(pid, expires) for _, pid, expires in rollups.periods(now)]
        writes: list[RecordWrite] = []
        for i, visitor_id in enumerate(visitors):
            mine = changes.get(i)
            marks = marks_now
            if mine is not None or final_at[i] != now:  # periods of other times too
                times = {final_at[i], *(c[2] for c in mine or ())}
                marks = list({pid: e for t in times for _, pid, e in rollups.periods(t)}.items())
            writes.append(
                RecordWrite(visitor_id, versions[i], STAGES[stage[i]], since[i], final_at[i], marks)
            )
        won = await self.store.commit(writes)
        lost: list[str] = []
        for i, (visitor_id, ok) in enumerate(zip(visitors, won, strict=True)):
            if not ok:
                lost.append(visitor_id)
                continue
            member = member_of(visitor_id)
            req = seen[visitor_id]
            t = final_at[i]
            rollups.put(t, _SEEN[stage[i]], member)
            rollups.put(t, CAME + req.channel, member)
            if req.clicked:
                rollups.put(t, CLICKED, member)
            if i in changes:
                _changes(changes[i], req.channel, member, rollups)
        return lost


def _changes(
    changes: list[tuple[int, int, float, bool, int]], channel: str, member: str, rollups: _Rollups
) -> None:
    """What one visitor's stage changes add to the rollups (see the module docstring)."""
    for src, dst, at, by_time, bucket in changes:
        ch = NO_CHANNEL if by_time else channel
        to = _VALUE[dst]
        rollups.count(at, f"e|{to}|{ch}")
        rollups.put(at, _SEEN[dst], member)
        if src < 0:
            continue
        frm = _VALUE[src]
        rollups.count(at, f"t|{frm}|{to}|{ch}")
        rollups.count(at, f"d|{frm}|{ch}|{bucket}")
        rollups.put(at, _SEEN[src], member)
        if dst > src:
            rollups.put(at, ADVANCED + frm, member)
        rollups.transitions[frm, to] = rollups.transitions.get((frm, to), 0) + 1
