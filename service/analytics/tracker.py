"""Stage transitions at ingest: after the events of a request are stored, each visitor's stage changes
since their record, and what they add to the rollups.

Per request (``JourneyTracker.observe``), whatever its size: one round trip reading the records and stored
events of its visitors, one vectorised stage walk (``models.analytics.walk_stages``) for all of them, one
round trip writing, compare-and-set, the records of the visitors whose stage changed, one round trip for the
rollups and the visitors' due times. A visitor whose record another request changed in between is read
and walked again (at most ``ATTEMPTS`` times), so each transition is counted once.

What is counted, and when
- A transition: the stage the model's journey engine gives the visitor changed, replayed event by event
  and threshold by threshold since the recorded change (``models.analytics``). A change an event caused
  is dated at the event's time with the event's channel ("none" when it carries none); several changes in
  one request are each counted. A change by time alone (an abandoned cart expiring after
  ``cart_ttl_hours``, a customer lapsing after ``retention_days``, ...) is counted by the sweep
  (``sweep``: the visitors whose due time, noted by their last walk, has come) or when the visitor is next
  seen by ingest, whichever comes first, dated when it took effect, with channel "none", and counted once
  more as a change by time (``x|from|to``: abandoned carts, lapsed customers). A sweep sees no one: it
  adds no sighting. A change found only at the ingest time (events that arrived with
  times before the recorded change) is dated then, with the channel of the visitor's newest event in the
  request that has one.
- A stage entry: every transition into a stage, and a visitor's first sighting (the stage they are first
  evaluated in, at the ingest time; not a transition).
- Time in stage: on leaving a stage, the time since it was entered, in ``models.analytics.DWELL_EDGES``
  buckets.
- Visitor sets per period: ``seen:<stage>`` (evaluated in the stage at an ingest inside the period, or
  entered or left it then), ``adv:<stage>`` (moved from it to a later stage then), ``ch:<channel>``
  (the channel of their newest event with one in a request ingested then, "none" if no event had one),
  ``clk`` (sent a product view carrying a ``recommendation_id`` in a request ingested then).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from models.analytics import BY_EVENT, BY_REQUEST, BY_TIME, dwell_buckets, walk_stages
from models.domain import STAGES, Event, EventType
from models.errors import StoreUnavailableError
from models.journey import JourneyRules
from service import metrics
from service.analytics.periods import GRANULARITIES, member_of, start_of
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
SWEEP_BATCH = 512  # visitors one sweep walks at most
SWEEP_HOLD_S = 300.0  # a claimed visitor comes due again after this, unless the sweep set its next time
# one stage change of a visitor: (source, target, at, channel, dwell bucket, by time alone)
_Change = tuple[int, int, float, str, int, bool]
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

    def __init__(self) -> None:
        self.transitions: dict[tuple[str, str], int] = {}
        self.sightings: list[tuple[str, str]] = []  # (visitor id, sighting) sent to the sets
        self._periods: dict[float, list[Period]] = {}
        self._counts: dict[tuple[float, str], int] = {}
        self._members: dict[tuple[float, str], list[str]] = {}
        self.due: dict[str, float] = {}  # visitor id -> due time (``Walk.due``)

    def periods(self, t: float) -> list[Period]:
        """(granularity, start) of the hour and the day holding ``t``."""
        got = self._periods.get(t)
        if got is None:
            got = self._periods[t] = [(g, start_of(t, g)) for g in GRANULARITIES]
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
            for period in self.periods(t):
                delta = out.get(period)
                if delta is None:
                    delta = out[period] = PeriodDelta()
                delta.counts[field] = delta.counts.get(field, 0) + n
        for (t, name), members in self._members.items():
            for period in self.periods(t):
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
        return await self._observe(seen, rules, when)

    async def revisit(self, visitor_ids: Sequence[str], rules: JourneyRules, now: float | None = None) -> int:
        """``observe`` for visitors whose stored events changed without new ones (a login merged an
        anonymous visit into the user's): seen now, through no channel; returns the transitions counted."""
        if not self.enabled or not visitor_ids:
            return 0
        when = time.time() if now is None else now
        return await self._observe({v: _Request() for v in visitor_ids}, rules, when)

    async def _observe(self, seen: dict[str, _Request], rules: JourneyRules, when: float) -> int:
        if not seen:
            return 0
        rollups = _Rollups()
        try:
            await self._walk(list(seen), seen, rules, when, rollups)
            await self.store.add(rollups.deltas(), rollups.due)
            if rollups.sightings:  # once the sets hold them
                await self.store.mark_seen(rollups.sightings)
        except StoreUnavailableError as e:
            self._skip(e)
            return 0
        return self._counted(rollups)

    async def sweep(self, rules: JourneyRules, now: float | None = None, limit: int = SWEEP_BATCH) -> int:
        """Walk up to ``limit`` visitors whose stage is due to change by time (``AnalyticsStore.claim_due``)
        and count the changes, dated when they took effect; returns how many visitors were walked. Never
        raises for a store outage (logged; the claimed visitors come due again after ``SWEEP_HOLD_S``)."""
        if not self.enabled:
            return 0
        when = time.time() if now is None else now
        rollups = _Rollups()
        try:
            visitors = await self.store.claim_due(when, limit, SWEEP_HOLD_S)
            await self._walk(visitors, None, rules, when, rollups)
            await self.store.add(rollups.deltas(), rollups.due)
        except StoreUnavailableError as e:
            self._skip(e)
            return 0
        self._counted(rollups)
        return len(visitors)

    def _skip(self, e: StoreUnavailableError) -> None:
        self._skipped += 1
        if time.monotonic() >= self._log_due:  # an outage would otherwise log every request
            self._log_due = time.monotonic() + SKIP_LOG_INTERVAL_S
            log.warning("journey analytics skipped %d requests: %s", self._skipped, e)
            self._skipped = 0

    @staticmethod
    def _counted(rollups: _Rollups) -> int:
        for (src, dst), n in rollups.transitions.items():
            metrics.STAGE_TRANSITIONS.labels(src, dst).inc(n)
        return sum(rollups.transitions.values())

    async def _walk(
        self,
        visitors: list[str],
        seen: dict[str, _Request] | None,
        rules: JourneyRules,
        now: float,
        rollups: _Rollups,
    ) -> None:
        """``_attempt`` until no visitor's commit loses to another request (at most ``ATTEMPTS`` times; the
        visitors still losing then are skipped, and said so)."""
        pending = visitors
        for _ in range(ATTEMPTS):
            pending = await self._attempt(pending, seen, rules, now, rollups)
            if not pending:
                return
        log.warning("journey analytics: %d visitors changed by other requests; skipped", len(pending))

    async def _attempt(
        self,
        visitors: list[str],
        seen: dict[str, _Request] | None,
        rules: JourneyRules,
        now: float,
        rollups: _Rollups,
    ) -> list[str]:
        """Walk ``visitors``, commit the records of those whose stage changed and roll up what they add
        (``seen``: what the request said of each visitor; None for a sweep, which sees no one); returns the
        visitors whose commit lost to another request (to be walked again)."""
        if not visitors:
            return []
        snap = await self.store.snapshot(visitors)
        m = len(visitors)
        prev_stage = np.full(m, -1, dtype=np.int8)
        prev_since = np.full(m, np.nan)
        versions = [0] * m
        for i, rec in enumerate(snap.records):
            if rec is not None:
                prev_stage[i], prev_since[i], versions[i] = rec.stage.index, rec.since, rec.version
        owner = np.repeat(np.arange(m, dtype=np.int64), snap.counts)
        # a request's walk notes a lower bound of the next change by time (no stage evaluation ahead); the
        # sweep that walks the visitor then finds the exact time
        walk = walk_stages(
            owner, snap.ts, snap.codes, prev_stage, prev_since, now, rules, exact_due=seen is None
        )
        # each changed visitor's changes as (source, target, at, channel, dwell bucket), in time order
        changes: dict[int, list[_Change]] = {}
        for v, src, dst, at, cause, row, bucket in zip(
            walk.visitor.tolist(),
            walk.source.tolist(),
            walk.target.tolist(),
            walk.at.tolist(),
            walk.cause.tolist(),
            walk.row.tolist(),
            dwell_buckets(np.nan_to_num(walk.dwell)).tolist(),
            strict=True,
        ):
            if cause == BY_EVENT:
                channel = snap.channel(row)
            elif cause == BY_REQUEST and seen is not None:
                channel = seen[visitors[v]].channel
            else:
                channel = NO_CHANNEL
            changes.setdefault(v, []).append((src, dst, at, channel, bucket, cause == BY_TIME))
        stage, since = walk.stage.tolist(), walk.since.tolist()
        changed = list(changes)
        won = await self.store.commit(
            [RecordWrite(visitors[i], versions[i], STAGES[stage[i]], since[i]) for i in changed]
        )
        lost = {i for i, ok in zip(changed, won, strict=True) if not ok}
        hour = start_of(now, "hour")
        due = walk.due.tolist()
        for i, visitor_id in enumerate(visitors):
            if i in lost:
                continue
            rollups.due[visitor_id] = due[i]
            if seen is None:  # a sweep: changes by time only, no sighting
                if i in changes:
                    _changes(changes[i], member_of(visitor_id), rollups)
                continue
            req = seen[visitor_id]
            rec = snap.records[i]
            # the sets already hold this hour's sighting when the record says so: nothing to send
            sighting = f"{hour:.0f}|{stage[i]}|{req.channel}|{int(req.clicked)}"
            fresh = rec is None or rec.seen != sighting
            if not fresh and i not in changes:
                continue
            member = member_of(visitor_id)
            if fresh:
                rollups.put(now, _SEEN[stage[i]], member)
                rollups.put(now, CAME + req.channel, member)
                if req.clicked:
                    rollups.put(now, CLICKED, member)
                rollups.sightings.append((visitor_id, sighting))
            if i in changes:
                _changes(changes[i], member, rollups)
        return [visitors[i] for i in sorted(lost)]


def _changes(changes: list[_Change], member: str, rollups: _Rollups) -> None:
    """What one visitor's stage changes add to the rollups (see the module docstring)."""
    for src, dst, at, ch, bucket, by_time in changes:
        to = _VALUE[dst]
        rollups.count(at, f"e|{to}|{ch}")
        rollups.put(at, _SEEN[dst], member)
        if src < 0:
            continue
        frm = _VALUE[src]
        rollups.count(at, f"t|{frm}|{to}|{ch}")
        if by_time:
            rollups.count(at, f"x|{frm}|{to}")
        rollups.count(at, f"d|{frm}|{ch}|{bucket}")
        rollups.put(at, _SEEN[src], member)
        if dst > src:
            rollups.put(at, ADVANCED + frm, member)
        rollups.transitions[frm, to] = rollups.transitions.get((frm, to), 0) + 1
