"""Purchase history on the request path: buy-again over more than the recent events (the purchase log gives
the live profile the same purchase counts and recency as the visitor's whole history, which the offline
profiles see), ownership from purchases against cancels, the event arrays."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.catalog import CatalogColumns
from models.domain import DAY, Event, EventType, ItemKind
from models.history import event_arrays, ever_bought, older_purchases, owned_items
from models.live_profile import LiveProfile
from models.request import VisitorContext
from models.weights import EventWeights
from tests.storefront import storefront_catalog

E = EventType
NOW = 1_750_000_000.0
CATALOG = CatalogColumns.build(storefront_catalog())
PRODUCTS = [c.item_id for c in CATALOG.items if c.kind is ItemKind.PRODUCT][:6]


def ev(item: str, kind: EventType, t: float) -> Event:
    return Event(visitor_id="v", item_id=item, event=kind, timestamp=t)


def _profile(ctx: VisitorContext) -> LiveProfile:
    rows = CATALOG.event_rows(ctx.events)
    items, codes, ts = event_arrays(ctx, rows, older_purchases(ctx), CATALOG.index)
    return LiveProfile.from_arrays(items, codes, ts, ctx.now, EventWeights().vector())


def _by_item(p: LiveProfile, field: str) -> dict[int, float]:
    return {int(i): float(v) for i, v in zip(p.items, getattr(p, field), strict=True) if v != 0}


event_st = st.tuples(
    st.integers(0, 5),  # which product
    st.sampled_from([E.PRODUCT_VIEW, E.PURCHASE, E.PURCHASE, E.CANCEL, E.ADD_TO_CART]),
    st.floats(1.0, 200 * DAY),  # age at NOW
)


@settings(max_examples=60, deadline=None)
@given(st.lists(event_st, min_size=1, max_size=40), st.integers(1, 10))
def test_purchases_beyond_the_recent_events_count_as_in_the_whole_history(
    raw: list[tuple[int, EventType, float]], recent: int
) -> None:
    history = [ev(PRODUCTS[i], kind, NOW - age) for i, kind, age in raw]  # arrival order, not time order
    log = [e for e in history if e.event in (E.PURCHASE, E.CANCEL)]
    latest: dict[str, float] = {}
    for e in log:
        if e.event is E.PURCHASE:
            latest[e.item_id] = max(latest.get(e.item_id, 0.0), e.timestamp)
    whole = VisitorContext(visitor_id="v", events=history, cart={}, purchases=latest, now=NOW)
    live = VisitorContext(
        visitor_id="v", events=history[-recent:], cart={}, purchases=latest, now=NOW, purchase_log=log
    )
    want, got = _profile(whole), _profile(live)
    for field in ("purchases", "purchase_age", "purchase_decay"):
        w, g = _by_item(want, field), _by_item(got, field)
        assert w.keys() == g.keys(), field
        assert all(np.isclose(w[i], g[i], rtol=1e-5) for i in w), field


def test_older_purchases_are_the_log_before_the_recent_events() -> None:
    a, b = PRODUCTS[:2]
    log = [ev(a, E.PURCHASE, NOW - 30), ev(b, E.PURCHASE, NOW - 20), ev(a, E.CANCEL, NOW - 10)]
    recent = [ev(b, E.PRODUCT_VIEW, NOW - 15), log[2]]  # the cancel is the log's last entry
    ctx = VisitorContext(
        visitor_id="v", events=recent, cart={}, purchases={b: NOW - 20}, now=NOW, purchase_log=log
    )
    assert older_purchases(ctx) == log[:2]


def test_without_a_log_an_older_purchase_counts_once_at_its_latest_time() -> None:
    ctx = VisitorContext(visitor_id="v", events=[], cart={}, purchases={PRODUCTS[0]: NOW - DAY}, now=NOW)
    assert older_purchases(ctx) == [ev(PRODUCTS[0], E.PURCHASE, NOW - DAY)]
    p = _profile(ctx)
    assert p.purchases.tolist() == [1.0]
    assert np.isclose(p.purchase_age[0], 1.0, atol=2e-3)


@pytest.mark.parametrize(
    ("log", "owned"),
    [
        ([E.PURCHASE, E.PURCHASE, E.CANCEL], True),  # bought twice, cancelled once: still owns one
        ([E.PURCHASE, E.CANCEL], False),
        ([E.PURCHASE, E.CANCEL, E.PURCHASE], True),
    ],
)
def test_owned_items_count_purchases_against_cancels(log: list[EventType], owned: bool) -> None:
    item = PRODUCTS[0]
    events = [ev(item, k, NOW - 100 + i) for i, k in enumerate(log)]
    # what a store holds after those events: a cancel drops the item from the latest-purchase map
    latest = {item: NOW - 98} if log[-1] is E.PURCHASE else {}
    ctx = VisitorContext(
        visitor_id="v", events=events, cart={}, purchases=latest, now=NOW, purchase_log=events
    )
    assert (item in owned_items(ctx)) is owned
    assert ever_bought(ctx) == {item}


def test_event_arrays_keep_catalog_items_up_to_now_in_time_order() -> None:
    a, b = PRODUCTS[:2]
    events = [
        ev(b, E.PRODUCT_VIEW, NOW - 5),
        ev("ghost", E.PRODUCT_VIEW, NOW - 4),
        ev(a, E.ADD_TO_CART, NOW + 60),
    ]
    older = [ev(a, E.PURCHASE, NOW - 50)]
    ctx = VisitorContext(visitor_id="v", events=events, cart={}, purchases={}, now=NOW)
    items, codes, ts = event_arrays(ctx, CATALOG.event_rows(events), older, CATALOG.index)
    assert items.tolist() == [CATALOG.index[a], CATALOG.index[b]]
    assert codes.tolist() == [E.PURCHASE.code, E.PRODUCT_VIEW.code]
    assert ts.tolist() == [NOW - 50, NOW - 5]
    assert (items.dtype, codes.dtype, ts.dtype) == (np.int64, np.int8, np.float64)
