"""The FeedbackStore contract: the same tests run against the memory and the Redis feedback store.

The Redis params run on the test Redis and on the test Redis Cluster (the ``redis_url`` and
``redis_cluster_url`` fixtures, ``tests/conftest.py``, through ``tests.service.redis_fixtures``). Every
test uses its own key prefix and deletes its keys afterwards. Both stores take a fake clock, so time is
moved, not waited.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from models.attribution import ServedList, Windows
from models.domain import Event, EventType
from service.feedback import ids
from service.feedback.memory import MemoryFeedbackStore
from service.feedback.redis_store import RedisFeedbackStore
from service.feedback.store_base import SUMMARY, DailyCell, FeedbackStore, VariantStageStats
from tests.service.redis_fixtures import REDIS_KINDS, STORE_KINDS, delete_prefix, raw_client, url_of

E = EventType
T0 = 1_735_689_600.0 + 3600  # 2025-01-01T01:00:00Z
DAY = "2025-01-01"
WINDOWS = Windows(click=7 * 86_400.0, impression=86_400.0)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


Make = Callable[..., FeedbackStore]


@pytest.fixture(params=STORE_KINDS)
async def make(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Make, FakeClock]]:
    clock = FakeClock()
    defaults: dict[str, Any] = {"windows": WINDOWS, "cap": 50, "visitor_ttl": 90 * 86_400, "clock": clock}
    if request.param == "memory":
        yield (lambda **kw: MemoryFeedbackStore(**{**defaults, **kw})), clock
        return
    url = url_of(request, request.param)
    raw: Any = raw_client(url)
    prefix = f"jrtest-{uuid.uuid4().hex[:12]}"
    try:
        yield (lambda **kw: RedisFeedbackStore(raw, prefix=prefix, **{**defaults, **kw})), clock
    finally:
        await delete_prefix(raw, prefix)
        await raw.aclose()


def served(
    rid: str, items: list[str], stage: str, at: float, experiment: str = SUMMARY, variant: str = SUMMARY
) -> ServedList:
    return ServedList(
        recommendation_id=rid,
        served_at=at,
        stage=stage,
        placement="home",
        items=items,
        experiment=experiment,
        variant=variant,
    )


def ev(visitor: str, kind: EventType, item: str, t: float, rid: str | None = None, **kw: Any) -> Event:
    return Event(visitor_id=visitor, item_id=item, event=kind, timestamp=t, recommendation_id=rid, **kw)


async def serve(store: FeedbackStore, visitor: str, lst: ServedList) -> None:
    await store.log_served(visitor, lst)
    await store.add(await store.count_served([(visitor, lst)]))


def stats_by_cell(stats: list[VariantStageStats]) -> dict[tuple[str, str], VariantStageStats]:
    return {(s.variant, s.stage): s for s in stats}


def daily_by_cell(cells: list[DailyCell]) -> dict[tuple[str, str, str], dict[str, float]]:
    return {(c.day, c.variant, c.stage): c.counts for c in cells}


# -- ids ---------------------------------------------------------------------------------------------------


def test_recommendation_ids_are_unique_and_time_ordered() -> None:
    gen = ids.IdGenerator()  # the process's own generator may have made later ids already
    same_ms = [gen.new(T0) for _ in range(2000)]
    assert all(len(i) == ids.LENGTH and set(i) <= set(ids.ALPHABET) for i in same_ms)
    assert same_ms == sorted(same_ms)
    assert len(set(same_ms)) == len(same_ms)
    later = gen.new(T0 + 1)
    assert later > same_ms[-1]
    assert ids.time_of(later) == pytest.approx(T0 + 1, abs=0.002)
    with pytest.raises(ValueError, match="not a recommendation id"):
        ids.time_of("nope")


# -- the served-list log ------------------------------------------------------------------------------------


async def test_served_lists_are_kept_capped_and_expire(make: tuple[Make, FakeClock]) -> None:
    factory, clock = make
    store = factory(cap=3)
    for i in range(5):
        await store.log_served("v", served(f"L{i}", ["a", "b"], "awareness", clock.now))
        clock.now += 1
    kept = await store.served("v")
    assert [s.recommendation_id for s in kept] == ["L2", "L3", "L4"]  # the 3 newest
    assert kept[0].items == ["a", "b"]
    assert kept[0].stage == "awareness"
    assert await store.served("other") == []
    clock.now += WINDOWS.retention  # L2, L3 and L4 are now older than the retention
    assert await store.served("v") == []


async def test_an_expired_list_is_unattributed_never_an_error(make: tuple[Make, FakeClock]) -> None:
    factory, clock = make
    store = factory()
    await serve(store, "v", served("L1", ["a"], "awareness", clock.now))
    clock.now += WINDOWS.retention + 1
    r = await store.record_events([ev("v", E.PRODUCT_VIEW, "a", clock.now, "L1")])
    assert r.outcomes == {("product_view", "unattributed"): 1}
    r = await store.record_events([ev("v", E.IMPRESSION, "a", clock.now, "never-served")])
    assert r.impressions == 1
    assert r.outcomes == {("impression", "unattributed"): 1}


async def test_duplicate_event_ids_count_once(make: tuple[Make, FakeClock]) -> None:
    factory, clock = make
    store = factory()
    lst = served("L1", ["a"], "decision", clock.now, "e1", "A")
    await serve(store, "v", lst)
    events = [
        ev("v", E.IMPRESSION, "a", T0 + 1, "L1", event_id="i1"),
        ev("v", E.IMPRESSION, "a", T0 + 1, "L1", event_id="i1"),  # repeated within the batch
        ev("v", E.PRODUCT_VIEW, "a", T0 + 2, "L1", event_id="c1"),
    ]
    first = await store.record_events(events)
    assert (first.impressions, first.duplicates) == (1, 1)
    again = await store.record_events(events)  # a retry
    assert (again.impressions, again.duplicates) == (0, 2)
    assert again.outcomes == {}
    stats, days = await store.experiment_stats("e1")
    cell = stats_by_cell(stats)[("A", "decision")]
    assert cell.sums["impressions"] == 1
    assert cell.sums["clicks"] == 1
    assert daily_by_cell(days)[(DAY, "A", "decision")]["impressions"] == 1


async def test_erase_forgets_served_lists_and_state(make: tuple[Make, FakeClock]) -> None:
    factory, clock = make
    store = factory()
    await serve(store, "v", served("L1", ["a"], "awareness", clock.now, "e1", "A"))
    await store.record_events([ev("v", E.PRODUCT_VIEW, "a", T0 + 1, "L1", event_id="c1")])
    assert await store.erase("v") >= 1
    assert await store.served("v") == []
    assert await store.erase("v") == 0
    # the erased visitor's next list makes them a new visitor again; their old event id is forgotten
    await serve(store, "v", served("L2", ["a"], "awareness", clock.now, "e1", "A"))
    r = await store.record_events([ev("v", E.PRODUCT_VIEW, "a", T0 + 2, "L2", event_id="c1")])
    assert r.outcomes == {("product_view", "direct"): 1}


async def test_a_retired_experiment_loses_its_counts_and_counts_nothing_until_its_lists_expire(
    make: tuple[Make, FakeClock],
) -> None:
    factory, clock = make
    store = factory()
    await serve(store, "v", served("L1", ["a"], "awareness", clock.now, "e1", "A"))
    await serve(store, "w", served("L2", ["a"], "awareness", clock.now, "e2", "A"))
    summary_before = await store.experiment_stats(SUMMARY)
    assert await store.retired_until("e1") is None
    until = await store.retire_experiment("e1")
    assert until == clock.now + WINDOWS.retention
    assert await store.retired_until("e1") == until
    assert await store.experiment_stats("e1") == ([], [])
    # a click on the deleted experiment's list is still the list's (direct), but counts nowhere
    clock.now += 60
    r = await store.record_events([ev("v", E.PRODUCT_VIEW, "a", clock.now, "L1", event_id="c1")])
    assert r.outcomes == {("product_view", "direct"): 1}
    assert await store.experiment_stats("e1") == ([], [])
    # nor does a list served under it (one counted after the delete)
    await serve(store, "v", served("L3", ["a"], "awareness", clock.now, "e1", "A"))
    assert await store.experiment_stats("e1") == ([], [])
    # the other experiment and the summary count as before
    await store.record_events([ev("w", E.PRODUCT_VIEW, "a", clock.now, "L2", event_id="c2")])
    assert stats_by_cell((await store.experiment_stats("e2"))[0])[("A", "all")].sums["clicks"] == 1
    summary_after = await store.experiment_stats(SUMMARY)
    assert summary_after != summary_before  # the summary counts every list and click
    # once its lists can no longer be credited, the id counts afresh
    clock.now = until
    assert await store.retired_until("e1") is None
    await serve(store, "x", served("L4", ["a"], "awareness", clock.now, "e1", "A"))
    assert stats_by_cell((await store.experiment_stats("e1"))[0])[("A", "all")].sums["lists"] == 1


# -- the known answer ---------------------------------------------------------------------------------------


async def run_scenario(store: FeedbackStore, clock: FakeClock) -> dict[tuple[str, str], int]:
    """Three visitors, four lists, a known set of events (see test_counts_equal_what_was_sent)."""
    await serve(store, "v1", served("L1", ["x", "y"], "awareness", T0, "e1", "A"))
    await serve(store, "v2", served("L2", ["x", "z"], "consideration", T0, "e1", "B"))
    clock.now = T0 + 10
    await serve(store, "v2", served("L3", ["z"], "decision", T0 + 10, "e1", "B"))
    await serve(store, "v3", served("L4", ["x"], "awareness", T0 + 10))
    clock.now = T0 + 100
    batch = [
        ev("v1", E.IMPRESSION, "x", T0 + 20, "L1", event_id="1"),
        ev("v1", E.IMPRESSION, "y", T0 + 20, "L1", event_id="2"),
        ev("v1", E.PRODUCT_VIEW, "x", T0 + 30, "L1", event_id="3"),
        ev("v2", E.IMPRESSION, "x", T0 + 20, "L2", event_id="4"),
        ev("v2", E.IMPRESSION, "z", T0 + 20, "L2", event_id="5"),
        ev("v2", E.IMPRESSION, "z", T0 + 21, "L3", event_id="6"),
        ev("v3", E.IMPRESSION, "x", T0 + 20, "L4", event_id="7"),
    ]
    outcomes: dict[tuple[str, str], int] = {}
    for part in (
        batch,
        [
            ev("v1", E.ADD_TO_CART, "x", T0 + 40, "L1", event_id="8"),
            ev("v1", E.PURCHASE, "x", T0 + 50, value=30.0, event_id="9"),  # last touch: the click on L1
            ev("v1", E.PRODUCT_VIEW, "x", T0 + 60, "nope", event_id="10"),  # unknown id
            ev("v2", E.PRODUCT_VIEW, "z", T0 + 30, "L3", event_id="11"),
            ev("v2", E.PURCHASE, "z", T0 + 40, "L3", value=20.0, event_id="12"),
            ev("v2", E.PURCHASE, "q", T0 + 45, value=5.0, event_id="13"),  # in no list
            ev("v3", E.PURCHASE, "x", T0 + 50, value=7.0, event_id="14"),  # last touch: the impression
        ],
        [ev("v1", E.PRODUCT_VIEW, "x", T0 + 30, "L1", event_id="3")],  # a retried click
    ):
        r = await store.record_events(part)
        for key, n in r.outcomes.items():
            outcomes[key] = outcomes.get(key, 0) + n
    return outcomes


async def test_counts_equal_what_was_sent(make: tuple[Make, FakeClock]) -> None:
    factory, clock = make
    store = factory()
    outcomes = await run_scenario(store, clock)
    assert outcomes == {
        ("impression", "direct"): 6,
        ("product_view", "direct"): 2,
        ("product_view", "unattributed"): 1,
        ("add_to_cart", "direct"): 1,
        ("purchase", "direct"): 1,
        ("purchase", "last_touch"): 2,
        ("purchase", "unattributed"): 1,
    }
    stats, days = await store.experiment_stats("e1")
    cells = stats_by_cell(stats)
    assert set(cells) == {
        ("A", "awareness"),
        ("A", "all"),
        ("B", "consideration"),
        ("B", "decision"),
        ("B", "all"),
    }
    zero = dict.fromkeys(["lists", "impressions", "clicks", "carts", "purchases", "revenue"], 0.0)
    a = {**zero, "lists": 1, "impressions": 2, "clicks": 1, "carts": 1, "purchases": 1, "revenue": 30}
    a_ind = {"clicked": 1, "carted": 1, "converted": 1, "revenue_all": 30}
    for stage in ("awareness", "all"):
        c = cells[("A", stage)]
        assert c.visitors == 1
        assert c.sums == {**a, **a_ind}
        assert c.squares == {**{k: v * v for k, v in a.items()}, **{k: v * v for k, v in a_ind.items()}}
        assert c.cross == {"clicks*impressions": 2}
    b_ind = {"clicked": 1, "carted": 0, "converted": 1, "revenue_all": 25}
    consideration = cells[("B", "consideration")]
    assert consideration.visitors == 1
    assert consideration.sums == {**zero, "lists": 1, "impressions": 2, **b_ind}
    decision = cells[("B", "decision")]
    assert decision.sums == {
        **zero,
        "lists": 1,
        "impressions": 1,
        "clicks": 1,
        "purchases": 1,
        "revenue": 20,
        **b_ind,
    }
    both = cells[("B", "all")]
    assert both.visitors == 1
    assert both.sums == {
        **zero,
        "lists": 2,
        "impressions": 3,
        "clicks": 1,
        "purchases": 1,
        "revenue": 20,
        **b_ind,
    }
    assert both.squares["lists"] == 4
    assert both.squares["impressions"] == 9
    assert both.squares["revenue_all"] == 625
    assert both.cross == {"clicks*impressions": 3}
    assert daily_by_cell(days) == {
        (DAY, "A", "awareness"): {**a},
        (DAY, "B", "consideration"): {**zero, "lists": 1, "impressions": 2},
        (DAY, "B", "decision"): {
            **zero,
            "lists": 1,
            "impressions": 1,
            "clicks": 1,
            "purchases": 1,
            "revenue": 20,
        },
    }
    summary_stats, summary = await store.experiment_stats(SUMMARY)
    assert summary_stats == []  # the summary keeps daily cells only
    assert daily_by_cell(summary) == {
        (DAY, SUMMARY, "awareness"): {
            **zero,
            "lists": 2,
            "impressions": 3,
            "clicks": 1,
            "carts": 1,
            "purchases": 2,
            "revenue": 37,
        },
        (DAY, SUMMARY, "consideration"): {**zero, "lists": 1, "impressions": 2},
        (DAY, SUMMARY, "decision"): {
            **zero,
            "lists": 1,
            "impressions": 1,
            "clicks": 1,
            "purchases": 1,
            "revenue": 20,
        },
    }


async def test_an_event_before_its_list_is_counted_creates_the_exposure_once(
    make: tuple[Make, FakeClock],
) -> None:
    """The list is kept at once but counted later (off the request path): an impression in between
    counts the visitor, and the later count does not count them again."""
    factory, _clock = make
    store = factory()
    lst = served("L1", ["a"], "awareness", T0, "e1", "A")
    await store.log_served("v", lst)
    await store.record_events([ev("v", E.IMPRESSION, "a", T0 + 1, "L1", event_id="i")])
    await store.add(await store.count_served([("v", lst)]))
    stats, _days = await store.experiment_stats("e1")
    cell = stats_by_cell(stats)[("A", "awareness")]
    assert cell.visitors == 1
    assert cell.sums["lists"] == 1
    assert cell.sums["impressions"] == 1


@pytest.mark.parametrize("kind", REDIS_KINDS)
async def test_redis_and_memory_agree_on_random_traffic(request: pytest.FixtureRequest, kind: str) -> None:
    clock = FakeClock()
    common: dict[str, Any] = {
        "windows": Windows(click=50.0, impression=20.0),
        "cap": 4,
        "visitor_ttl": 3600,
        "clock": clock,
    }
    raw: Any = raw_client(url_of(request, kind))
    prefix = f"jrtest-{uuid.uuid4().hex[:12]}"
    stores: list[FeedbackStore] = [
        MemoryFeedbackStore(**common),
        RedisFeedbackStore(raw, prefix=prefix, **common),
    ]
    rng = random.Random(7)
    visitors, items = ["a", "b", "c"], ["p", "q", "r", "s"]
    rids: list[tuple[str, list[str]]] = []
    try:
        for step in range(300):
            clock.now = T0 + step
            visitor = rng.choice(visitors)
            if rng.random() < 0.25:
                rid = f"R{step:04d}"
                lst_items = rng.sample(items, 2)
                exp, var = rng.choice([("e", "A"), ("e", "B"), (SUMMARY, SUMMARY)])
                stage = rng.choice(["awareness", "decision"])
                rids.append((rid, lst_items))
                for store in stores:
                    await serve(
                        store,
                        visitor,
                        served(rid, lst_items, stage, clock.now, exp, var),
                    )
                continue
            kind = rng.choice([E.IMPRESSION, E.PRODUCT_VIEW, E.ADD_TO_CART, E.PURCHASE])
            rid_items = rng.choice(rids) if rids and rng.random() < 0.7 else ("none", items)
            rid = None if kind is E.PURCHASE and rng.random() < 0.5 else rid_items[0]
            e = ev(
                visitor,
                kind,
                rng.choice(rid_items[1]),
                clock.now - rng.random() * 5,
                rid,
                value=float(rng.randint(1, 9)),
                event_id=str(rng.randint(0, 200)),
            )
            results = [await store.record_events([e]) for store in stores]
            assert results[0] == results[1]
        for experiment in ("e", SUMMARY):
            memory, redis_stats = [await store.experiment_stats(experiment) for store in stores]
            assert redis_stats == memory
        for visitor in visitors:
            assert await stores[1].served(visitor) == await stores[0].served(visitor)
    finally:
        await delete_prefix(raw, prefix)
        await raw.aclose()


async def test_a_sent_list_is_credited_by_events_recorded_before_its_confirmation(
    make: tuple[Make, FakeClock],
) -> None:
    """``send_served`` returns once the write is on its way: a click recorded right after (on another
    connection, before the write's reply was read) finds the list; the confirmation comes after."""
    factory, clock = make
    writer = factory()
    # another store on the same Redis (another connection), or the same one in memory
    reader = writer if isinstance(writer, MemoryFeedbackStore) else factory()
    confirmed = await writer.send_served("v", served("L1", ["a", "b"], "consideration", clock.now))
    r = await reader.record_events([ev("v", E.PRODUCT_VIEW, "a", clock.now + 1, "L1")])
    assert r.outcomes == {("product_view", "direct"): 1}
    await confirmed
    assert [s.recommendation_id for s in await writer.served("v")] == ["L1"]
