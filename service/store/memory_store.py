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

Identity (``service.store.identity``): a linked anonymous id keeps only its alias (the user id) and is
served the user's state (its person too: the anonymous visitor's, after a first login); appends, reads
and campaign sends follow the alias in the same atomic step. The alias lives ``visitor_ttl`` seconds after
the link or the last event that followed it. The link runs as the documented single-visitor steps, each
giving the event loop a turn first as a Redis round trip would.

Concurrency: no method awaits while it reads or changes state, so every call (every link step) is
atomic with respect to the other coroutines of the event loop and no lock is needed. It is not
thread-safe: use one event loop.
"""

from __future__ import annotations

import bisect
import re
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter

import msgspec

from models.domain import PURCHASE_LOG_EVENTS, Event, EventType
from models.errors import InvalidInputError
from service.store import identity
from service.store.base import (
    PURCHASE_LOG,
    AppendResult,
    StoreLimits,
    StreamEntry,
    VisitorState,
)
from service.store.identity import MAX_HOPS, Contribution, LinkResult, MergeOutcome, Snapshot

StreamId = tuple[int, int]  # (milliseconds, sequence), ordered like Redis stream ids
_STREAM_ID = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
_MAX_U64 = 2**64 - 1
_ENDS_CART = (EventType.REMOVE_FROM_CART, EventType.PURCHASE)
_timestamp = attrgetter("timestamp")


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
    linked: set[str] = field(default_factory=set)  # anonymous ids linked to this user
    alias: str | None = None  # the user this anonymous id is linked to
    person: str | None = None  # the id experiments hash, when not the visitor id (``VisitorState.person``)

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
            self.linked,
            self.alias,
            self.person,
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
        accepted = duplicates = redirected = 0
        aliases: dict[str, str] = {}
        min_time = now - self.visitor_ttl
        pruned: set[str] = set()
        for original in events:
            e = self._follow_alias(original, now)
            if e is not original:
                redirected += 1
                aliases[original.visitor_id] = e.visitor_id
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
        persons = {
            vid: v.person
            for vid in {e.visitor_id for e in events} | set(aliases.values())
            if (v := self._visitors.get(vid)) is not None and v.person is not None
        }
        return AppendResult(accepted, duplicates, redirected, aliases, persons)

    async def visitor(self, visitor_id: str, campaign: str | None = None) -> VisitorState:
        now = self._clock()
        v = self._live(visitor_id, now)
        for _ in range(MAX_HOPS):
            if v is None or v.alias is None:
                break
            visitor_id = v.alias
            v = self._live(visitor_id, now)
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
            person=v.person or visitor_id,
        )

    async def mark_sent(self, visitor_id: str, campaign: str, item_ids: list[str]) -> None:
        if not item_ids:
            return
        now = self._clock()
        self._expire(now)
        visitor_id = self._resolve(visitor_id)
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
        v = self._visitors.get(visitor_id)
        if v is None:
            return 0
        # the anonymous ids linked to this user first (those still aliased to it), then the visitor itself
        removed = sum(
            self._erase_one(anon)
            for anon in sorted(v.linked)
            if (a := self._visitors.get(anon)) is not None and a.alias == visitor_id
        )
        removed += self._erase_one(visitor_id)
        if v.alias is not None and (user := self._visitors.get(v.alias)) is not None:
            user.linked.discard(visitor_id)
        self._compact()
        return removed

    async def linked(self, visitor_id: str) -> list[str]:
        self._expire(self._clock())
        v = self._visitors.get(visitor_id)
        return sorted(v.linked) if v is not None else []

    async def resolve(self, visitor_id: str) -> str:
        self._expire(self._clock())
        return self._resolve(visitor_id)

    async def resolve_many(self, visitor_ids: list[str]) -> dict[str, str]:
        self._expire(self._clock())
        return {v: r for v in set(visitor_ids) if (r := self._resolve(v)) != v}

    async def persons_of(self, visitor_ids: list[str]) -> dict[str, str]:
        self._expire(self._clock())
        found = {}
        for v in set(visitor_ids):
            user = self._visitors.get(self._resolve(v))
            person = user.person if user is not None and user.person is not None else self._resolve(v)
            if person != v:
                found[v] = person
        return found

    async def link(self, anonymous_id: str, user_id: str, *, force: bool = False) -> LinkResult:
        return await identity.link(self, anonymous_id, user_id, force=force)

    # -- the steps of a link (service.store.identity) -------------------------------------------------

    async def link_claim(self, user_id: str, anonymous_id: str) -> tuple[bool, str | None]:
        await identity.yield_between_steps()
        now = self._clock()
        u = self._write(user_id, now)
        if u.alias is not None:
            return False, u.alias
        added = anonymous_id not in u.linked
        u.linked.add(anonymous_id)
        return added, None

    async def link_unclaim(self, user_id: str, anonymous_id: str) -> None:
        await identity.yield_between_steps()
        u = self._live(user_id, self._clock())
        if u is not None:
            u.linked.discard(anonymous_id)

    async def link_alias(self, anonymous_id: str, user_id: str, force: bool) -> tuple[str, str | None]:
        await identity.yield_between_steps()
        now = self._clock()
        a = self._live(anonymous_id, now)
        if a is not None and a.linked:
            return "user", None
        previous = a.alias if a is not None else None
        if previous is not None and previous != user_id and not force:
            return "taken", previous
        self._write(anonymous_id, now).alias = user_id
        return "ok", previous

    async def link_snapshot(self, anonymous_id: str) -> Snapshot:
        await identity.yield_between_steps()
        a = self._live(anonymous_id, self._clock())
        if a is None:
            return Snapshot()
        return Snapshot(
            events=list(a.events),
            cart=dict(a.cart),
            purchases=dict(a.purchases),
            ids=list(a.seen),
            sids=[format_id(sid) for sid in a.stream_ids],
            purchase_log=list(a.purchase_log),
            sent={c: sorted(items) for c, items in a.sent.items()},
            person=a.person,
        )

    async def link_merge(self, user_id: str, contribution: Contribution) -> MergeOutcome:
        await identity.yield_between_steps()
        now = self._clock()
        u = self._write(user_id, now)
        return _merge(u, contribution, now)

    async def link_clear(self, anonymous_id: str) -> None:
        await identity.yield_between_steps()
        a = self._live(anonymous_id, self._clock())
        if a is not None:
            fresh = self._new_visitor(a.expires_at)
            fresh.alias, fresh.linked = a.alias, a.linked
            self._visitors[anonymous_id] = fresh

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

    def _erase_one(self, visitor_id: str) -> int:
        v = self._visitors.pop(visitor_id, None)
        if v is None:
            return 0
        return v.n_keys() + sum(1 for sid in v.stream_ids if self._entries.pop(sid, None) is not None)

    def _resolve(self, visitor_id: str) -> str:
        v = self._visitors.get(visitor_id)
        return v.alias if v is not None and v.alias is not None else visitor_id

    def _follow_alias(self, e: Event, now: float) -> Event:
        """``e`` re-addressed to the user its visitor id is linked to (the alias lives on), else ``e``."""
        for _ in range(MAX_HOPS):
            v = self._visitors.get(e.visitor_id)
            if v is None or v.alias is None:
                break
            v.expires_at = now + self.visitor_ttl
            self._visitors.move_to_end(e.visitor_id)
            e = msgspec.structs.replace(e, visitor_id=v.alias)
        return e

    def _write(self, visitor_id: str, now: float) -> _Visitor:
        """The visitor about to be written (created if new), its ttl refreshed."""
        self._expire(now)
        v = self._visitors.get(visitor_id)
        if v is None:
            v = self._visitors[visitor_id] = self._new_visitor(now)
        v.expires_at = now + self.visitor_ttl
        self._visitors.move_to_end(visitor_id)
        return v

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


def _merge(u: _Visitor, c: Contribution, now: float) -> MergeOutcome:
    """Union an anonymous visitor's contribution into user state ``u`` (``service.store.identity``; the
    Redis store's ``_MERGE`` script is the same algorithm)."""
    inf = float("inf")
    if not u.events and u.person is None:  # a first login: the visitor keeps their person
        u.person = c.person
    # the user's facts before the merge: its latest purchase of anything, and per item the latest
    # remove or purchase (an older anonymous add of the item stays out of the cart)
    u_ends: dict[str, float] = {}
    for item, t in [
        *((e.item_id, e.timestamp) for e in u.events if e.event in _ENDS_CART),
        *((e.item_id, e.timestamp) for e in u.purchase_log if e.event is EventType.PURCHASE),
        *u.purchases.items(),
    ]:
        u_ends[item] = max(u_ends.get(item, -inf), t)
    last_purchase = max((e.timestamp for e in u.purchase_log if e.event is EventType.PURCHASE), default=-inf)
    last_purchase = max(last_purchase, *u.purchases.values(), -inf)
    u_cancels: dict[str, float] = {}
    for e in u.purchase_log:
        if e.event is EventType.CANCEL:
            u_cancels[e.item_id] = max(u_cancels.get(e.item_id, -inf), e.timestamp)
    # events: unseen merge ids only, then everything in time order (the user's first on a tie)
    kept: list[Event] = []
    for mid, e in c.events:
        if mid not in u.seen:
            u.seen[mid] = now
            kept.append(e)
    for event_id in c.ids:
        u.seen.setdefault(event_id, now)
    if kept:
        u.events = deque(sorted([*u.events, *kept], key=_timestamp), maxlen=u.events.maxlen)
    # purchase log: each entry as many times as the side holding it more often has it
    have = Counter(_log_key(e) for e in u.purchase_log)
    want = Counter(_log_key(e) for e in c.purchase_log)
    extra: list[Event] = []
    for e in c.purchase_log:
        if have[_log_key(e)] < want[_log_key(e)]:
            have[_log_key(e)] += 1
            extra.append(e)
    if extra:
        u.purchase_log = deque(
            sorted([*u.purchase_log, *extra], key=_timestamp), maxlen=u.purchase_log.maxlen
        )
    # purchases: the latest of both, gone when a cancel of either came at or after it
    for item in {*c.purchases, *c.cancels}:
        t = max(u.purchases.get(item, -inf), c.purchases.get(item, -inf))
        if t == -inf:
            continue
        if max(c.cancels.get(item, -inf), u_cancels.get(item, -inf)) >= t:
            u.purchases.pop(item, None)
        else:
            u.purchases[item] = t
    # cart: the user's loses what the anonymous visitor removed or bought later; the anonymous cart's net
    # adds since the user's last purchase join it
    for item, t in c.ends.items():
        if u.cart.get(item, inf) <= t:
            del u.cart[item]
    carried: list[str] = []
    for item, t in c.cart.items():
        if t > last_purchase and u_ends.get(item, -inf) < t:
            if u.cart.get(item, t) <= t:
                u.cart[item] = t
            carried.append(item)
    u.stream_ids = deque(sorted({*u.stream_ids, *(parse_after(s) for s in c.sids)}))
    for campaign, items in c.sent.items():
        u.sent.setdefault(campaign, set()).update(items)
    return MergeOutcome(len(kept), sorted(carried))


def _log_key(e: Event) -> tuple[EventType, float, str]:
    return e.event, e.timestamp, e.item_id


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
