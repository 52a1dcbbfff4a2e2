"""The embedded visitor store: all state in this process's memory (one process only, lost on restart).

It is the Redis store's twin for a single-process demo or test: the same contract tests
(``tests/service/test_store_contract.py``) run against both, so the semantics below are those of
``service.store.redis_store`` too.

Semantics
- A visitor's state (recent events, cart, purchases, seen event ids, campaigns' sent sets) lives
  ``visitor_ttl`` seconds after the visitor's last write (an append that stored something, or mark_sent);
  then the whole visitor vanishes, as every Redis key of the visitor expires.
- Recent events: the last ``recent_events`` stored events in arrival order, oldest first.
- Cart: ``add_to_cart`` sets item -> event time; ``remove_from_cart`` and ``purchase`` remove the item;
  ``checkout`` leaves the cart alone. A change older (by event time) than the item's add is ignored, so a
  late-arriving old ``remove_from_cart`` does not empty a newer add.
- Purchases: item -> time of its latest purchase, kept beyond the recent-events cap. A ``cancel`` of the
  item at or after that time removes it: the visitor no longer owns it, so it may be recommended again.
  (Only the latest purchase time is kept, so "bought twice, cancelled once" counts as not owned there.)
- Purchase log: the last ``purchase_log`` stored ``purchase`` and ``cancel`` events, in arrival order
  (visitor, item, event and timestamp only), so that buy-again counts net purchases and their recency over
  more than the recent events, as the offline profiles do.
- Idempotency: an event whose ``event_id`` this visitor stored within the last ``visitor_ttl`` seconds is
  skipped and counted in ``duplicates`` (within one batch too). The scope is the visitor: the same id sent
  for two visitors is two events. Events without an ``event_id`` are always stored.
- Stream: every stored event, ids like Redis's ``"<ms>-<seq>"`` (strictly increasing), at most
  ``stream_maxlen`` entries (oldest dropped; Redis trims approximately, a little later) and none older than
  ``visitor_ttl`` (so no stream entry outlives the visitor state that lets ``erase`` find it).
- ``erase`` removes the visitor's state and the visitor's stream entries; it returns the number of
  Redis-equivalent keys (events, cart, purchases, seen ids, stream-id list, campaign index, purchase log,
  one per sent set; empty ones do not exist) plus the number of stream entries removed.

Concurrency: no method awaits while it reads or changes state, so every call is atomic with respect to the
other coroutines of the event loop and no lock is needed. It is not thread-safe: use one event loop.
"""

from __future__ import annotations

import bisect
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from models.domain import PURCHASE_LOG_EVENTS, Event, EventType
from models.errors import InvalidInputError
from service.store.base import (
    PURCHASE_LOG,
    AppendResult,
    StoreLimits,
    StreamEntry,
    VisitorState,
)

StreamId = tuple[int, int]  # (milliseconds, sequence), ordered like Redis stream ids
_STREAM_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
_MAX_U64 = 2**64 - 1


def parse_after(after: str) -> StreamId:
    """``"<ms>"`` or ``"<ms>-<seq>"`` -> (ms, seq); raises InvalidInputError for anything else."""
    m = _STREAM_ID.match(after.strip())
    if m is None or int(m.group(1)) > _MAX_U64 or int(m.group(2) or 0) > _MAX_U64:
        raise InvalidInputError(f"stream id {after!r} is not of the form <ms> or <ms>-<seq> (e.g. 0)")
    return int(m.group(1)), int(m.group(2) or 0)


def check_count(count: int) -> None:
    if count < 1:
        raise InvalidInputError(f"stream page size {count} must be at least 1")


def format_id(sid: StreamId) -> str:
    return f"{sid[0]}-{sid[1]}"


@dataclass
class _Visitor:
    """One visitor's state. ``seen``: event_id -> clock time it was stored; ``stream_ids``: ids of the
    visitor's stream entries, oldest first (some may have been trimmed from the stream since)."""

    events: deque[Event]
    expires_at: float
    purchase_log: deque[Event]
    cart: dict[str, float] = field(default_factory=dict)
    purchases: dict[str, float] = field(default_factory=dict)
    seen: dict[str, float] = field(default_factory=dict)
    stream_ids: deque[StreamId] = field(default_factory=deque)
    sent: dict[str, set[str]] = field(default_factory=dict)

    def n_keys(self) -> int:
        """How many Redis keys this state would occupy (empty collections are no keys)."""
        parts = (
            self.events,
            self.cart,
            self.purchases,
            self.seen,
            self.stream_ids,
            self.sent,
            self.purchase_log,
        )
        return sum(1 for p in parts if p) + sum(1 for s in self.sent.values() if s)


class MemoryStore(StoreLimits):
    """VisitorStore in this process's memory (see the module docstring for the semantics)."""

    def __init__(
        self,
        *,
        visitor_ttl: int,
        recent_events: int,
        stream_maxlen: int,
        clock: Callable[[], float] = time.time,
        purchase_log: int = PURCHASE_LOG,
    ) -> None:
        super().__init__(
            visitor_ttl=visitor_ttl,
            recent_events=recent_events,
            stream_maxlen=stream_maxlen,
            purchase_log=purchase_log,
        )
        self._clock = clock
        # ordered by last write: with expiry = last write + ttl, the expired ones are at the front
        self._visitors: OrderedDict[str, _Visitor] = OrderedDict()
        # the stream: entries by id, plus the ids in order from self._head on, for bisecting on `after`
        # (erased ids stay in the order list until the next compaction and are skipped when read)
        self._entries: dict[StreamId, Event] = {}
        self._order: list[StreamId] = []
        self._head = 0
        self._last_id: StreamId = (0, 0)

    # -- VisitorStore -----------------------------------------------------------------------------------

    async def ping(self) -> bool:
        return True

    async def append(self, events: list[Event]) -> AppendResult:
        if not events:
            return AppendResult(accepted=0, duplicates=0)
        now = self._clock()
        self._expire(now)
        accepted = duplicates = 0
        min_time = now - self.visitor_ttl
        pruned: set[str] = set()
        for e in events:
            v = self._visitors.get(e.visitor_id)
            if v is not None and e.visitor_id not in pruned:
                _prune(v, min_time)
                pruned.add(e.visitor_id)
            if e.event_id is not None and v is not None and e.event_id in v.seen:
                duplicates += 1
                continue
            if v is None:
                v = self._new_visitor(now + self.visitor_ttl)
                self._visitors[e.visitor_id] = v
            if e.event_id is not None:
                v.seen[e.event_id] = now
            v.events.append(e)  # the deque's maxlen drops the oldest
            if e.event in PURCHASE_LOG_EVENTS:
                v.purchase_log.append(_logged(e))
            _apply(v, e)
            sid = self._next_id(now)
            self._entries[sid] = e
            self._order.append(sid)
            v.stream_ids.append(sid)
            v.expires_at = now + self.visitor_ttl
            self._visitors.move_to_end(e.visitor_id)
            accepted += 1
        self._trim_stream(now)
        return AppendResult(accepted=accepted, duplicates=duplicates)

    async def visitor(self, visitor_id: str, campaign: str | None = None) -> VisitorState:
        v = self._live(visitor_id, self._clock())
        if v is None:
            return VisitorState(visitor_id=visitor_id, events=[], cart={}, purchases={})
        sent = frozenset(v.sent.get(campaign, ())) if campaign is not None else frozenset()
        return VisitorState(
            visitor_id=visitor_id,
            events=list(v.events),
            cart=dict(v.cart),
            purchases=dict(v.purchases),
            sent=sent,
            purchase_log=list(v.purchase_log),
        )

    async def mark_sent(self, visitor_id: str, campaign: str, item_ids: list[str]) -> None:
        if not item_ids:
            return
        now = self._clock()
        self._expire(now)
        v = self._visitors.get(visitor_id)
        if v is None:
            v = self._new_visitor(now)
            self._visitors[visitor_id] = v
        v.sent.setdefault(campaign, set()).update(item_ids)
        v.expires_at = now + self.visitor_ttl
        self._visitors.move_to_end(visitor_id)

    async def erase(self, visitor_id: str) -> int:
        now = self._clock()
        self._trim_stream(now)  # entries older than the ttl go first, as in Redis
        self._expire(now)
        v = self._visitors.pop(visitor_id, None)
        if v is None:
            return 0
        removed = v.n_keys()
        for sid in v.stream_ids:
            if self._entries.pop(sid, None) is not None:
                removed += 1
        self._compact()
        return removed

    async def read_stream(self, after: str, count: int) -> list[StreamEntry]:
        start = parse_after(after)
        check_count(count)
        i = bisect.bisect_right(self._order, start, lo=self._head)
        out: list[StreamEntry] = []
        while i < len(self._order) and len(out) < count:
            sid = self._order[i]
            event = self._entries.get(sid)
            if event is not None:
                out.append(StreamEntry(entry_id=format_id(sid), event=event))
            i += 1
        return out

    async def recent_visitors(self, limit: int, scan: int) -> list[str]:
        seen: dict[str, None] = {}
        i, read = len(self._order) - 1, 0
        while i >= self._head and read < scan and len(seen) < limit:
            event = self._entries.get(self._order[i])
            if event is not None:
                seen.setdefault(event.visitor_id)
                read += 1
            i -= 1
        return list(seen)

    async def close(self) -> None:
        return None

    # -- internals --------------------------------------------------------------------------------------

    def _new_visitor(self, expires_at: float) -> _Visitor:
        return _Visitor(
            events=deque(maxlen=self.recent_events),
            expires_at=expires_at,
            purchase_log=deque(maxlen=self.purchase_log),
        )

    def _live(self, visitor_id: str, now: float) -> _Visitor | None:
        v = self._visitors.get(visitor_id)
        if v is not None and v.expires_at <= now:
            return None
        return v

    def _expire(self, now: float) -> None:
        """Drop visitors whose ttl ran out (they sit at the front: ordered by last write)."""
        while self._visitors:
            visitor_id, v = next(iter(self._visitors.items()))
            if v.expires_at > now:
                break
            del self._visitors[visitor_id]

    def _next_id(self, now: float) -> StreamId:
        ms = int(now * 1000)
        last_ms, last_seq = self._last_id
        # like Redis: ids only grow, even if the clock goes back
        sid = (ms, 0) if ms > last_ms else (last_ms, last_seq + 1)
        self._last_id = sid
        return sid

    def _trim_stream(self, now: float) -> None:
        """Keep at most stream_maxlen entries, none older than visitor_ttl."""
        min_ms = int(now * 1000) - self.visitor_ttl * 1000
        order = self._order
        while self._head < len(order):
            sid = order[self._head]
            if sid in self._entries and len(self._entries) <= self.stream_maxlen and sid[0] >= min_ms:
                break
            self._entries.pop(sid, None)
            self._head += 1
        self._compact()

    def _compact(self) -> None:
        """Rebuild the order list once most of it is trimmed or erased (amortised O(1) per entry)."""
        dead = len(self._order) - len(self._entries)  # trimmed (before head) or erased ids
        if dead > 1024 and dead > len(self._order) // 2:
            self._order = [sid for sid in self._order[self._head :] if sid in self._entries]
            self._head = 0


def _prune(v: _Visitor, min_time: float) -> None:
    """Forget event ids and stream ids older than the ttl window (both are in insertion order)."""
    while v.seen:
        event_id, t = next(iter(v.seen.items()))
        if t >= min_time:
            break
        del v.seen[event_id]
    min_ms = int(min_time * 1000)
    while v.stream_ids and v.stream_ids[0][0] < min_ms:
        v.stream_ids.popleft()


def _logged(e: Event) -> Event:
    """What the purchase log keeps of an event (the Redis store keeps the same four fields)."""
    return Event(visitor_id=e.visitor_id, item_id=e.item_id, event=e.event, timestamp=e.timestamp)


def _apply(v: _Visitor, e: Event) -> None:
    """Cart and purchases after event ``e`` (see the module docstring)."""
    item, t = e.item_id, e.timestamp
    if e.event is EventType.ADD_TO_CART:
        if v.cart.get(item, t) <= t:
            v.cart[item] = t
    elif e.event in (EventType.REMOVE_FROM_CART, EventType.PURCHASE):
        if item in v.cart and v.cart[item] <= t:
            del v.cart[item]
        if e.event is EventType.PURCHASE and v.purchases.get(item, t) <= t:
            v.purchases[item] = t
    elif e.event is EventType.CANCEL and item in v.purchases and v.purchases[item] <= t:
        del v.purchases[item]
