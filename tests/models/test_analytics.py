"""Journey analytics, pure parts: the stage walk against a naive per-visitor reference, known answers for
time-based changes, the bucketed median, rates and the funnel, with hypothesis invariants."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models import analytics
from models.analytics import (
    BY_EVENT,
    BY_REQUEST,
    BY_TIME,
    DWELL_EDGES,
    N_BUCKETS,
    FunnelStep,
    Median,
    Walk,
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


Change = tuple[int, int, int, float, int]  # (visitor, source, target, at, cause)


def run(
    histories: list[list[Event]],
    prev: list[tuple[int, float]],
    now: float,
    rules: JourneyRules = DEFAULT_RULES,
) -> tuple[list[Change], list[int]]:
    """walk_stages over per-visitor histories; (changes, final stages)."""
    w = walk(histories, prev, now, rules)
    changes = [
        (int(v), int(s), int(t), float(a), int(k))
        for v, s, t, a, k in zip(w.visitor, w.source, w.target, w.at, w.cause, strict=True)
    ]
    return changes, [int(x) for x in w.stage]


def walk(
    histories: list[list[Event]],
    prev: list[tuple[int, float]],
    now: float,
    rules: JourneyRules = DEFAULT_RULES,
    *,
    exact_due: bool = True,
) -> Walk:
    owner = np.array([i for i, h in enumerate(histories) for _ in h], dtype=np.int64)
    return walk_stages(
        owner,
        np.array([e.timestamp for h in histories for e in h], dtype=np.float64),
        np.array([e.event.code for h in histories for e in h], dtype=np.int8),
        np.array([p[0] for p in prev]),
        np.array([p[1] for p in prev]),
        now,
        rules,
        exact_due=exact_due,
    )


def naive(
    histories: list[list[Event]],
    prev: list[tuple[int, float]],
    now: float,
    rules: JourneyRules = DEFAULT_RULES,
) -> tuple[list[Change], list[int]]:
    """The reference: per visitor, every event and threshold moment found by a loop, the engine asked at
    each one at a time."""
    changes: list[Change] = []
    finals: list[int] = []
    for v, (events, (stage, recorded)) in enumerate(zip(histories, prev, strict=True)):
        cur = stage
        since = recorded if stage >= 0 else -math.inf  # a new visitor is replayed from the first event
        moments: dict[float, int] = {}
        for e in events:
            for d in _delays(e, rules):
                if since < e.timestamp + d < now:
                    moments.setdefault(e.timestamp + d, BY_TIME)
        for e in events:
            if since < e.timestamp < now:
                moments[e.timestamp] = BY_EVENT
        for m in sorted(moments):
            s = infer_stage(events, float(np.nextafter(m, np.inf)), rules).stage.index
            if s != cur:
                changes.append((v, cur, s, m, moments[m]))
                cur = s
        final = infer_stage(events, now, rules).stage.index
        if final != cur:
            changes.append((v, cur, final, max(now, since), BY_REQUEST))
        finals.append(final)
    return changes, finals


def naive_due(histories: list[list[Event]], now: float, rules: JourneyRules = DEFAULT_RULES) -> list[float]:
    """The reference of ``Walk.due``: per visitor, the thresholds ahead of ``now`` in time order, the
    engine asked just after each; the first whose stage is not the one at ``now`` (inf: none)."""
    out = []
    for events in histories:
        final = infer_stage(events, now, rules).stage.index
        ahead = sorted(e.timestamp + d for e in events for d in _delays(e, rules) if e.timestamp + d >= now)
        turn = (
            m
            for m in ahead
            if infer_stage(events, float(np.nextafter(m, np.inf)), rules).stage.index != final
        )
        out.append(next(turn, math.inf))
    return out


def _delays(e: Event, rules: JourneyRules) -> list[float]:
    delays = []
    if e.event in (E.ADD_TO_CART, E.CHECKOUT):
        delays.append(rules.cart_ttl_hours * HOUR)
    if e.event in (E.REVIEW, E.SHARE, E.REFERRAL):
        delays.append(rules.advocacy_days * DAY)
    if e.event is E.PURCHASE:
        delays += [rules.retention_days * DAY, rules.retention_grace_days * DAY]
    if rules.consider_weights.get(e.event, 0.0) > 0:
        delays.append(rules.consider_window_days * DAY)
    return delays


# -- known answers -------------------------------------------------------------------------------------


def test_an_abandoned_cart_expires_at_the_ttl_and_is_dated_then() -> None:
    history = [ev(E.PRODUCT_VIEW, T0), ev(E.ADD_TO_CART, T0 + 60)]
    # recorded in decision at T0 + 60, seen again 100 hours later with a new page view
    later = [*history, ev(E.PAGE_VIEW, T0 + 100 * HOUR)]
    changes, final = run([later], [(Stage.DECISION.index, T0 + 60)], T0 + 100 * HOUR + 1)
    expiry = T0 + 60 + 72 * HOUR
    assert changes == [(0, Stage.DECISION.index, Stage.AWARENESS.index, expiry, BY_TIME)]
    assert final == [Stage.AWARENESS.index]


def test_the_due_time_is_the_next_change_by_time() -> None:
    cart = [ev(E.PRODUCT_VIEW, T0), ev(E.ADD_TO_CART, T0 + 60)]
    bought = [*cart, ev(E.PURCHASE, T0 + 120)]
    w = walk([cart, bought, []], [(-1, math.nan)] * 3, T0 + HOUR)
    assert w.stage.tolist() == [Stage.DECISION.index, Stage.RETENTION.index, Stage.AWARENESS.index]
    # the cart expires after cart_ttl_hours; the customer lapses after retention_days; no events: never
    assert w.due.tolist() == [T0 + 60 + 72 * HOUR, T0 + 120 + DEFAULT_RULES.retention_days * DAY, math.inf]


def test_a_customer_lapses_after_the_retention_window() -> None:
    history = [ev(E.PURCHASE, T0)]
    now = T0 + 120 * DAY
    changes, _ = run([history], [(Stage.RETENTION.index, T0)], now)
    assert changes == [(0, Stage.RETENTION.index, Stage.AWARENESS.index, T0 + 90 * DAY, BY_TIME)]


def test_an_event_change_is_dated_at_the_event_and_a_new_visitor_is_replayed() -> None:
    views = [ev(E.PRODUCT_VIEW, T0 + i) for i in range(3)]
    # one request with a cart add after the views: two changes, each at its event
    cart = [*views, ev(E.ADD_TO_CART, T0 + 5)]
    now = T0 + 10
    changes, final = run(
        [views, views[:1], cart],
        [(Stage.AWARENESS.index, T0 - 1), (-1, math.nan), (Stage.AWARENESS.index, T0 - 1)],
        now,
    )
    assert changes == [
        (0, Stage.AWARENESS.index, Stage.CONSIDERATION.index, T0 + 2, BY_EVENT),
        (1, -1, Stage.AWARENESS.index, T0, BY_EVENT),
        (2, Stage.AWARENESS.index, Stage.CONSIDERATION.index, T0 + 2, BY_EVENT),
        (2, Stage.CONSIDERATION.index, Stage.DECISION.index, T0 + 5, BY_EVENT),
    ]
    assert final == [Stage.CONSIDERATION.index, Stage.AWARENESS.index, Stage.DECISION.index]
    w = walk([views, views[:1], cart], [(0, T0 - 1), (-1, math.nan), (0, T0 - 1)], now)
    assert w.row.tolist() == [2, 3, 6, 7]  # the events that caused them, as passed in


def test_a_replay_from_the_record_finds_nothing_new_when_nothing_happened() -> None:
    views = [ev(E.PRODUCT_VIEW, T0 + i) for i in range(3)]
    assert run([views], [(Stage.CONSIDERATION.index, T0 + 2)], T0 + 10) == ([], [Stage.CONSIDERATION.index])


def test_late_events_are_found_at_now() -> None:
    # recorded in awareness since T0 + 100; views dated before that arrive now
    views = [ev(E.PRODUCT_VIEW, T0 + i) for i in range(3)]
    changes, _ = run([views], [(Stage.AWARENESS.index, T0 + 100)], T0 + 200)
    assert changes == [(0, Stage.AWARENESS.index, Stage.CONSIDERATION.index, T0 + 200, BY_REQUEST)]


def test_dwell_is_measured_from_the_stage_entry_and_chains_through_time_changes() -> None:
    # decision entered at T0; the cart expires at T0 + 72 h (dwell 72 h); consideration then holds until now
    history = [ev(E.PRODUCT_VIEW, T0 - 3 + i) for i in range(3)] + [ev(E.ADD_TO_CART, T0)]
    w = walk([history], [(Stage.DECISION.index, T0)], T0 + 80 * HOUR)
    assert [STAGES[i] for i in w.target] == [Stage.CONSIDERATION]
    assert w.dwell.tolist() == [72 * HOUR]
    assert w.since.tolist() == [T0 + 72 * HOUR]


def test_no_change_keeps_the_entry_time() -> None:
    w = walk([[ev(E.PAGE_VIEW, T0)]], [(Stage.AWARENESS.index, T0 - 5)], T0 + 10)
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
    st.integers(0, 200 * 86_400),  # when it was entered
)


def _case(visitors: list, now_offset: int) -> tuple[list[list[Event]], list[tuple[int, float]], float]:
    histories = [[ev(k, T0 + t, f"v{i}") for k, t in evs] for i, (evs, _, _) in enumerate(visitors)]
    prev = [(s, T0 + at) if s >= 0 else (-1, math.nan) for _, s, at in visitors]
    return histories, prev, T0 + now_offset + 0.5


@settings(max_examples=200, deadline=None)
@given(st.lists(visitor_st, min_size=1, max_size=5), st.integers(0, 250 * 86_400))
def test_the_walk_matches_the_naive_reference(visitors: list, now_offset: int) -> None:
    histories, prev, now = _case(visitors, now_offset)
    got = run(histories, prev, now)
    want = naive(histories, prev, now)
    assert got[1] == want[1]
    assert [(*c[:3], c[4]) for c in got[0]] == [(*c[:3], c[4]) for c in want[0]]
    assert [c[3] for c in got[0]] == pytest.approx([c[3] for c in want[0]])


@settings(max_examples=200, deadline=None)
@given(st.lists(visitor_st, min_size=1, max_size=5), st.integers(0, 250 * 86_400))
def test_the_due_time_matches_the_naive_reference(visitors: list, now_offset: int) -> None:
    histories, prev, now = _case(visitors, now_offset)
    exact = walk(histories, prev, now)
    assert exact.due.tolist() == naive_due(histories, now)
    # the cheap bound: the first threshold ahead, never after the change; the rest of the walk the same
    bound = walk(histories, prev, now, exact_due=False)
    assert all(b <= d for b, d in zip(bound.due.tolist(), exact.due.tolist(), strict=True))
    ahead = [
        min(
            (e.timestamp + d for e in h for d in _delays(e, DEFAULT_RULES) if e.timestamp + d >= now),
            default=math.inf,
        )
        for h in histories
    ]
    assert bound.due.tolist() == ahead
    for name in ("visitor", "source", "target", "at", "cause", "row", "stage", "since"):
        assert np.array_equal(getattr(bound, name), getattr(exact, name), equal_nan=True), name


@settings(max_examples=100, deadline=None)
@given(st.lists(visitor_st, min_size=1, max_size=5), st.integers(0, 250 * 86_400))
def test_walk_invariants(visitors: list, now_offset: int) -> None:
    """Each visitor's changes chain from the recorded stage to the final one, in time order, after the
    record and not after now, with non-negative dwell; walking again from the result finds nothing."""
    histories, prev, now = _case(visitors, now_offset)
    w = walk(histories, prev, now)
    for v, (stage, since) in enumerate(prev):
        mine = np.flatnonzero(w.visitor == v)
        cur = stage
        for j in mine:
            assert w.source[j] == cur != w.target[j]
            assert stage < 0 or w.at[j] >= since
            assert w.at[j] <= (max(now, since) if stage >= 0 else now)
            assert (w.source[j] < 0) == (stage < 0 and j == mine[0])
            assert np.isnan(w.dwell[j]) == (w.source[j] < 0)
            assert np.isnan(w.dwell[j]) or w.dwell[j] >= 0
            assert (w.row[j] >= 0) == (w.cause[j] == BY_EVENT)
            cur = int(w.target[j])
        assert cur == w.stage[v]
        assert np.all(np.diff(w.at[mine]) >= 0)
    again = walk(histories, list(zip(w.stage.tolist(), w.since.tolist(), strict=True)), now)
    assert len(again.visitor) == 0


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


pairs_st = st.lists(
    st.tuples(st.integers(0, 6), st.sampled_from([-math.inf, 0.0, 1.0, 1.5, 1e9, 1e9 + 1e-6])), max_size=40
)


@settings(max_examples=200, deadline=None)
@given(pairs_st, pairs_st)
def test_complex_keys_order_and_search_like_lexsort(rows: list, queries: list) -> None:
    v = np.array([r[0] for r in rows], dtype=np.int64)
    t = np.array([r[1] for r in rows], dtype=np.float64)
    assert np.array_equal(analytics._lex_order(v, t), np.lexsort((t, v)))
    o = np.lexsort((t, v))
    v, t = v[o], t[o]
    qv = np.array([q[0] for q in queries], dtype=np.int64)
    qt = np.array([q[1] for q in queries], dtype=np.float64)
    # naive: the rows of earlier visitors, and the visitor's own rows at earlier times
    want = [int(np.sum((v < a) | ((v == a) & (t < b)))) for a, b in zip(qv, qt, strict=True)]
    assert analytics._rows_before(v, t, qv, qt).tolist() == want
