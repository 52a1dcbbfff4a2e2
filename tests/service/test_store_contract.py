"""The VisitorStore contract: the same tests run against MemoryStore and RedisStore, the latter on one Redis
and on a Redis Cluster.

The ``redis`` params need the test Redis (the ``redis_url`` fixture, ``tests/conftest.py``: they fail when
JOURNEYREC_TEST_REDIS_URL is set and Redis does not answer, and skip when it is unset and the default does
not answer); the ``cluster`` params the test Redis Cluster likewise (``redis_cluster_url``,
JOURNEYREC_TEST_REDIS_CLUSTER_URL). Every test uses its own key prefix and deletes its keys afterwards (on
every master of a cluster).
"""

from __future__ import annotations

import asyncio
import random
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from models.domain import Channel, Event, EventType
from models.errors import InvalidInputError, StoreUnavailableError
from service.store import trail
from service.store.base import AppendResult, VisitorState, VisitorStore
from service.store.memory_store import MemoryStore
from service.store.redis_store import RedisStore

DEFAULTS: dict[str, int] = {"visitor_ttl": 3600, "recent_events": 200, "stream_maxlen": 100_000}
T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z, event times
E = EventType


def ev(visitor: str, item: str, kind: EventType, t: float, **extra: Any) -> Event:
    return Event(visitor_id=visitor, item_id=item, event=kind, timestamp=t, **extra)


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    """One store implementation under test. ``make(**overrides)`` builds a store (closed afterwards);
    ``raw``/``prefix`` let Redis-only checks look at the keys; ``wait`` lets ttl time pass."""

    kind: str
    make: Callable[..., VisitorStore]
    wait: Callable[[float], Any]
    raw: aioredis.Redis | None = None
    prefix: str = ""

    @property
    def redis(self) -> aioredis.Redis:
        assert self.raw is not None
        return self.raw


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        clock = FakeClock()

        async def advance(seconds: float) -> None:
            clock.now += seconds

        def make_memory(**kw: Any) -> VisitorStore:
            return MemoryStore(**{**DEFAULTS, **kw}, clock=clock)

        yield Harness("memory", make_memory, advance)
        return

    url: str = request.getfixturevalue("redis_url" if request.param == "redis" else "redis_cluster_url")
    raw: Any = RedisStore.from_url(url, prefix="jrtest-raw", socket_timeout=5, **DEFAULTS).client
    prefix = f"jrtest-{uuid.uuid4().hex[:12]}"
    stores: list[RedisStore] = []

    def make_redis(**kw: Any) -> VisitorStore:
        store = RedisStore.from_url(url, prefix=prefix, socket_timeout=5, **{**DEFAULTS, **kw})
        stores.append(store)
        return store

    h = Harness("redis", make_redis, asyncio.sleep, raw, prefix)
    try:
        yield h
    finally:
        for store in stores:
            await store.close()
        for key in await all_keys(h):
            await raw.delete(key)
        await raw.aclose()


def only_redis(h: Harness) -> None:
    if h.kind != "redis":
        pytest.skip("Redis key layout only")


async def all_keys(h: Harness) -> list[bytes]:
    """Every key of the test's prefix (a cluster client scans every master)."""
    return [k async for k in h.redis.scan_iter(match=f"{h.prefix}:*", count=1000)]


async def dump(r: aioredis.Redis, key: bytes) -> bytes:
    """Everything stored under one key, as bytes (to search for a visitor's id)."""
    raw_kind = await r.type(key)
    kind = raw_kind.decode() if isinstance(raw_kind, bytes) else str(raw_kind)
    value: Any
    if kind == "string":
        value = await r.get(key)
    elif kind == "hash":
        value = await r.hgetall(key)
    elif kind == "list":
        value = await r.lrange(key, 0, -1)
    elif kind == "set":
        value = await r.smembers(key)
    elif kind == "zset":
        value = await r.zrange(key, 0, -1, withscores=True)
    elif kind == "stream":
        value = await r.xrange(key)
    else:
        value = kind
    return repr(value).encode()


async def stream_events(store: VisitorStore) -> list[Event]:
    return [entry.event for entry in await store.read_stream("0", 1_000_000)]


def per_visitor(events: list[Event]) -> dict[str, list[Event]]:
    """Each visitor's events in the order given. The stream keeps each visitor's events in arrival order;
    across visitors, its order is that of the entry ids (the Redis store's shards: module docstring of
    ``service.store.redis_store``), which within one millisecond need not be arrival order."""
    out: dict[str, list[Event]] = {}
    for e in events:
        out.setdefault(e.visitor_id, []).append(e)
    return out


# -- state round trip -------------------------------------------------------------------------------------


async def test_append_and_read_back_every_field(harness: Harness) -> None:
    store = harness.make()
    events = [
        ev("v1", "c-1", E.CONTENT_VIEW, T0, channel=Channel.SOCIAL, session_id="s1", country="FR"),
        ev("v1", "p-1", E.PRODUCT_VIEW, T0 + 1.25, event_id="id-1"),
        ev("v1", "p-1", E.PURCHASE, T0 + 0.1 + 2, quantity=2.0, value=39.9, event_id="id-2"),
    ]
    assert await store.append(events) == AppendResult(accepted=3, duplicates=0)
    state = await store.visitor("v1")
    assert state == VisitorState(
        visitor_id="v1",
        events=events,
        cart={},
        purchases={"p-1": T0 + 0.1 + 2},
        sent=frozenset(),
        purchase_log=[ev("v1", "p-1", E.PURCHASE, T0 + 0.1 + 2)],  # only the four fields buy-again reads
    )


async def test_unknown_visitor_gets_an_empty_state(harness: Harness) -> None:
    store = harness.make()
    await store.append([ev("known", "p", E.PAGE_VIEW, T0)])
    for campaign in (None, "spring"):
        state = await store.visitor("nobody", campaign)
        assert state == VisitorState(visitor_id="nobody", events=[], cart={}, purchases={})
    assert await store.append([]) == AppendResult(accepted=0, duplicates=0)


async def test_visitor_ids_with_any_characters_stay_apart(harness: Harness) -> None:
    store = harness.make()
    ids = ["a", "a:events", "{a}", "a}", "}{", "a:{b}:cart", "*", "ü 😀 space", "a\\b", "x" * 256, ""]
    await store.append([ev(v, f"item-{i}", E.ADD_TO_CART, T0 + i) for i, v in enumerate(ids)])
    for i, v in enumerate(ids):
        state = await store.visitor(v)
        assert [e.visitor_id for e in state.events] == [v]
        assert state.cart == {f"item-{i}": T0 + i}


async def test_cart_follows_add_remove_checkout_and_purchase(harness: Harness) -> None:
    store = harness.make()
    await store.append(
        [
            ev("v", "a", E.ADD_TO_CART, T0 + 1),
            ev("v", "b", E.ADD_TO_CART, T0 + 2),
            ev("v", "c", E.ADD_TO_CART, T0 + 3),
            ev("v", "d", E.ADD_TO_CART, T0 + 4),
            ev("v", "b", E.REMOVE_FROM_CART, T0 + 5),
            ev("v", "a", E.CHECKOUT, T0 + 6),  # checkout keeps the cart
            ev("v", "c", E.PURCHASE, T0 + 7),  # a purchase takes the item out of the cart
        ]
    )
    state = await store.visitor("v")
    assert state.cart == {"a": T0 + 1, "d": T0 + 4}
    assert state.purchases == {"c": T0 + 7}
    # adding again refreshes the time; an older (late-arriving) removal does not undo a newer add
    await store.append([ev("v", "a", E.ADD_TO_CART, T0 + 10), ev("v", "a", E.REMOVE_FROM_CART, T0 + 9)])
    await store.append([ev("v", "c", E.ADD_TO_CART, T0 + 11)])  # bought before, in the cart again
    state = await store.visitor("v")
    assert state.cart == {"a": T0 + 10, "c": T0 + 11, "d": T0 + 4}
    await store.append([ev("v", "d", E.REMOVE_FROM_CART, T0 + 12)])
    assert (await store.visitor("v")).cart == {"a": T0 + 10, "c": T0 + 11}


async def test_purchases_keep_the_latest_time_and_a_cancel_removes_them(harness: Harness) -> None:
    store = harness.make()
    await store.append(
        [
            ev("v", "x", E.PURCHASE, T0 + 10),
            ev("v", "x", E.PURCHASE, T0 + 5),  # late-arriving older purchase: the latest time stays
            ev("v", "y", E.PURCHASE, T0 + 20),
            ev("v", "z", E.PURCHASE, T0 + 30),
            ev("v", "y", E.CANCEL, T0 + 21),  # cancelled: no longer owned
            ev("v", "z", E.CANCEL, T0 + 29),  # cancels an earlier purchase, not the one at +30
            ev("v", "w", E.CANCEL, T0 + 40),  # nothing to cancel
        ]
    )
    assert (await store.visitor("v")).purchases == {"x": T0 + 10, "z": T0 + 30}


async def test_recent_events_are_capped_and_purchases_outlive_the_cap(harness: Harness) -> None:
    store = harness.make(recent_events=5)
    await store.append([ev("v", "bought", E.PURCHASE, T0), ev("v", "kept", E.ADD_TO_CART, T0 + 1)])
    views = [ev("v", f"p{i}", E.PRODUCT_VIEW, T0 + 2 + i) for i in range(7)]
    await store.append(views[:3])
    await store.append(views[3:])
    state = await store.visitor("v")
    assert state.events == views[-5:]  # the newest five, oldest first
    assert state.purchases == {"bought": T0}
    assert state.cart == {"kept": T0 + 1}
    # the stream keeps every event
    assert len(await stream_events(store)) == 9


# -- idempotency ------------------------------------------------------------------------------------------


async def test_event_ids_make_appends_idempotent(harness: Harness) -> None:
    store = harness.make()
    first = [
        ev("v", "a", E.ADD_TO_CART, T0, event_id="e1"),
        ev("v", "b", E.PRODUCT_VIEW, T0 + 1, event_id="e2"),
        ev("v", "a", E.ADD_TO_CART, T0, event_id="e1"),  # repeated within the batch
        ev("v", "c", E.PAGE_VIEW, T0 + 2),  # no event id: always stored
    ]
    assert await store.append(first) == AppendResult(accepted=3, duplicates=1)
    retry = [
        ev("v", "b", E.PRODUCT_VIEW, T0 + 1, event_id="e2"),
        ev("v", "d", E.PRODUCT_VIEW, T0 + 3, event_id="e3"),
        ev("v", "c", E.PAGE_VIEW, T0 + 2),
        # the scope of an event id is its visitor: another visitor's "e1" is another event
        ev("w", "a", E.PRODUCT_VIEW, T0 + 4, event_id="e1"),
    ]
    assert await store.append(retry) == AppendResult(accepted=3, duplicates=1)
    assert await store.append(first[:2]) == AppendResult(accepted=0, duplicates=2)
    state = await store.visitor("v")
    assert [(e.item_id, e.event_id) for e in state.events] == [
        ("a", "e1"),
        ("b", "e2"),
        ("c", None),
        ("d", "e3"),
        ("c", None),
    ]
    stream = per_visitor(await stream_events(store))
    assert {v: [e.item_id for e in events] for v, events in stream.items()} == {
        "v": ["a", "b", "c", "d", "c"],
        "w": ["a"],
    }


async def test_a_duplicate_does_not_change_the_state(harness: Harness) -> None:
    store = harness.make()
    await store.append([ev("v", "a", E.ADD_TO_CART, T0, event_id="add")])
    await store.append([ev("v", "a", E.PURCHASE, T0 + 1, event_id="buy")])
    # a retried add (same id) must not put the bought item back into the cart
    assert await store.append([ev("v", "a", E.ADD_TO_CART, T0 + 2, event_id="add")]) == AppendResult(0, 1)
    state = await store.visitor("v")
    assert state.cart == {}
    assert state.purchases == {"a": T0 + 1}


# -- campaigns --------------------------------------------------------------------------------------------


async def test_sent_sets_are_per_visitor_and_campaign(harness: Harness) -> None:
    store = harness.make()
    odd = "spring: {sale}*"
    await store.mark_sent("v", "c1", ["a", "b"])
    await store.mark_sent("v", "c1", ["b", "c"])
    await store.mark_sent("v", odd, ["z"])
    await store.mark_sent("w", "c1", ["q"])
    await store.mark_sent("v", "c3", [])  # nothing to remember
    assert (await store.visitor("v", "c1")).sent == {"a", "b", "c"}
    assert (await store.visitor("v", odd)).sent == {"z"}
    assert (await store.visitor("v", "c3")).sent == frozenset()
    assert (await store.visitor("v")).sent == frozenset()
    assert (await store.visitor("w", "c1")).sent == {"q"}
    # marking items sent does not invent events
    assert (await store.visitor("v")).events == []


# -- erase ------------------------------------------------------------------------------------------------


async def test_the_purchase_log_keeps_purchases_and_cancels_beyond_the_recent_events(
    harness: Harness,
) -> None:
    store = harness.make(recent_events=3, purchase_log=4)
    history = [
        ev("v", "kettle", E.PURCHASE, T0, event_id="1"),
        ev("v", "kettle", E.PURCHASE, T0 + 10, quantity=3.0),
        ev("v", "mug", E.PURCHASE, T0 + 20),
        ev("v", "mug", E.CANCEL, T0 + 30),
        *(ev("v", f"seen-{i}", E.PRODUCT_VIEW, T0 + 40 + i) for i in range(4)),
    ]
    await store.append(history)
    await store.append([ev("v", "kettle", E.PURCHASE, T0, event_id="1")])  # a retry: not logged twice
    state = await store.visitor("v")
    assert [e.item_id for e in state.events] == ["seen-1", "seen-2", "seen-3"]
    assert state.purchase_log == [
        ev("v", "kettle", E.PURCHASE, T0),
        ev("v", "kettle", E.PURCHASE, T0 + 10),
        ev("v", "mug", E.PURCHASE, T0 + 20),
        ev("v", "mug", E.CANCEL, T0 + 30),
    ]
    await store.append([ev("v", "tea|green", E.PURCHASE, T0 + 50)])  # "|" in an item id is kept whole
    log = (await store.visitor("v")).purchase_log
    assert [(e.item_id, e.event) for e in log] == [
        ("kettle", E.PURCHASE),
        ("mug", E.PURCHASE),
        ("mug", E.CANCEL),
        ("tea|green", E.PURCHASE),
    ]  # capped at four: the oldest went


def test_the_purchase_log_must_hold_the_recent_events(harness: Harness) -> None:
    with pytest.raises(ValueError, match="purchase_log"):
        harness.make(recent_events=5, purchase_log=4)


async def _populate(store: VisitorStore, visitor: str, other: str) -> None:
    await store.append(
        [
            ev(visitor, "a", E.ADD_TO_CART, T0, event_id=f"{visitor}-1"),
            ev(other, "a", E.PRODUCT_VIEW, T0, event_id=f"{other}-1"),
            ev(visitor, "b", E.PURCHASE, T0 + 1, event_id=f"{visitor}-2"),
            ev(visitor, "c", E.PAGE_VIEW, T0 + 2),
        ]
    )
    await store.append([ev(other, "b", E.ADD_TO_CART, T0 + 3)])
    await store.mark_sent(visitor, "c1", ["x"])
    await store.mark_sent(visitor, "c2", ["y"])
    await store.mark_sent(other, "c1", ["x"])


async def test_erase_removes_everything_of_one_visitor(harness: Harness) -> None:
    store = harness.make()
    visitor, other = f"erase-me:{{{uuid.uuid4().hex[:8]}}}", f"keep-me-{uuid.uuid4().hex[:8]}"
    await _populate(store, visitor, other)
    before_other = await store.visitor(other, "c1")
    # events, cart, purchases, ids, sids, campaigns, purchase log, two sent sets + three stream entries
    assert await store.erase(visitor) == 9 + 3
    assert await store.visitor(visitor, "c1") == VisitorState(
        visitor_id=visitor, events=[], cart={}, purchases={}
    )
    assert await store.visitor(visitor, "c2") == VisitorState(
        visitor_id=visitor, events=[], cart={}, purchases={}
    )
    assert [e.visitor_id for e in await stream_events(store)] == [other, other]
    assert await store.visitor(other, "c1") == before_other
    assert await store.erase(visitor) == 0
    assert await store.erase("never-seen") == 0
    # an erased visitor starts afresh: old event ids are forgotten too
    assert await store.append([ev(visitor, "a", E.PAGE_VIEW, T0, event_id=f"{visitor}-1")]) == AppendResult(
        1, 0
    )


async def test_erase_leaves_no_trace_in_redis(harness: Harness) -> None:
    only_redis(harness)
    store = harness.make()
    visitor, other = f"erase-me-{uuid.uuid4().hex}", f"keep-me-{uuid.uuid4().hex}"
    await _populate(store, visitor, other)

    async def mentions(v: str) -> list[bytes]:
        needles = (v.encode(), v.encode().hex().encode())
        found = []
        for key in await all_keys(harness):
            value = await dump(harness.redis, key)
            if any(n in key or n in value for n in needles):
                found.append(key)
        return found

    assert len(await mentions(visitor)) == 11  # 10 visitor keys (trail, 2 sent sets) + the stream
    assert await store.erase(visitor) > 0
    assert await mentions(visitor) == []
    assert await mentions(other)


# -- ttl --------------------------------------------------------------------------------------------------


async def test_every_visitor_key_has_a_ttl_and_the_stream_none(harness: Harness) -> None:
    only_redis(harness)
    store = harness.make(visitor_ttl=1000)
    await _populate(store, "v", "w")
    keys = await all_keys(harness)
    assert isinstance(store, RedisStore)
    # the keys of the visitors' stream shards (stream, references and their times): no ttl
    shard_keys = {k.encode() for v in ("v", "w") for k in store.shard_keys(store.shard_of(v))}
    # v: 8 (trail included) + 2 sent sets; w: no purchases (so no purchase log), 1 sent set
    assert len(keys) == 10 + 7 + len(shard_keys)
    for key in keys:
        ttl = await harness.redis.ttl(key)
        if key in shard_keys:
            assert ttl == -1, key
        else:
            assert 990 <= ttl <= 1001, (key, ttl)
            assert b"{v:" in key  # every visitor key carries the visitor's hash tag


async def test_stored_events_leave_out_unset_fields_and_read_back_whole(harness: Harness) -> None:
    only_redis(harness)
    store = harness.make()
    plain = ev("v", "a", E.PRODUCT_VIEW, T0)
    full = ev("v", "b", E.PURCHASE, T0 + 1, event_id="e-1", quantity=2.0, value=9.5, country="gb")
    await store.append([plain, full])
    stored = [raw async for raw in _stored_event_json(harness)]
    assert len(stored) == 4  # the recent-events list and the stream, each twice
    assert all(b"null" not in raw for raw in stored), stored
    assert (await store.visitor("v")).events == [plain, full]
    assert await stream_events(store) == [plain, full]


async def _stored_event_json(h: Harness) -> AsyncIterator[bytes]:
    for key in await all_keys(h):
        if key.endswith(b":events"):
            for raw in await h.redis.lrange(key, 0, -1):
                yield raw
        elif key.endswith(b":stream"):
            for _sid, fields in await h.redis.xrange(key):
                yield fields[b"e"]


async def test_a_visitor_expires_as_a_whole_after_the_ttl(harness: Harness) -> None:
    store = harness.make(visitor_ttl=1)
    await _populate(store, "v", "w")
    await harness.wait(0.5)
    await store.mark_sent("w", "c1", ["y"])  # a write keeps w alive
    await harness.wait(0.5)
    await store.append([ev("w", "c", E.PRODUCT_VIEW, T0)])
    # polling (Redis expires keys in the background); no assertion on how long it took
    for _ in range(100):
        if await store.visitor("v", "c1") == VisitorState(visitor_id="v", events=[], cart={}, purchases={}):
            break
        await harness.wait(0.1)
    assert await store.visitor("v", "c1") == VisitorState(visitor_id="v", events=[], cart={}, purchases={})
    assert (await store.visitor("w", "c1")).sent == {"x", "y"}
    # v's stream entries have aged out with it: an erase finds nothing, and the stream holds only new events
    await harness.wait(1.2)
    assert await store.erase("v") == 0
    await store.append([ev("u", "d", E.PAGE_VIEW, T0)])
    assert [e.visitor_id for e in await stream_events(store)] == ["u"]


# -- stream -----------------------------------------------------------------------------------------------


async def test_stream_is_read_in_order_after_an_id(harness: Harness) -> None:
    store = harness.make()
    batches = [
        [ev(f"v{(b * 7 + i) % 3}", f"i{b}-{i}", E.PRODUCT_VIEW, T0 + b * 10 + i) for i in range(5)]
        for b in range(4)
    ]
    for batch in batches:
        await store.append(batch)
    expected = [e for batch in batches for e in batch]
    entries = await store.read_stream("0", 100)
    events = [s.event for s in entries]
    # every event once; each visitor's in arrival order; in entry id order
    assert sorted(events, key=expected.index) == expected
    assert per_visitor(events) == per_visitor(expected)
    ids = [s.entry_id for s in entries]
    assert all(re.fullmatch(r"\d+-\d+", i) for i in ids)
    parsed = [tuple(int(p) for p in i.split("-")) for i in ids]
    assert parsed == sorted(parsed)
    assert len(set(parsed)) == len(parsed)
    assert await store.read_stream(ids[2], 3) == entries[3:6]
    assert await store.read_stream(ids[-1], 10) == []
    # paging through reaches every entry exactly once
    seen, after = [], "0"
    while page := await store.read_stream(after, 6):
        seen += page
        after = page[-1].entry_id
    assert seen == entries
    # "<ms>" alone means "<ms>-0"
    ms, seq = ids[0].split("-")
    assert await store.read_stream(ms, 100) == await store.read_stream(f"{ms}-0", 100)
    assert await store.read_stream(ms, 100) == (entries if seq != "0" else entries[1:])
    for bad in ("", "abc", "1-2-3", "-1", "1-"):
        with pytest.raises(InvalidInputError):
            await store.read_stream(bad, 10)
    with pytest.raises(InvalidInputError):
        await store.read_stream("0", 0)


async def test_paging_a_stream_most_of_whose_entries_are_one_visitors(harness: Harness) -> None:
    store = harness.make()
    busy = [ev("busy", f"b{i}", E.PAGE_VIEW, T0 + i) for i in range(300)]
    others = [ev(f"o{i}", f"o{i}", E.PAGE_VIEW, T0 + i) for i in range(40)]
    for start in range(0, 300, 50):  # the others in between
        await store.append(busy[start : start + 50] + others[start // 10 : start // 10 + 5])
    everything = await store.read_stream("0", 10_000)
    assert len(everything) == 330
    for size in (1, 7, 100, 329):
        seen, after = [], "0"
        while page := await store.read_stream(after, size):
            assert len(page) <= size
            seen += page
            after = page[-1].entry_id
        assert seen == everything


async def test_stream_is_capped_at_maxlen(harness: Harness) -> None:
    maxlen = 50
    store = harness.make(stream_maxlen=maxlen)
    events = [ev(f"v{i % 7}", f"i{i}", E.PAGE_VIEW, T0 + i) for i in range(400)]
    for start in range(0, len(events), 40):
        await store.append(events[start : start + 40])
    kept = await stream_events(store)
    if harness.kind == "memory":
        assert kept == events[-maxlen:]  # the newest are kept, in order
    else:
        # each of the Redis store's shards keeps its newest ceil(maxlen / shards) entries, approximately
        # (whole nodes of stream-node-max-entries entries)
        assert isinstance(store, RedisStore)
        config: dict[Any, Any] = await harness.redis.config_get("stream-node-max-entries")
        slack = int(next(iter(config.values()), 100))
        by_shard: dict[int, list[Event]] = {}
        for e in kept:
            by_shard.setdefault(store.shard_of(e.visitor_id), []).append(e)
        for shard, shard_kept in by_shard.items():
            sent = [e for e in events if store.shard_of(e.visitor_id) == shard]
            assert min(len(sent), store.shard_maxlen) <= len(shard_kept) <= store.shard_maxlen + slack
            assert shard_kept == sent[-len(shard_kept) :]  # the newest are kept, in order
        assert len(kept) < len(events)
    # trimming the stream leaves visitor state alone
    assert len((await store.visitor("v0")).events) == len([e for e in events if e.visitor_id == "v0"])


# -- concurrency ------------------------------------------------------------------------------------------


async def test_concurrent_appends_and_reads_never_mix_visitors(harness: Harness) -> None:
    store = harness.make(recent_events=1000)
    rng = random.Random(5)
    visitors = [f"c{i:03d}" for i in range(60)]
    batches = []
    for v in visitors:
        for b in range(5):
            batch = [ev(v, f"{v}-item-{b}-{i}", E.PRODUCT_VIEW, T0 + b * 100 + i) for i in range(8)]
            batch.append(ev(v, f"{v}-cart-{b}", E.ADD_TO_CART, T0 + b * 100 + 50, event_id=f"{v}-{b}"))
            batches.append(batch)
    rng.shuffle(batches)
    # duplicates of a few batches race their originals
    racing = batches + [[e for e in batch if e.event_id] for batch in batches[:20]]
    rng.shuffle(racing)

    async def read(v: str) -> VisitorState:
        return await store.visitor(v)

    results = await asyncio.gather(*(store.append(b) for b in racing), *(read(v) for v in visitors))
    appended = [r for r in results if isinstance(r, AppendResult)]
    assert sum(r.accepted for r in appended) == 60 * 5 * 9
    assert sum(r.duplicates for r in appended) == 20
    for r in results:
        if isinstance(r, VisitorState):  # a read racing the writes sees only its own visitor's events
            assert all(e.visitor_id == r.visitor_id for e in r.events)
    states = await asyncio.gather(*(read(v) for v in visitors))
    for v, state in zip(visitors, states, strict=True):
        assert state.visitor_id == v
        assert len(state.events) == 45
        assert all(e.visitor_id == v and e.item_id.startswith(f"{v}-") for e in state.events)
        assert state.cart == {f"{v}-cart-{b}": T0 + b * 100 + 50 for b in range(5)}


async def test_cancelled_reads_never_hand_their_reply_to_another_visitor(harness: Harness) -> None:
    store = harness.make()
    visitors = [f"r{i:02d}" for i in range(30)]
    await store.append([ev(v, f"{v}-item", E.PRODUCT_VIEW, T0) for v in visitors])
    for round_ in range(5):
        tasks = [asyncio.create_task(store.visitor(v)) for v in visitors]
        await asyncio.sleep(0)
        for t in tasks[round_::3]:
            t.cancel()  # cancelled mid-flight, as a client disconnect or a timeout does
        await asyncio.gather(*tasks, return_exceptions=True)
        states = await asyncio.gather(*(store.visitor(v) for v in visitors))
        for v, state in zip(visitors, states, strict=True):
            assert [(e.visitor_id, e.item_id) for e in state.events] == [(v, f"{v}-item")]


# -- Redis unreachable ------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def test_unreachable_redis_raises_store_unavailable_and_ping_is_false() -> None:
    port = _free_port()  # nothing listens there
    store = RedisStore.from_url(
        f"redis://127.0.0.1:{port}/0", prefix="jrtest-dead", socket_timeout=0.5, **DEFAULTS
    )
    try:
        assert await store.ping() is False
        with pytest.raises(StoreUnavailableError) as info:
            await store.append([ev("v", "i", E.PAGE_VIEW, T0, event_id="x")])
        assert str(port) not in str(info.value)  # the message goes to HTTP clients: no server address
        with pytest.raises(StoreUnavailableError):
            await store.visitor("v", "c1")
        with pytest.raises(StoreUnavailableError):
            await store.mark_sent("v", "c1", ["i"])
        with pytest.raises(StoreUnavailableError):
            await store.erase("v")
        with pytest.raises(StoreUnavailableError):
            await store.read_stream("0", 10)
    finally:
        await store.close()


async def test_an_unreachable_cluster_raises_store_unavailable_and_ping_is_false() -> None:
    store = RedisStore.from_url(
        f"redis+cluster://127.0.0.1:{_free_port()}", prefix="jrtest-dead", socket_timeout=0.5, **DEFAULTS
    )
    try:
        assert await store.ping() is False
        with pytest.raises(StoreUnavailableError):
            await store.append([ev("v", "i", E.PAGE_VIEW, T0, event_id="x")])
        with pytest.raises(StoreUnavailableError):
            await store.visitor("v", "c1")
        with pytest.raises(StoreUnavailableError):
            await store.erase("v")
        with pytest.raises(StoreUnavailableError):
            await store.read_stream("0", 10)
    finally:
        await store.close()


async def test_the_store_answers_a_ping(harness: Harness) -> None:
    assert await harness.make().ping() is True


async def test_recent_visitors_are_the_newest_distinct_ones_within_the_scan(harness: Harness) -> None:
    store = harness.make()
    order = ["a", "b", "a", "c", "d", "c", "e"]  # oldest first
    for i, v in enumerate(order):
        # one append each, in different milliseconds: entries of one millisecond in different shards of the
        # Redis store are in shard order (``per_visitor``)
        await store.append([ev(v, "p1", E.PAGE_VIEW, T0 + i)])
        await asyncio.sleep(0.002)
    assert await store.recent_visitors(10, 100) == ["e", "c", "d", "a", "b"]
    assert await store.recent_visitors(2, 100) == ["e", "c"]
    assert await store.recent_visitors(10, 3) == ["e", "c", "d"]  # the newest 3 entries only
    await store.erase("c")
    assert await store.recent_visitors(3, 100) == ["e", "d", "a"]


async def _trail_matches_events(h: Harness, store: RedisStore, visitor: str) -> int:
    """The visitor's trail holds exactly the rows of its events list, in order; returns the row count."""
    events = (await store.visitor(visitor)).events
    raw = await h.redis.get(f"{store.visitor_base(visitor)}:trail")
    assert raw == b"".join(trail.row(e) for e in events)
    return len(events)


async def test_trail_mirrors_the_events_list_through_trim_rebuild_and_merge(harness: Harness) -> None:
    only_redis(harness)
    store = harness.make(recent_events=4)
    assert isinstance(store, RedisStore)
    kinds = [E.PRODUCT_VIEW, E.ADD_TO_CART, E.PURCHASE, E.CONTENT_VIEW, E.REVIEW, E.SEARCH]
    await store.append([ev("v", f"i{n}", kinds[n], T0 + n, channel=Channel.EMAIL) for n in range(3)])
    assert await _trail_matches_events(harness, store, "v") == 3
    await store.append([ev("v", f"i{n}", kinds[n], T0 + n) for n in range(3, 6)])  # trimmed to 4
    assert await _trail_matches_events(harness, store, "v") == 4
    # a trail out of step with its list (lost, or written by another version) is rebuilt from the list
    await harness.redis.set(f"{store.visitor_base('v')}:trail", b"x" * 7)
    await store.append([ev("v", "j", E.COMPARE, T0 + 9, channel=Channel.AD)])
    assert await _trail_matches_events(harness, store, "v") == 4
    # a login merges the anonymous events into the user's list in time order: the trail follows
    await store.append([ev("anon", "k", E.WISHLIST, T0 + 2.5, channel=Channel.SOCIAL)])
    await store.link("anon", "v")
    assert await _trail_matches_events(harness, store, "v") == 4
    rows = trail.rows(await harness.redis.get(f"{store.visitor_base('v')}:trail"))
    assert [trail.channel_of(int(c)) for c in rows["channel"]][-1] is Channel.AD
    assert rows["ts"].tolist() == sorted(rows["ts"].tolist())


# -- a Redis append (service.store.redis_store): one atomic step on a single server; on a cluster the
# visitor's slot, then the stream shard's ------------------------------------------------------------------


def cluster_store(h: Harness, cluster: bool = True) -> RedisStore:
    """A store of the harness on a cluster (or, ``cluster=False``, on a single server); skips otherwise."""
    only_redis(h)
    store = h.make()
    assert isinstance(store, RedisStore)
    if store.cluster != cluster:
        pytest.skip("Redis Cluster only" if cluster else "a single Redis server only")
    return store


async def test_a_single_server_append_whose_stream_write_fails_stores_nothing(harness: Harness) -> None:
    store = cluster_store(harness, cluster=False)
    stream_key = store.shard_keys(store.shard_of("v"))[0]
    other = next(f"w{i}" for i in range(100) if store.shard_of(f"w{i}") != store.shard_of("v"))
    first = [
        ev(other, "x", E.ADD_TO_CART, T0, event_id="e0"),  # a visitor of another shard, first in the batch
        ev("v", "a", E.ADD_TO_CART, T0, event_id="e1"),
        ev("v", "b", E.PRODUCT_VIEW, T0 + 1, event_id="e2"),
    ]
    # the shard's stream key holds a string: the one step fails (WRONGTYPE) before it writes anything
    await harness.redis.set(stream_key, "in the way")
    with pytest.raises(StoreUnavailableError):
        await store.append(first)
    assert await all_keys(harness) == [stream_key.encode()]
    await harness.redis.delete(stream_key)
    # the retry (same event ids) stores every event once, state and stream together; nothing is pending
    assert await store.append(first) == AppendResult(accepted=3, duplicates=0)
    assert (await store.visitor("v")).cart == {"a": T0}
    assert (await store.visitor(other)).cart == {"x": T0}
    assert per_visitor(await stream_events(store)) == per_visitor(first)
    assert not [k for k in await all_keys(harness) if k.endswith(b":pending")]
    assert await store.append(first) == AppendResult(accepted=0, duplicates=3)
    assert per_visitor(await stream_events(store)) == per_visitor(first)
    # an erase finds the entries through the references: events, cart, ids, sids + the two stream entries
    assert await store.erase("v") == 4 + 2
    assert await stream_events(store) == first[:1]


async def test_a_cluster_append_that_fails_before_its_stream_write_is_completed_by_the_retry(
    harness: Harness,
) -> None:
    store = cluster_store(harness)
    stream_key = store.shard_keys(store.shard_of("v"))[0]
    first = [
        ev("v", "a", E.ADD_TO_CART, T0, event_id="e1"),
        ev("v", "b", E.PRODUCT_VIEW, T0 + 1, event_id="e2"),
    ]
    # the shard's stream key holds a string: the visitor's step runs, the stream write fails (WRONGTYPE)
    await harness.redis.set(stream_key, "in the way")
    with pytest.raises(StoreUnavailableError):
        await store.append(first)
    assert (await store.visitor("v")).cart == {"a": T0}  # the first step ran: the state has the events
    pending = await harness.redis.lrange(f"{store.visitor_base('v')}:pending", 0, -1)
    assert len(pending) == 2
    await harness.redis.delete(stream_key)
    assert await stream_events(store) == []
    # the retry (same event ids) finds them stored and writes the pending entries to the stream, once
    assert await store.append(first) == AppendResult(accepted=0, duplicates=2)
    assert await stream_events(store) == first
    assert await harness.redis.exists(f"{store.visitor_base('v')}:pending") == 0
    assert await store.append(first) == AppendResult(accepted=0, duplicates=2)
    assert await stream_events(store) == first
    # an erase finds entries written by a retry: events, cart, ids, sids + the two stream entries
    assert await store.erase("v") == 4 + 2
    assert await stream_events(store) == []


async def test_an_erase_between_the_steps_of_a_cluster_append_leaves_no_entry(harness: Harness) -> None:
    store = cluster_store(harness)
    shard = store.shard_keys(store.shard_of("v"))
    # the first step ran, the stream write has not yet (here: it failed)
    await harness.redis.set(shard[0], "in the way")
    with pytest.raises(StoreUnavailableError):
        await store.append([ev("v", "a", E.PRODUCT_VIEW, T0, event_id="e1")])
    await harness.redis.delete(shard[0])
    pending = await harness.redis.lrange(f"{store.visitor_base('v')}:pending", 0, -1)
    ref, _, json = pending[0].decode().partition("|")
    assert await store.erase("v") == 3  # events, ids, sids; no stream entry yet
    # the stream write of that append arrives after the erase: the erased reference is not added
    added = await harness.redis.evalsha(
        store._xadd.sha, 3, *shard, str(store.visitor_ttl), str(store.shard_maxlen), ref, json
    )
    assert added == 0
    assert await stream_events(store) == []


async def test_a_cluster_stream_write_repeated_after_a_lost_confirmation_stores_each_event_once(
    harness: Harness,
) -> None:
    store = cluster_store(harness)
    first = [ev("v", "a", E.PRODUCT_VIEW, T0), ev("v", "b", E.PRODUCT_VIEW, T0 + 1)]
    await store.append(first)
    # as if the process died after the stream write and before the pending entries were dropped: they are
    # pending again (the references and JSON the first step recorded)
    refs = [r.decode() for r in await harness.redis.lrange(f"{store.visitor_base('v')}:sids", 0, -1)]
    raw_events = await harness.redis.lrange(f"{store.visitor_base('v')}:events", 0, -1)
    pending = [f"{ref}|{raw.decode()}" for ref, raw in zip(refs, raw_events, strict=True)]
    await harness.redis.rpush(f"{store.visitor_base('v')}:pending", *pending)
    later = ev("v", "c", E.PRODUCT_VIEW, T0 + 2)
    assert await store.append([later]) == AppendResult(accepted=1, duplicates=0)
    assert await stream_events(store) == [*first, later]
    assert await harness.redis.exists(f"{store.visitor_base('v')}:pending") == 0


async def test_visitors_over_every_shard_read_back_and_erase_cleanly(harness: Harness) -> None:
    store = harness.make()
    visitors = [f"spread-{i}" for i in range(200)]  # all 16 shards, and on a cluster every master
    if isinstance(store, RedisStore):
        assert {store.shard_of(v) for v in visitors} == set(range(16))
    batch = [ev(v, f"{v}-item", E.ADD_TO_CART, T0 + i, event_id=f"{v}-1") for i, v in enumerate(visitors)]
    assert await store.append(batch) == AppendResult(accepted=200, duplicates=0)
    assert await store.append(batch) == AppendResult(accepted=0, duplicates=200)
    for v in visitors:
        assert (await store.visitor(v)).cart == {f"{v}-item": T0 + visitors.index(v)}
    assert per_visitor(await stream_events(store)) == per_visitor(batch)
    assert set(await store.recent_visitors(500, 1000)) == set(visitors)
    for v in visitors[::2]:
        assert await store.erase(v) == 4 + 1
    assert per_visitor(await stream_events(store)) == per_visitor(
        [e for e in batch if e.visitor_id in visitors[1::2]]
    )


async def test_a_single_server_read_returns_only_milliseconds_the_clock_has_left(harness: Harness) -> None:
    """No entry added after a read can sort before one it returned: entries of the current (here: a
    future) millisecond wait for the next read, older ones are returned, an append before the read too."""
    store = cluster_store(harness, cluster=False)
    sec, usec = await harness.redis.time()
    now_ms = int(sec) * 1000 + int(usec) // 1000
    old, ahead = ev("v", "old", E.PRODUCT_VIEW, T0), ev("v", "ahead", E.PRODUCT_VIEW, T0 + 1)
    encode = msgspec.json.encode
    await harness.redis.xadd(store.shard_keys(5)[0], {"e": encode(old)}, id=f"{now_ms - 60_000}-0")
    await harness.redis.xadd(store.shard_keys(3)[0], {"e": encode(ahead)}, id=f"{now_ms + 60_000}-0")
    await store.append([ev("w", "stored", E.ADD_TO_CART, T0 + 2)])
    got = [e.event.item_id for e in await store.read_stream("0", 100)]
    assert got == ["old", "stored"]
