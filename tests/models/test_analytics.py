"""Journey analytics, pure parts: the stage walk against a naive per-visitor reference, known answers for
time-based changes, the bucketed median, rates and the funnel, with hypothesis invariants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.analytics import (
    DWELL_EDGES,
    N_BUCKETS,
    FunnelStep,
    Median,
    drop_offs,
    dwell_buckets,
    funnel,
    is_advance,
    median_of_histogram,
    rate,
    row_rates,
    walk_stages,
)
from models.domain import DAY, HOUR, STAGES, Event, EventType, Stage
from models.journey import DEFAULT_RULES, JourneyRules, infer_stage

E = EventType
T0 = 1_800_000_000.0


def ev(kind: EventType, t: float, visitor: str = "v") -> Event:
    return Event(visitor_id=visitor, item_id="i", event=kind, timestamp=t)


def run(
    histories: list[list[Event]],
    prev: list[tuple[int, float, float]],
    now: float,
    rules: JourneyRules = DEFAULT_RULES,
) -> tuple[list[tuple[int, int, int, float, bool]], list[int]]:
    """walk_stages over per-visitor histories; (changes as (visitor, source, target, at, by_time), final)."""
    owner = np.array([i for i, h in enumerate(histories) for _ in h], dtype=np.int64)
    ts = np.array([e.timestamp for h in histories for e in h], dtype=np.float64)
    codes = np.array([e.event.code for h in histories for e in h], dtype=np.int8)
    w = walk_stages(
        owner,
        ts,
        codes,
        np.array([p[0] for p in prev]),
        np.array([p[1] for p in prev]),
        np.array([p[2] for p in prev]),
        now,
        rules,
    )
    changes = [
        (int(v), int(s), int(t), float(a), bool(b))
        for v, s, t, a, b in zip(w.visitor, w.source, w.target, w.at, w.by_time, strict=True)
    ]
    return changes, [int(x) for x in w.stage]


def naive(
    histories: list[list[Event]],
    prev: list[tuple[int, float, float]],
    now: float,
    rules: JourneyRules = DEFAULT_RULES,
) -> tuple[list[tuple[int, int, int, float, bool]], list[int]]:
    """The reference: per visitor, every threshold moment found by a loop, the engine asked one at a time."""
    changes: list[tuple[int, int, int, float, bool]] = []
    finals: list[int] = []
    for v, (events, (stage, _since, at)) in enumerate(zip(histories, prev, strict=True)):
        cur = stage
        if stage >= 0:
            known = [e for e in events if e.timestamp <= at]
            moments: set[float] = set()
            for e in known:
                delays = []
                if e.event in (E.ADD_TO_CART, E.CHECKOUT):
                    delays.append(rules.cart_ttl_hours * HOUR)
                if e.event in (E.REVIEW, E.SHARE, E.REFERRAL):
                    delays.append(rules.advocacy_days * DAY)
                if e.event is E.PURCHASE:
                    delays += [rules.retention_days * DAY, rules.retention_grace_days * DAY]
                if rules.consider_weights.get(e.event, 0.0) > 0:
                    delays.append(rules.consider_window_days * DAY)
                moments.update(e.timestamp + d for d in delays if at < e.timestamp + d < now)
            for m in sorted(moments):
                s = infer_stage(known, float(np.nextafter(m, np.inf)), rules).stage.index
                if s != cur:
                    changes.append((v, cur, s, m, True))
                    cur = s
        final = infer_stage(events, now, rules).stage.index
        if final != cur:
            changes.append((v, cur, final, max(now, at) if stage >= 0 else now, False))
        finals.append(final)
    return changes, finals


# -- known answers -------------------------------------------------------------------------------------


def test_an_abandoned_cart_expires_at_the_ttl_and_is_dated_then() -> None:
    history = [ev(E.PRODUCT_VIEW, T0), ev(E.ADD_TO_CART, T0 + 60)]
    # recorded in decision at T0 + 60, seen again 100 hours later with a new page view
    later = [*history, ev(E.PAGE_VIEW, T0 + 100 * HOUR)]
    changes, final = run([later], [(Stage.DECISION.index, T0 + 60, T0 + 60)], T0 + 100 * HOUR + 1)
    expiry = T0 + 60 + 72 * HOUR
    assert changes == [(0, Stage.DECISION.index, Stage.AWARENESS.index, expiry, True)]
    assert final == [Stage.AWARENESS.index]


def test_a_customer_lapses_after_the_retention_window() -> None:
    history = [ev(E.PURCHASE, T0)]
    now = T0 + 120 * DAY
    changes, _ = run([history], [(Stage.RETENTION.index, T0, T0 + 1)], now)
    assert changes == [(0, Stage.RETENTION.index, Stage.AWARENESS.index, T0 + 90 * DAY, True)]


def test_an_event_driven_change_is_dated_now_and_a_new_visitor_is_a_first_sighting() -> None:
    views = [ev(E.PRODUCT_VIEW, T0 + i) for i in range(3)]
    now = T0 + 10
    changes, final = run(
        [views, views[:1]],
        [(Stage.AWARENESS.index, T0, T0 + 1), (-1, math.nan, math.nan)],
        now,
    )
    assert changes == [
        (0, Stage.AWARENESS.index, Stage.CONSIDERATION.index, now, False),
        (1, -1, Stage.AWARENESS.index, now, False),
    ]
    assert final == [Stage.CONSIDERATION.index, Stage.AWARENESS.index]


def test_dwell_is_measured_from_the_stage_entry_and_chains_through_time_changes() -> None:
    # decision entered at T0; the cart expires at T0 + 72 h (dwell 72 h); consideration then holds until now
    history = [ev(E.PRODUCT_VIEW, T0 - 3 + i) for i in range(3)] + [ev(E.ADD_TO_CART, T0)]
    now = T0 + 80 * HOUR
    owner = np.zeros(len(history), dtype=np.int64)
    w = walk_stages(
        owner,
        np.array([e.timestamp for e in history]),
        np.array([e.event.code for e in history]),
        np.array([Stage.DECISION.index]),
        np.array([T0]),
        np.array([T0]),
        now,
    )
    assert [STAGES[i] for i in w.target] == [Stage.CONSIDERATION]
    assert w.dwell.tolist() == [72 * HOUR]
    assert w.since.tolist() == [T0 + 72 * HOUR]


def test_no_change_keeps_the_entry_time() -> None:
    w = walk_stages(
        np.zeros(1, dtype=np.int64),
        np.array([T0]),
        np.array([E.PAGE_VIEW.code]),
        np.array([Stage.AWARENESS.index]),
        np.array([T0 - 5]),
        np.array([T0]),
        T0 + 10,
    )
    assert len(w.visitor) == 0
    assert w.since.tolist() == [T0 - 5]


def test_median_of_a_histogram_is_interpolated_inside_its_bucket() -> None:
    counts = [0] * N_BUCKETS
    counts[1] = 1  # [1 min, 5 min)
    counts[2] = 3  # [5 min, 15 min)
    # 4 values: the median is the 2nd: 1 of the 3 in the second bucket -> 5 min + (2 - 1) / 3 * 10 min
    m = median_of_histogram(counts)
    assert m == Median(300.0 + 600.0 / 3, 300.0, 900.0)
    assert median_of_histogram([0] * N_BUCKETS) is None
    last = [0] * N_BUCKETS
    last[-1] = 2
    assert median_of_histogram(last) == Median(DWELL_EDGES[-1], DWELL_EDGES[-1], None)


def test_dwell_buckets_follow_the_edges() -> None:
    got = dwell_buckets(np.array([-1.0, 0.0, 59.9, 60.0, 3600.0, 1e12]))
    assert got.tolist() == [0, 0, 0, 1, 4, N_BUCKETS - 1]


def test_row_rates_normalise_each_source_stage() -> None:
    a, c, d = Stage.AWARENESS, Stage.CONSIDERATION, Stage.DECISION
    rates = row_rates({(a, c): 3, (a, d): 1, (c, d): 2})
    assert rates == {(a, c): 0.75, (a, d): 0.25, (c, d): 1.0}


def test_funnel_counts_visitors_at_a_stage_or_later() -> None:
    seen = [{"a", "b", "c", "d"}, {"a", "b"}, {"e"}, set(), {"a"}]
    steps = funnel(seen)
    assert [s.visitors for s in steps] == [5, 3, 2, 1, 1]
    assert steps[0] == FunnelStep(Stage.AWARENESS, 5, None)
    assert steps[1].drop_off == pytest.approx(0.4)
    assert steps[2].drop_off == pytest.approx(1 / 3)
    assert drop_offs([0, 0, 0, 0, 0])[1].drop_off is None
    with pytest.raises(ValueError, match="one visitor set per stage"):
        funnel([set()])


def test_advance_and_rate() -> None:
    assert is_advance(Stage.DECISION, Stage.RETENTION)
    assert not is_advance(Stage.RETENTION, Stage.CONSIDERATION)
    assert rate(1, 4) == 0.25
    assert rate(1, 0) is None


# -- invariants ------------------------------------------------------------------------------------------

KINDS = [E.PAGE_VIEW, E.PRODUCT_VIEW, E.COMPARE, E.ADD_TO_CART, E.REMOVE_FROM_CART, E.PURCHASE, E.REVIEW]
event_st = st.tuples(st.sampled_from(KINDS), st.integers(0, 200 * 86_400))
visitor_st = st.tuples(
    st.lists(event_st, max_size=12),
    st.integers(-1, 4),  # recorded stage (-1: none)
    st.integers(0, 200 * 86_400),  # recorded evaluation time
)


@settings(max_examples=200, deadline=None)
@given(st.lists(visitor_st, min_size=1, max_size=5), st.integers(0, 250 * 86_400))
def test_the_walk_matches_the_naive_reference(visitors: list, now_offset: int) -> None:
    histories = [[ev(k, T0 + t, f"v{i}") for k, t in evs] for i, (evs, _, _) in enumerate(visitors)]
    prev = [(s, T0 + at - 10.0, T0 + at) if s >= 0 else (-1, math.nan, math.nan) for _, s, at in visitors]
    now = T0 + now_offset + 0.5
    got = run(histories, prev, now)
    want = naive(histories, prev, now)
    assert got[1] == want[1]
    assert [(*c[:3], c[4]) for c in got[0]] == [(*c[:3], c[4]) for c in want[0]]
    assert [c[3] for c in got[0]] == pytest.approx([c[3] for c in want[0]])


@settings(max_examples=100, deadline=None)
@given(st.lists(visitor_st, min_size=1, max_size=5), st.integers(0, 250 * 86_400))
def test_walk_invariants(visitors: list, now_offset: int) -> None:
    """Each visitor's changes chain from the recorded stage to the final one, in time order, never before
    the last evaluation nor after now, with non-negative dwell."""
    histories = [[ev(k, T0 + t, f"v{i}") for k, t in evs] for i, (evs, _, _) in enumerate(visitors)]
    prev = [(s, T0 + at - 10.0, T0 + at) if s >= 0 else (-1, math.nan, math.nan) for _, s, at in visitors]
    now = T0 + now_offset + 0.5
    owner = np.array([i for i, h in enumerate(histories) for _ in h], dtype=np.int64)
    w = walk_stages(
        owner,
        np.array([e.timestamp for h in histories for e in h], dtype=np.float64),
        np.array([e.event.code for h in histories for e in h], dtype=np.int8),
        np.array([p[0] for p in prev]),
        np.array([p[1] for p in prev]),
        np.array([p[2] for p in prev]),
        now,
    )
    for v, (stage, _, at) in enumerate(prev):
        mine = np.flatnonzero(w.visitor == v)
        cur = stage
        for j in mine:
            assert w.source[j] == cur != w.target[j]
            assert stage < 0 or (w.at[j] > at if w.by_time[j] else w.at[j] >= at)
            assert w.at[j] <= max(now, at) if stage >= 0 else w.at[j] == now
            assert np.isnan(w.dwell[j]) == (w.source[j] < 0)
            assert np.isnan(w.dwell[j]) or w.dwell[j] >= 0
            cur = int(w.target[j])
        assert cur == w.stage[v]
        assert np.all(np.diff(w.at[mine]) >= 0)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 20), min_size=N_BUCKETS, max_size=N_BUCKETS))
def test_the_median_bucket_holds_half_the_values(counts: list[int]) -> None:
    m = median_of_histogram(counts)
    if sum(counts) == 0:
        assert m is None
        return
    assert m is not None
    i = DWELL_EDGES.index(m.low)
    assert sum(counts[:i]) <= sum(counts) / 2 <= sum(counts[: i + 1])
    assert m.low <= m.seconds <= (m.high if m.high is not None else m.low)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sets(st.sampled_from("abcdefgh")), min_size=5, max_size=5))
def test_the_funnel_never_grows_and_drop_offs_are_shares(seen: list[set[str]]) -> None:
    steps = funnel(seen)
    assert all(a.visitors >= b.visitors for a, b in itertools.pairwise(steps))
    assert steps[0].visitors == len(set().union(*seen))
    assert all(s.drop_off is None or 0.0 <= s.drop_off <= 1.0 for s in steps)


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.tuples(st.sampled_from(STAGES), st.sampled_from(STAGES)), st.integers(0, 50)))
def test_row_rates_sum_to_one_per_non_empty_row(counts: dict[tuple[Stage, Stage], int]) -> None:
    rates = row_rates(counts)
    for src in STAGES:
        row = [rates[k] for k in counts if k[0] == src]
        if sum(n for k, n in counts.items() if k[0] == src):
            assert sum(row) == pytest.approx(1.0)
