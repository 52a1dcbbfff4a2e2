"""The request path's numpy profile agrees with the batch ``Profiles`` and ``blend.sparse_features``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from models.blend import SPARSE_COLUMNS, SUBSTITUTE, sparse_features
from models.domain import DAY, EVENT_TYPES, Event, EventType
from models.live_profile import LiveProfile, best_anchors, gather_rows
from models.profiles import profile_from_events
from models.serving_rules import DEFAULT_SERVING, ServingRules
from models.sources import ItemTables, substitutes_kept_out
from models.weights import EventWeights

N = 30


def _tables(seed: int) -> ItemTables:
    rng = np.random.default_rng(seed)
    return ItemTables(
        popularity=rng.integers(0, 50, N).astype(np.float32),
        trending=rng.random(N).astype(np.float32),
        repeat_rate=rng.random(N).astype(np.float32),
        complements=sp.random(N, N, density=0.15, random_state=seed, dtype=np.float32).tocsr(),
        similar=sp.random(N, N, density=0.2, random_state=seed + 1, dtype=np.float32).tocsr(),
        known=np.ones(N, bool),
        # a few categories and some items without one (the substitute feature goes through them), with
        # their rebuy rates (one category the model never counted) and the catalog's repeatable flags
        category=rng.integers(-1, 5, N).astype(np.int32),
        category_repeat=rng.random(4).astype(np.float32),
        repeatable=rng.random(N) < 0.2,
        # the training visitors' basket vectors the basket-neighbours source searches
        visitor_baskets=sp.random(12, N, density=0.2, random_state=seed + 2, dtype=np.float32).tocsr(),
    )


def _dense(idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
    out = np.zeros(N, np.float32)
    out[idx] = vals
    return out


event_rows = st.lists(
    st.tuples(
        st.integers(0, N - 1),
        st.sampled_from(EVENT_TYPES),
        # a coarse time grid makes ties (same item, same second) common: they must resolve the same way
        st.integers(0, 40).map(lambda h: h * 3600.0 * 12),
    ),
    max_size=40,
)


# the recency windows of the blend features: training and serving read them from the same rules
windows = st.sampled_from(
    [
        DEFAULT_SERVING,
        ServingRules(
            bought_recency_days=3.0,
            touch_recency_days=0.5,
            complement_recency_days=9.0,
            similar_recency_days=2.0,
            substitute_recency_days=20.0,
            substitute_cutoff=0.3,
            basket_group_size=2,
            basket_within_decay=0.6,
            basket_group_decay=0.5,
            basket_neighbours=3,
        ),
    ]
)


@settings(max_examples=150, deadline=None)
@given(
    event_rows,
    st.integers(0, 3),
    st.lists(st.integers(0, N - 1), max_size=4),
    windows,
    st.integers(-1, 11),
)
def test_features_match_the_batch_profile(rows, seed, cart, rules, own_row) -> None:
    now = 30 * DAY
    events = [Event(visitor_id="v", item_id=str(i), event=e, timestamp=t) for i, e, t in rows]
    events = sorted(events, key=lambda e: e.timestamp)
    tables = _tables(seed)
    weights = EventWeights()
    prof = profile_from_events(events, {str(i): i for i in range(N)}, N, now, weights, rules.basket_params)
    cart_ids = np.unique(np.array(cart, np.int64))
    prof_cart = sp.csr_matrix(
        (np.ones(len(cart_ids), np.float32), (np.zeros(len(cart_ids), int), cart_ids)), shape=(1, N)
    )
    kept = [e for e in events if e.timestamp <= now]
    live = LiveProfile.from_arrays(
        np.array([int(e.item_id) for e in kept], np.int64),
        np.array([e.event.code for e in kept], np.int8),
        np.array([e.timestamp for e in kept], np.float64),
        now,
        weights.vector(),
        rules.basket_params,
    )
    # without the store's cart, the cart derived from events must match the batch one
    assert np.array_equal(_dense(live.items, live.cart), prof.cart.toarray()[0])
    for name in ("interest", "touch_age", "purchases", "purchase_age", "purchase_decay", "basket_frequency"):
        assert np.allclose(_dense(live.items, getattr(live, name)), getattr(prof, name).toarray()[0]), name

    # then with the store's cart replacing it, as the recommender does
    prof = replace(prof, cart=prof_cart)
    live = live.with_cart(cart_ids)
    want = {j: m.toarray()[0] for j, m in sparse_features(tables, prof, rules, np.array([own_row]))}
    got = {j: _dense(idx, vals) for j, idx, vals in live.features(tables, rules, own_row=own_row)}
    assert want.keys() == got.keys()
    for j, dense in want.items():
        assert np.allclose(got[j], dense, atol=1e-6), j
    assert live.is_new == (prof.touch_age.nnz == 0)

    # the request path takes the substitute feature at its candidate rows only: the same values there
    rows = np.flatnonzero(np.random.default_rng(seed).random(N) < 0.6).astype(np.int64)
    sub = live.substitutes_at(tables, rules, rows)
    full = want.get(SUBSTITUTE, np.zeros(N))[rows]
    got_sub = np.zeros(len(rows)) if sub is None else _dense(sub[1], sub[2])[rows]
    assert np.allclose(got_sub, full, atol=1e-6)
    assert SUBSTITUTE not in {j for j, _, _ in live.features(tables, rules, substitutes=False)}
    # what retention keeps out: the batch mask is the request path's cutoff of the same values
    kept_out = substitutes_kept_out(tables, prof, np.array([True]), rules).toarray()[0]
    assert np.array_equal(kept_out[rows], got_sub >= np.float32(rules.substitute_cutoff))


@pytest.mark.parametrize("seed", range(4))
def test_gather_rows_is_a_weighted_row_sum(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = sp.random(20, 50, density=0.2, random_state=seed, dtype=np.float32).tocsr()
    rows = rng.choice(20, 6, replace=True).astype(np.int64)
    w = rng.random(6).astype(np.float32)
    idx, vals = gather_rows(m, rows, w)
    want = (sp.csr_matrix((w, (np.zeros(6, int), rows)), shape=(1, 20)) @ m).toarray()[0]
    assert np.all(np.diff(idx) > 0)
    assert np.allclose(_dense50(idx, vals), want, atol=1e-6)


def _dense50(idx: np.ndarray, vals: np.ndarray) -> np.ndarray:
    out = np.zeros(50, np.float32)
    out[idx] = vals
    return out


def test_empty_profile_has_no_features() -> None:
    live = LiveProfile.from_arrays(
        np.zeros(0, np.int64), np.zeros(0, np.int8), np.zeros(0), 10.0, EventWeights().vector()
    )
    assert live.is_new
    assert live.features(_tables(0), DEFAULT_SERVING) == []
    assert [j for j, _, _ in live.with_cart(np.array([3])).features(_tables(0), DEFAULT_SERVING)]


@pytest.mark.parametrize("seed", range(5))
def test_best_anchors_matches_a_dense_argmax(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = sp.random(15, 40, density=0.25, random_state=seed, dtype=np.float32).tocsr()
    anchors = rng.choice(15, 5, replace=False).astype(np.int64)
    targets = rng.choice(40, 8, replace=False).astype(np.int64)
    got = best_anchors(m, anchors, targets)
    block = m[anchors][:, targets].toarray()
    for t in range(len(targets)):
        if block[:, t].max() > 0:
            assert block[got[t], t] == block[:, t].max()
        else:
            assert got[t] == -1


def test_substitutes_are_the_rest_of_a_fresh_one_off_purchases_category() -> None:
    """Items 0-3 are kettles, 4-5 teas, 6 a toaster (no category link), 7 a kettle filter the catalog
    says is repeatable. Kettle 0 was bought an hour ago and sells with tea 4 and, in its own category,
    with a descaler-like kettle 3; tea 5 is bought again and again. One kettle buyer in ten buys another."""
    n = 8
    comp = sp.csr_matrix(([0.5, 0.5], ([0, 0], [4, 3])), shape=(n, n), dtype=np.float32)
    tables = ItemTables(
        popularity=np.ones(n, np.float32),
        trending=np.zeros(n, np.float32),
        repeat_rate=np.array([0.0, 0, 0, 0, 0.9, 1.0, 0, 0], np.float32),
        complements=comp,
        similar=sp.csr_matrix((n, n), dtype=np.float32),
        known=np.ones(n, bool),
        category=np.array([0, 0, 0, 0, 1, 1, -1, 0], np.int32),
        category_repeat=np.array([0.1, 0.6], np.float32),
        repeatable=np.arange(n) == 7,
    )
    rules = ServingRules(substitute_recency_days=3.0)

    def substitutes(bought: list[tuple[int, float]], now: float) -> np.ndarray:
        items = np.array([i for i, _ in bought], np.int64)
        codes = np.full(len(items), EventType.PURCHASE.code, np.int8)
        live = LiveProfile.from_arrays(
            items, codes, np.array([t for _, t in bought]), now, EventWeights().vector()
        )
        (entry,) = [(idx, vals) for j, idx, vals in live.features(tables, rules) if j == SUBSTITUTE]
        out = np.zeros(n, np.float32)
        out[entry[0]] = entry[1]
        return out

    now = 10 * DAY
    got = substitutes([(0, now - 3600)], now)
    # kettles 1 and 2: substitutes at nearly full strength (1 h of a 3-day window, 9 kettle buyers in 10
    # buy one); the kettle itself, its co-bought kettle 3 and tea 4, and the filter (repeatable) are not;
    # the toaster has no category in common
    fresh = np.exp(-1 / 72) * 0.9
    assert np.allclose(got, [0, fresh, fresh, 0, 0, 0, 0, 0], atol=1e-3)
    assert substitutes([(0, now - 9 * DAY)], now).max() < 0.05  # weeks later the kettle no longer rules
    # a tea bought again and again makes no other tea a substitute
    assert substitutes([(5, now - 3600)], now).max() == 0.0


def test_sparse_columns_name_every_feature_sparse_features_gives() -> None:
    """``SPARSE_COLUMNS`` (which negatives training draws from a visitor's own candidates) lists the
    columns ``sparse_features`` computes, in its order."""
    events = [
        Event(visitor_id="v", item_id="3", event=EventType.PURCHASE, timestamp=DAY),
        Event(visitor_id="v", item_id="5", event=EventType.PRODUCT_VIEW, timestamp=2 * DAY),
    ]
    prof = profile_from_events(events, {str(i): i for i in range(N)}, N, 3 * DAY, EventWeights())
    got = [j for j, _ in sparse_features(_tables(0), prof, DEFAULT_SERVING)]
    assert got == list(SPARSE_COLUMNS)
