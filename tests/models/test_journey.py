"""The journey-stage engine: known answers, decay, invariants (hypothesis) and real OTTO sessions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dataset import EventLog
from models.domain import EVENT_TYPES, Event, EventType, Stage
from models.journey import (
    DAY,
    DEFAULT_RULES,
    HOUR,
    JourneyRules,
    _classify,
    _classify_one,
    _State,
    _state,
    _state_one,
    infer_stage,
    stages_after_events,
    stages_at,
    stages_before_events,
)

E = EventType
OTTO = Path(__file__).parents[1] / "fixtures" / "otto-sample.jsonl"
OTTO_TYPES = {"clicks": E.PRODUCT_VIEW, "carts": E.ADD_TO_CART, "orders": E.PURCHASE}


def ev(item: str, kind: EventType, t: float, visitor: str = "v") -> Event:
    return Event(visitor_id=visitor, item_id=item, event=kind, timestamp=t)


def log_of(events: list[Event]) -> EventLog:
    return EventLog.build(
        visitor_ids=[e.visitor_id for e in events],
        item_ids=[e.item_id for e in events],
        event=np.array([e.event.code for e in events], dtype=np.int8),
        ts=np.array([e.timestamp for e in events]),
    )


# -- known answers -------------------------------------------------------------------------------------


def test_a_full_journey_walks_through_every_stage() -> None:
    cats = {"k1": "kettles", "k2": "kettles", "k3": "kettles"}
    walk: list[tuple[list[Event], Stage]] = [
        ([ev("guide-1", E.CONTENT_VIEW, 0), ev("guide-2", E.CONTENT_VIEW, 60)], Stage.AWARENESS),
        ([ev(f"k{i}", E.PRODUCT_VIEW, 100 + i) for i in (1, 2, 3)], Stage.CONSIDERATION),
        ([ev("k2", E.ADD_TO_CART, 200)], Stage.DECISION),
        ([ev("k2", E.PURCHASE, 300)], Stage.RETENTION),
        ([ev("k2", E.REVIEW, 400)], Stage.ADVOCACY),
    ]
    history: list[Event] = []
    for step, expected in walk:
        history += step
        now = history[-1].timestamp + 1
        result = infer_stage(history, now, category_of=cats)
        assert result.stage is expected, (expected, result)
        assert result.signals
    consider = infer_stage(history[:5], 104, category_of=cats)
    assert consider.signals[0] == "3 views in category kettles"


def test_the_stage_after_each_touchpoint_of_a_known_history() -> None:
    t0, d = 1_700_000_000.0, DAY
    # (event, the stage just after it)  # why
    history = [
        (ev("guide", E.CONTENT_VIEW, t0), Stage.AWARENESS),  # no consideration activity
        (ev("k1", E.PRODUCT_VIEW, t0 + 60), Stage.AWARENESS),  # activity 1 < 3
        (ev("k2", E.COMPARE, t0 + 120), Stage.CONSIDERATION),  # 1 + 2 = 3
        (ev("k1", E.ADD_TO_CART, t0 + 180), Stage.DECISION),  # a cart opens
        (ev("k1", E.REMOVE_FROM_CART, t0 + 240), Stage.CONSIDERATION),  # and empties
        (ev("k2", E.ADD_TO_CART, t0 + 300), Stage.DECISION),
        (ev("k2", E.CHECKOUT, t0 + 360), Stage.DECISION),
        (ev("k2", E.PURCHASE, t0 + 420), Stage.RETENTION),  # the cart closes with the purchase
        (ev("k2", E.REVIEW, t0 + 480), Stage.ADVOCACY),
        (ev("k3", E.PRODUCT_VIEW, t0 + 40 * d), Stage.RETENTION),  # the review is 40 days old (> 30)
        (ev("k4", E.PRODUCT_VIEW, t0 + 40 * d + 60), Stage.RETENTION),  # activity since it 2 < 3
        (ev("k3", E.WISHLIST, t0 + 40 * d + 120), Stage.CONSIDERATION),  # 4 >= 3: a new journey
        (ev("k3", E.ADD_TO_CART, t0 + 40 * d + 180), Stage.DECISION),
        (ev("k4", E.PRODUCT_VIEW, t0 + 45 * d), Stage.CONSIDERATION),  # the cart expired after 72 h
        (ev("k5", E.PRODUCT_VIEW, t0 + 100 * d), Stage.AWARENESS),  # lapsed; 1 view in 14 days
    ]
    events = [e for e, _ in history]
    expected = [s.index for _, s in history]
    stage, conf = stages_after_events(events)
    assert stage.tolist() == expected
    assert conf.dtype == np.float32
    assert ((conf > 0) & (conf <= 1)).all()
    # the answer follows the events as given, in any order
    order = [14, 3, 0, 9, 7, 1, 12, 5, 2, 8, 13, 4, 11, 6, 10]
    shuffled, _ = stages_after_events([events[i] for i in order])
    assert shuffled.tolist() == [expected[i] for i in order]
    # events at one moment count in the order given: the cart opens, then the purchase closes it
    same = [ev("a", E.PRODUCT_VIEW, t0), ev("a", E.ADD_TO_CART, t0 + 9), ev("a", E.PURCHASE, t0 + 9)]
    assert stages_after_events(same)[0].tolist() == [
        s.index for s in (Stage.AWARENESS, Stage.DECISION, Stage.RETENTION)
    ]
    same[1:] = same[2], same[1]  # the purchase, then a new cart
    assert stages_after_events(same)[0].tolist() == [
        s.index for s in (Stage.AWARENESS, Stage.RETENTION, Stage.DECISION)
    ]
    assert [len(a) for a in stages_after_events([])] == [0, 0]


def test_unknown_visitor_is_in_awareness_with_low_confidence() -> None:
    r = infer_stage([], 1_000.0)
    assert r.stage is Stage.AWARENESS
    assert r.confidence <= 0.3
    assert r.signals == ["no history yet: first visit"]


def test_abandoned_cart_expires() -> None:
    history = [ev("a", E.ADD_TO_CART, 0.0)]
    ttl = DEFAULT_RULES.cart_ttl_hours * HOUR
    early = infer_stage(history, 1 * HOUR)
    late = infer_stage(history, ttl + HOUR)
    assert early.stage is Stage.DECISION
    assert early.signals[0].startswith("cart not empty for 1 h")
    assert late.stage is not Stage.DECISION
    assert any("abandoned" in s for s in late.signals)
    # the decision confidence decays while the cart waits
    assert infer_stage(history, 2 * HOUR).confidence > infer_stage(history, ttl - HOUR).confidence


def test_removing_everything_closes_the_cart() -> None:
    history = [ev("a", E.ADD_TO_CART, 0.0), ev("a", E.REMOVE_FROM_CART, 10.0)]
    assert infer_stage(history, 20.0).stage is Stage.AWARENESS


def test_lapsed_customer_drifts_back() -> None:
    history = [ev("a", E.PURCHASE, 0.0)]
    assert infer_stage(history, 10 * DAY).stage is Stage.RETENTION
    lapsed = infer_stage(history, (DEFAULT_RULES.retention_days + 1) * DAY)
    assert lapsed.stage is Stage.AWARENESS
    assert "lapsed" in " ".join(lapsed.signals)
    # ... and a customer who starts comparing again is considering, not retained
    t = 20 * DAY
    again = [*history, *(ev(f"b{i}", E.PRODUCT_VIEW, t + i) for i in range(4))]
    assert infer_stage(again, t + 10).stage is Stage.CONSIDERATION


def test_browsing_right_after_a_purchase_keeps_retention() -> None:
    history = [ev("a", E.PURCHASE, 0.0), *(ev(f"b{i}", E.PRODUCT_VIEW, 60.0 + i) for i in range(5))]
    assert infer_stage(history, 120.0).stage is Stage.RETENTION


def test_advocacy_wears_off_but_an_open_cart_wins() -> None:
    history = [ev("a", E.PURCHASE, 0.0), ev("a", E.REVIEW, 10.0)]
    assert infer_stage(history, 20.0).stage is Stage.ADVOCACY
    assert infer_stage(history, (DEFAULT_RULES.advocacy_days + 1) * DAY).stage is Stage.RETENTION
    assert infer_stage([*history, ev("b", E.ADD_TO_CART, 30.0)], 40.0).stage is Stage.DECISION


def test_rules_are_configuration() -> None:
    history = [ev(f"p{i}", E.PRODUCT_VIEW, float(i)) for i in range(2)]
    assert infer_stage(history, 10.0).stage is Stage.AWARENESS
    eager = JourneyRules(consider_threshold=2.0)
    assert infer_stage(history, 10.0, eager).stage is Stage.CONSIDERATION
    with pytest.raises(ValueError, match="cart_ttl_hours"):
        JourneyRules(cart_ttl_hours=0)


# -- invariants ----------------------------------------------------------------------------------------

event_st = st.builds(
    lambda item, code, t: (f"i{item}", EVENT_TYPES[code], float(t)),
    st.integers(0, 5),
    st.integers(0, len(EVENT_TYPES) - 1),
    st.integers(0, 200 * 86_400),
)


def _events(raw: list[tuple[str, EventType, float]], visitor: str = "v") -> list[Event]:
    # distinct timestamps: "before" is then the same whether counted by time or by row
    seen: set[float] = set()
    out = []
    for item, kind, t in raw:
        if t not in seen:
            seen.add(t)
            out.append(ev(item, kind, t, visitor))
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(event_st, max_size=40), st.integers(0, 250 * 86_400), st.randoms())
def test_stage_is_a_pure_function_of_history_and_now(raw, now, rnd) -> None:
    events = _events(raw)
    r = infer_stage(events, float(now))
    assert 0.0 <= r.confidence <= 1.0
    assert r.signals
    shuffled = list(events)
    rnd.shuffle(shuffled)
    assert infer_stage(shuffled, float(now)) == r
    # events at or after now do not change the answer
    future = [ev("late", E.PURCHASE, float(now) + 1), ev("late", E.REVIEW, float(now))]
    assert infer_stage([*events, *future], float(now)) == r


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.lists(event_st, min_size=1, max_size=25), min_size=1, max_size=6),
    st.integers(0, 250 * 86_400),
)
def test_vectorised_engine_agrees_with_the_per_visitor_one(per_visitor, now) -> None:
    events = [e for n, raw in enumerate(per_visitor) for e in _events(raw, f"v{n}")]
    log = log_of(events)
    stage, conf = stages_at(log, float(now))
    for v, vid in enumerate(log.visitor_ids):
        one = infer_stage([e for e in events if e.visitor_id == vid], float(now))
        assert stage[v] == one.stage.index
        assert np.isclose(conf[v], one.confidence, atol=1e-4)
    before, before_conf = stages_before_events(log)
    for row in range(log.n_events):
        vid = log.visitor_ids[log.visitor[row]]
        t = float(log.ts[row])
        one = infer_stage([e for e in events if e.visitor_id == vid], t)
        assert before[row] == one.stage.index
        assert np.isclose(before_conf[row], one.confidence, atol=1e-4)


@settings(max_examples=80, deadline=None)
@given(st.lists(event_st, max_size=30), st.randoms())
def test_the_stage_after_each_event_is_the_engine_just_after_it(raw, rnd) -> None:
    events = _events(raw)  # distinct times
    rnd.shuffle(events)
    stage, conf = stages_after_events(events)
    for i, e in enumerate(events):
        one = infer_stage(events, float(np.nextafter(e.timestamp, np.inf)))
        assert stage[i] == one.stage.index
        assert np.isclose(conf[i], one.confidence, atol=1e-4)


@settings(max_examples=60, deadline=None)
@given(st.lists(event_st, max_size=30), st.integers(0, 100 * 86_400))
def test_a_purchase_never_leaves_a_visitor_in_awareness_or_consideration(raw, gap) -> None:
    events = _events(raw)
    t = max((e.timestamp for e in events), default=0.0) + 1.0
    bought = [*events, ev("x", E.PURCHASE, t)]
    r = infer_stage(bought, t + 1.0 + min(gap, DEFAULT_RULES.retention_grace_days * DAY - 2))
    assert r.stage in (Stage.RETENTION, Stage.ADVOCACY, Stage.DECISION)


# -- real sessions (OTTO sample, CC BY 4.0: see tests/fixtures/README.md) -------------------------------


def _otto() -> list[list[Event]]:
    sessions = []
    for line in OTTO.read_text().splitlines():
        s = json.loads(line)
        sessions.append(
            [
                ev(str(x["aid"]), OTTO_TYPES[x["type"]], x["ts"] / 1000.0, str(s["session"]))
                for x in s["events"]
            ]
        )
    return sessions


def test_otto_sessions_stage_follows_carts_and_orders() -> None:
    sessions = _otto()
    assert len(sessions) == 20
    checked = {"decision": 0, "retention": 0, "consideration": 0, "awareness": 0}
    for events in sessions:
        for i, e in enumerate(events):
            nxt = events[i + 1].timestamp if i + 1 < len(events) else e.timestamp + 1.0
            if nxt <= e.timestamp:
                continue  # several events at one instant: judge after the last of them
            now = e.timestamp + min(1.0, (nxt - e.timestamp) / 2)
            r = infer_stage(events[: i + 1], now)
            if e.event is E.ADD_TO_CART:
                assert r.stage is Stage.DECISION, (e, r)
                checked["decision"] += 1
            elif e.event is E.PURCHASE:
                assert r.stage is Stage.RETENTION, (e, r)
                checked["retention"] += 1
        if all(e.event is E.PRODUCT_VIEW for e in events):
            end = infer_stage(events, events[-1].timestamp + 1)
            window = [e for e in events if e.timestamp > events[-1].timestamp - 14 * DAY]
            expect = Stage.CONSIDERATION if len(window) >= 3 else Stage.AWARENESS
            assert end.stage is expect, (events[0].visitor_id, end)
            checked[expect.value] += 1
    assert all(n > 0 for n in checked.values()), checked


def test_otto_log_stages_match_live_engine() -> None:
    events = [e for s in _otto() for e in s]
    log = log_of(events)
    end = float(log.ts.max()) + 1
    stage, _ = stages_at(log, end)
    for v, vid in enumerate(log.visitor_ids):
        assert stage[v] == infer_stage([e for e in events if e.visitor_id == vid], end).stage.index


@settings(max_examples=200, deadline=None)
@given(st.lists(event_st, max_size=40), st.integers(0, 250 * 86_400))
def test_one_visitor_state_matches_the_vectorised_state(raw, now) -> None:
    events = sorted((e for e in _events(raw) if e.timestamp < now), key=lambda e: e.timestamp)
    ts = np.array([e.timestamp for e in events], dtype=np.float64)
    codes = np.array([e.event.code for e in events], dtype=np.int8)
    rules = JourneyRules(consider_weights={E.PRODUCT_VIEW: 1.0, E.PURCHASE: 0.7, E.SEARCH: 0.5})
    n = len(events)
    want = _state(
        np.zeros(n, np.int64), ts, codes, np.zeros(1, np.int64), np.array([n]), np.array([now]), rules
    )
    got = _state_one(ts.tolist(), codes.tolist(), float(now), rules)
    for field in want.__struct_fields__:
        a, b = getattr(want, field), getattr(got, field)
        assert a.shape == b.shape == (1,), field
        assert a.dtype.kind == b.dtype.kind, field
        assert np.allclose(a, b, equal_nan=True) or a[0] == b[0], field


_age = st.one_of(st.just(float("inf")), st.just(float("nan")), st.floats(-1e3, 400 * 86_400.0))


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 5),
    st.booleans(),
    _age,
    _age,
    _age,
    st.floats(0, 20),
    st.floats(0, 20),
    st.sampled_from([DEFAULT_RULES, JourneyRules(retention_grace_days=0.0, consider_threshold=1.5)]),
)
def test_one_visitor_classifier_matches_the_vectorised_one(
    n, cart_open, cart_age, purchase_age, advocacy_age, consider, consider_new, rules
) -> None:
    one = _State(
        n_events=np.array([n]),
        cart_open=np.array([cart_open]),
        cart_age=np.array([cart_age]),
        purchase_age=np.array([purchase_age]),
        advocacy_age=np.array([advocacy_age]),
        consider=np.array([consider]),
        consider_new=np.array([min(consider_new, consider)]),
    )
    want_stage, want_conf = _classify(one, rules)
    got_stage, got_conf = _classify_one(one, rules)
    assert got_stage == int(want_stage[0])
    assert abs(got_conf - float(want_conf[0])) <= 1e-6
