"""Buy-again over more than the recent events: the purchase log gives the live profile the same purchase
counts and recency as the visitor's whole history (what the offline profiles see)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.artifact import load
from models.catalog import hidden_rows
from models.domain import DAY, Event, EventType
from models.history import event_arrays, older_purchases
from models.live_profile import LiveProfile
from models.recommender import Recommender
from models.request import Filters, VisitorContext
from tests.service.api_fixtures import train_storefront_model

E = EventType
NOW = 1_750_000_000.0


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> Recommender:
    d: Path = tmp_path_factory.mktemp("history-model")
    return Recommender(load(train_storefront_model(d)))


def _profile(rec: Recommender, ctx: VisitorContext) -> LiveProfile:
    items, codes, ts = event_arrays(ctx, rec.event_rows(ctx.events), older_purchases(ctx), rec.catalog.index)
    return LiveProfile.from_arrays(items, codes, ts, ctx.now, rec.manifest.weights.vector())


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
    rec: Recommender, raw: list[tuple[int, EventType, float]], recent: int
) -> None:
    products = [c.item_id for c in rec.catalog.items if c.kind.value == "product"][:6]
    history = [  # in arrival order, which need not be time order
        Event(visitor_id="v", item_id=products[i], event=kind, timestamp=NOW - age) for i, kind, age in raw
    ]
    log = [e for e in history if e.event in (E.PURCHASE, E.CANCEL)]
    latest: dict[str, float] = {}
    for e in log:
        if e.event is E.PURCHASE:
            latest[e.item_id] = max(latest.get(e.item_id, 0.0), e.timestamp)
    whole = VisitorContext(visitor_id="v", events=history, cart={}, purchases=latest, now=NOW)
    live = VisitorContext(
        visitor_id="v", events=history[-recent:], cart={}, purchases=latest, now=NOW, purchase_log=log
    )
    want, got = _profile(rec, whole), _profile(rec, live)
    for field in ("purchases", "purchase_age", "purchase_decay"):
        w, g = _by_item(want, field), _by_item(got, field)
        assert w.keys() == g.keys(), field
        assert all(np.isclose(w[i], g[i], rtol=1e-5) for i in w), field


def test_without_a_log_an_older_purchase_counts_once_at_its_latest_time(rec: Recommender) -> None:
    item = next(c.item_id for c in rec.catalog.items if c.kind.value == "product")
    ctx = VisitorContext(visitor_id="v", events=[], cart={}, purchases={item: NOW - DAY}, now=NOW)
    p = _profile(rec, ctx)
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
def test_owned_items_count_purchases_against_cancels(
    rec: Recommender, log: list[EventType], owned: bool
) -> None:
    item = next(c for c in rec.catalog.items if c.kind.value == "product" and not c.repeatable).item_id
    events = [
        Event(visitor_id="v", item_id=item, event=k, timestamp=NOW - 100 + i) for i, k in enumerate(log)
    ]
    # what a store holds after those events: a cancel drops the item from the latest-purchase map
    latest = {item: NOW - 98} if log[-1] is E.PURCHASE else {}
    ctx = VisitorContext(
        visitor_id="v", events=events, cart={}, purchases=latest, now=NOW, purchase_log=events
    )
    hidden = hidden_rows(rec.catalog, ctx, Filters())
    assert (rec.catalog.index[item] in hidden.tolist()) is owned
    assert hidden_rows(rec.catalog, ctx, Filters(include_purchased=True)).tolist() == []


def test_a_bought_anchor_is_named_as_bought(rec: Recommender) -> None:
    products = [c for c in rec.catalog.items if c.kind.value == "product"]
    reasons: list[str] = []
    for anchor in products[:20]:  # a few purchases, so that some similar/complement item names its anchor
        bought = Event(visitor_id="b", item_id=anchor.item_id, event=E.PURCHASE, timestamp=NOW - 3600)
        ctx = VisitorContext(
            visitor_id="b",
            events=[bought],
            cart={},
            purchases={anchor.item_id: bought.timestamp},
            now=NOW,
            purchase_log=[bought],
        )
        reasons += [
            r.reason
            for r in rec.recommend(ctx, 20, Filters()).products
            if r.source in ("similar", "complement") and (anchor.title or anchor.item_id) in r.reason
        ]
    assert reasons
    assert all(r.endswith("you bought") for r in reasons), reasons
