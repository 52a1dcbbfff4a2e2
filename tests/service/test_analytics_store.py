"""The AnalyticsStore contract: the same tests run against MemoryAnalyticsStore and RedisAnalyticsStore,
and the tracker over each of them counts the same transitions for a known event sequence.

The Redis params run on the test Redis and on the test Redis Cluster (the ``redis_url`` and
``redis_cluster_url`` fixtures, ``tests/conftest.py``, through ``tests.service.redis_fixtures``); each
uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import math
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest

from models.domain import HOUR, Channel, Event, EventType, Stage
from models.journey import DEFAULT_RULES
from service.analytics.memory_store import MemoryAnalyticsStore
from service.analytics.periods import member_of, period_id, start_of
from service.analytics.redis_store import RedisAnalyticsStore
from service.analytics.store_base import (
    AnalyticsStore,
    JourneyRecord,
    PeriodDelta,
    RecordWrite,
    Retention,
)
from service.analytics.tracker import JourneyTracker
from service.store.base import VisitorStore
from service.store.memory_store import MemoryStore
from service.store.redis_store import RedisStore
from tests.service.redis_fixtures import STORE_KINDS, delete_prefix, raw_client, url_of

E = EventType
RETENTION = Retention(hourly_days=14, daily_days=400, sets_days=35)
TTL = 90 * 86_400


@dataclass
class Harness:
    kind: str
    visitors: VisitorStore
    store: AnalyticsStore
    raw: Any = None
    prefix: str = ""


@pytest.fixture(params=STORE_KINDS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        visitors = MemoryStore(visitor_ttl=TTL, recent_events=200, stream_maxlen=10_000)
        yield Harness("memory", visitors, MemoryAnalyticsStore(visitors, RETENTION, visitor_ttl=TTL))
        return
    url = url_of(request, request.param)
    prefix = f"jrtest-{uuid.uuid4().hex[:12]}"
    rs = RedisStore.from_url(
        url, prefix=prefix, visitor_ttl=TTL, recent_events=200, stream_maxlen=10_000, socket_timeout=5
    )
    raw: Any = raw_client(url)
    try:
        yield Harness("redis", rs, RedisAnalyticsStore(rs, RETENTION), raw, prefix)
    finally:
        await delete_prefix(raw, prefix)
        await raw.aclose()
        await rs.close()


def ev(visitor: str, kind: EventType, t: float, **extra: object) -> Event:
    return Event(visitor_id=visitor, item_id="i1", event=kind, timestamp=t, **extra)  # type: ignore[arg-type]


async def test_an_unknown_visitor_has_no_record_and_no_events(harness: Harness) -> None:
    snap = await harness.store.snapshot(["nobody"])
    assert snap.records == [None]
    assert snap.counts.tolist() == [0]
    assert len(snap.ts) == len(snap.codes) == 0


async def test_snapshot_groups_the_stored_events_by_visitor_in_the_order_asked(harness: Harness) -> None:
    await harness.visitors.append(
        [ev("a", E.PRODUCT_VIEW, 10.0), ev("b", E.ADD_TO_CART, 20.0), ev("a", E.PURCHASE, 30.0)]
    )
    snap = await harness.store.snapshot(["b", "nobody", "a"])
    assert snap.counts.tolist() == [1, 0, 2]
    assert snap.ts.tolist() == [20.0, 10.0, 30.0]
    assert snap.codes.tolist() == [E.ADD_TO_CART.code, E.PRODUCT_VIEW.code, E.PURCHASE.code]


async def test_commit_is_a_compare_and_set_on_the_version(harness: Harness) -> None:
    s = harness.store
    first = RecordWrite("v{1}", 0, Stage.AWARENESS, 100.0)
    assert await s.commit([first]) == [True]
    # a second writer that read "no record" loses; one that read version 1 wins
    assert await s.commit([first]) == [False]
    assert await s.commit([RecordWrite("v{1}", 1, Stage.CONSIDERATION, 150.5)]) == [True]
    snap = await s.snapshot(["v{1}"])
    assert snap.records == [JourneyRecord(Stage.CONSIDERATION, 150.5, 2)]


async def test_mark_seen_notes_the_sighting_without_moving_the_version(harness: Harness) -> None:
    s = harness.store
    await s.commit([RecordWrite("v", 0, Stage.AWARENESS, 10.0)])
    await s.mark_seen([("v", "h1|0|email|0"), ("nobody", "h1|0|none|0")])
    snap = await s.snapshot(["v", "nobody"])
    assert snap.records == [JourneyRecord(Stage.AWARENESS, 10.0, 1, "h1|0|email|0"), None]
    assert await s.commit([RecordWrite("v", 1, Stage.CONSIDERATION, 20.0)]) == [True]
    assert (await s.snapshot(["v"])).records == [JourneyRecord(Stage.CONSIDERATION, 20.0, 2, "h1|0|email|0")]


async def test_concurrent_commits_of_one_version_let_exactly_one_win(harness: Harness) -> None:
    writes = [RecordWrite("v", 0, Stage.DECISION, float(i)) for i in range(8)]
    results = await asyncio.gather(*(harness.store.commit([w]) for w in writes))
    assert sum(r[0] for r in results) == 1


async def test_rollups_add_up_and_unite_sets_per_period(harness: Harness) -> None:
    s = harness.store
    day = start_of(1_800_000_000.0, "day")
    await s.add(
        {("day", day): PeriodDelta({"t|awareness|consideration|email": 2}, {"seen:awareness": {"m1"}})}
    )
    await s.add(
        {
            ("day", day): PeriodDelta(
                {"t|awareness|consideration|email": 1, "e|decision|none": 4},
                {"seen:awareness": {"m2", "m1"}, "clk": {"m2"}},
            ),
            ("hour", day): PeriodDelta({"e|decision|none": 1}, {}),
        }
    )
    got = await s.read("day", [day - 86_400, day])
    assert got[0].counts == {}
    assert got[0].sets == {}
    assert got[1].start == day
    assert got[1].counts == {"t|awareness|consideration|email": 3, "e|decision|none": 4}
    assert got[1].sets == {"seen:awareness": {"m1", "m2"}, "clk": {"m2"}}
    hourly = await s.read("hour", [day])
    assert hourly[0].counts == {"e|decision|none": 1}


async def test_erase_takes_the_visitor_out_of_every_live_set_and_drops_the_record(
    harness: Harness,
) -> None:
    s = harness.store
    now = time.time()
    start, hour = start_of(now, "day"), start_of(now - 3 * 86_400, "hour")
    me, other = member_of("gone"), member_of("stays")
    await s.commit([RecordWrite("gone", 0, Stage.DECISION, now)])
    await s.add({("day", start): PeriodDelta({"e|decision|none": 2}, {"seen:decision": {me, other}})})
    await s.add({("hour", hour): PeriodDelta({}, {"clk": {me}, "ch:email": {me, other}})})
    assert await s.erase("gone") == 4  # the record and three set memberships
    snap = await s.snapshot(["gone"])
    assert snap.records == [None]
    got = (await s.read("day", [start]))[0]
    assert got.sets == {"seen:decision": {other}}
    assert got.counts == {"e|decision|none": 2}  # counters hold no visitor data
    assert (await s.read("hour", [hour]))[0].sets == {"ch:email": {other}}
    assert await s.erase("gone") == 0


async def test_due_visitors_are_claimed_once_until_their_hold_ends(harness: Harness) -> None:
    s = harness.store
    t0 = 1_800_000_000.0
    await s.add({}, {"a": t0 + 10, "b": t0 + 5, "c": math.inf, "d": t0 + 100})
    assert set(await s.claim_due(t0 + 50, 10, 300.0)) == {"a", "b"}
    assert await s.claim_due(t0 + 50, 10, 300.0) == []  # held: another sweep does not take them
    assert set(await s.claim_due(t0 + 200, 10, 300.0)) == {"d"}
    assert set(await s.claim_due(t0 + 351, 10, 300.0)) == {"a", "b"}  # never rescheduled: due again
    await s.add({}, {"a": math.inf, "b": t0 + 2_000})  # the sweep's walk sets the next times
    assert set(await s.claim_due(t0 + 1_000, 10, 300.0)) == {"d"}
    assert set(await s.claim_due(t0 + 2_001, 10, 300.0)) == {"b", "d"}  # d's hold ended too
    many = {f"v{i}": t0 + i for i in range(40)}
    await s.add({}, many)
    claimed = await s.claim_due(t0 + 100, 8, 60.0)
    assert 0 < len(claimed) <= 16  # about the limit: at least one per due shard of Redis
    assert set(claimed) <= set(many)
    assert await s.erase("v0") == 1  # its due time
    rest = set(many) - set(claimed) - {"v0"}
    assert set(await s.claim_due(t0 + 100, 1_000, 60.0)) == rest


async def test_redis_keys_keep_to_their_slots_and_expire(harness: Harness) -> None:
    if harness.raw is None:
        pytest.skip("Redis only: key layout and ttls")
    s = harness.store
    now = 1_800_000_000.0
    start = start_of(now, "hour")
    await s.commit([RecordWrite("v", 0, Stage.AWARENESS, now)])
    await s.add({("hour", start): PeriodDelta({"e|awareness|none": 1}, {"seen:awareness": {"m"}})})
    keys = [k.decode() async for k in harness.raw.scan_iter(match=f"{harness.prefix}:*")]
    pid = period_id("hour", start)
    assert f"{harness.prefix}:{{jr:{pid}}}:n" in keys
    assert f"{harness.prefix}:{{jr:{pid}}}:s:seen:awareness" in keys
    assert any(k.endswith(":journey") and "{v:" in k for k in keys)
    for k in keys:
        assert await harness.raw.ttl(k) > 0 or await harness.raw.ttl(k) == -2, k


# -- the tracker over each store ---------------------------------------------------------------------------


async def _ingest(h: Harness, tracker: JourneyTracker, events: list[Event], now: float) -> int:
    await h.visitors.append(events)
    return await tracker.observe(events, DEFAULT_RULES, now)


async def test_a_known_sequence_gives_exact_transition_counts(harness: Harness) -> None:
    h = harness
    tracker = JourneyTracker(h.store)
    t0 = 1_800_000_000.0
    # visitor a: first seen (awareness), 3 views -> consideration (email), add -> decision (ad), purchase
    # -> retention (no channel on the event: "none"); visitor b: first seen, 3 views -> consideration
    steps = [
        [ev("a", E.PAGE_VIEW, t0, channel=Channel.EMAIL), ev("b", E.PAGE_VIEW, t0)],
        [ev("a", E.PRODUCT_VIEW, t0 + 60 + i, channel=Channel.EMAIL) for i in range(3)]
        + [ev("b", E.PRODUCT_VIEW, t0 + 60 + i) for i in range(3)],
        [ev("a", E.ADD_TO_CART, t0 + 120, channel=Channel.AD)],
        [ev("a", E.PURCHASE, t0 + 180)],
    ]
    counted = [await _ingest(h, tracker, batch, t0 + 200 + 100 * i) for i, batch in enumerate(steps)]
    assert counted == [0, 2, 1, 1]
    rec = (await h.store.snapshot(["a"])).records[0]
    assert rec is not None
    assert (rec.stage, rec.since, rec.version) == (Stage.RETENTION, t0 + 180, 4)  # dated at the purchase
    day = start_of(t0, "day")
    got = (await h.store.read("day", [day]))[0]
    transitions = {k: n for k, n in got.counts.items() if k.startswith("t|")}
    assert transitions == {
        "t|awareness|consideration|email": 1,
        "t|awareness|consideration|none": 1,
        "t|consideration|decision|ad": 1,
        "t|decision|retention|none": 1,
    }
    entries = {k: n for k, n in got.counts.items() if k.startswith("e|")}
    assert entries == {
        "e|awareness|email": 1,
        "e|awareness|none": 1,
        "e|consideration|email": 1,
        "e|consideration|none": 1,
        "e|decision|ad": 1,
        "e|retention|none": 1,
    }
    assert got.sets["seen:retention"] == {member_of("a")}
    assert got.sets["adv:awareness"] == {member_of("a"), member_of("b")}
    assert got.sets["ch:email"] == {member_of("a")}


async def test_an_abandoned_cart_is_counted_when_the_visitor_comes_back_dated_at_expiry(
    harness: Harness,
) -> None:
    h = harness
    tracker = JourneyTracker(h.store)
    t0 = 1_800_000_000.0
    await _ingest(h, tracker, [ev("c", E.PRODUCT_VIEW, t0), ev("c", E.ADD_TO_CART, t0 + 1)], t0 + 2)
    # back 4 days later: the cart expired at t0 + 1 + 72 h
    back = t0 + 96 * HOUR
    assert await _ingest(h, tracker, [ev("c", E.PAGE_VIEW, back)], back + 1) == 1
    expiry = t0 + 1 + 72 * HOUR
    got = (await h.store.read("hour", [start_of(expiry, "hour")]))[0]
    assert got.counts["t|decision|awareness|none"] == 1
    assert got.counts["d|decision|none|9"] == 1  # 72 h - 1 s: the [2 days, 4 days) bucket
    snap = await h.store.snapshot(["c"])
    rec = snap.records[0]
    assert rec is not None
    assert rec.stage is Stage.AWARENESS
    assert rec.since == expiry


async def test_a_sweep_counts_an_abandoned_cart_of_a_visitor_never_seen_again(harness: Harness) -> None:
    h = harness
    tracker = JourneyTracker(h.store)
    t0 = 1_800_000_000.0
    await _ingest(h, tracker, [ev("c", E.PRODUCT_VIEW, t0), ev("c", E.ADD_TO_CART, t0 + 1)], t0 + 2)
    expiry = t0 + 1 + 72 * HOUR
    assert await tracker.sweep(DEFAULT_RULES, expiry - 1) == 0  # not due yet
    assert await tracker.sweep(DEFAULT_RULES, expiry + 3 * HOUR) == 1
    got = (await h.store.read("hour", [start_of(expiry, "hour")]))[0]
    assert got.counts["t|decision|awareness|none"] == 1
    assert got.counts["x|decision|awareness"] == 1  # by time alone: an abandoned cart
    rec = (await h.store.snapshot(["c"])).records[0]
    assert rec is not None
    assert (rec.stage, rec.since) == (Stage.AWARENESS, expiry)
    # nothing more is due (awareness holds by time); a visit later counts nothing twice
    assert await tracker.sweep(DEFAULT_RULES, expiry + 1_000 * HOUR) == 0
    back = t0 + 96 * HOUR
    assert await _ingest(h, tracker, [ev("c", E.PAGE_VIEW, back)], back + 1) == 0
    got = (await h.store.read("hour", [start_of(expiry, "hour")]))[0]
    assert got.counts["t|decision|awareness|none"] == 1


async def test_a_sweep_counts_a_lapsed_customer_and_only_changes(harness: Harness) -> None:
    h = harness
    tracker = JourneyTracker(h.store)
    t0 = 1_800_000_000.0
    await _ingest(h, tracker, [ev("r", E.PURCHASE, t0)], t0 + 1)
    lapse = t0 + DEFAULT_RULES.retention_days * 86_400
    assert await tracker.sweep(DEFAULT_RULES, lapse + 60) == 1
    day = (await h.store.read("day", [start_of(lapse, "day")]))[0]
    assert day.counts == {
        "t|retention|awareness|none": 1,
        "x|retention|awareness": 1,
        "e|awareness|none": 1,
        "d|retention|none|15": 1,  # 90 days in retention: the [90 days, 180 days) bucket
    }
    assert "seen:retention" in day.sets  # left it then; no sighting of the sweep's own
    assert all(not name.startswith("ch:") for name in day.sets)


async def test_a_concurrent_ingest_counts_each_transition_once(harness: Harness) -> None:
    h = harness
    tracker = JourneyTracker(h.store)
    t0 = 1_800_000_000.0
    await _ingest(h, tracker, [ev("x", E.PAGE_VIEW, t0)], t0 + 1)
    views = [ev("x", E.PRODUCT_VIEW, t0 + 10 + i) for i in range(3)]
    await h.visitors.append(views)
    # the same visitor evaluated by several requests at once: the stage changed once
    counted = await asyncio.gather(*(tracker.observe(views, DEFAULT_RULES, t0 + 20) for _ in range(5)))
    assert sum(counted) == 1


async def test_a_repeated_sighting_is_sent_once_and_a_new_one_again(harness: Harness) -> None:
    h = harness
    tracker = JourneyTracker(h.store)
    t0 = 1_800_000_000.0
    sent: list[int] = []
    add = h.store.add

    async def counting_add(deltas: Any, due: Any = None) -> None:
        sent.append(sum(len(m) for d in deltas.values() for m in d.members.values()))
        await add(deltas, due)

    h.store.add = counting_add  # type: ignore[method-assign]
    await _ingest(h, tracker, [ev("r", E.PAGE_VIEW, t0)], t0 + 1)
    await _ingest(h, tracker, [ev("r", E.PAGE_VIEW, t0 + 2)], t0 + 3)  # same hour, stage, channel
    await _ingest(h, tracker, [ev("r", E.PAGE_VIEW, t0 + 4, channel=Channel.AD)], t0 + 5)
    assert sent[1] == 0
    assert sent[2] > 0
    got = (await h.store.read("hour", [start_of(t0, "hour")]))[0]
    assert got.sets["ch:none"] == got.sets["ch:ad"] == got.sets["seen:awareness"] == {member_of("r")}
