from dataclasses import replace

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dataset import EventLog
from models.domain import DAY, CatalogItem, EventType
from models.profiles import profiles_from_arrays, profiles_from_log
from models.serving_rules import DEFAULT_SERVING, ServingRules
from models.sources import (
    ItemTables,
    basket_cooccurrence,
    basket_neighbour_matrix,
    buy_again_scores,
    cosine_item_similarity,
    fit_item_tables,
    row_max_normalise,
    substitute_matrix,
    substitutes_kept_out,
    top_n_per_row,
)
from models.weights import EventWeights

P = EventType.PURCHASE.code
V = EventType.PRODUCT_VIEW.code


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 8),
    st.integers(1, 8),
    st.integers(1, 5),
    st.randoms(use_true_random=False),
)
def test_top_n_per_row_matches_naive(n_rows, n_cols, n, rnd):
    rng = np.random.default_rng(rnd.randint(0, 2**31))
    dense = rng.random((n_rows, n_cols)) * (rng.random((n_rows, n_cols)) < 0.6)
    got = top_n_per_row(sp.csr_matrix(dense.astype(np.float32)), n).toarray()
    for r in range(n_rows):
        nz = [(dense[r, c], c) for c in range(n_cols) if dense[r, c] != 0]
        keep = {c for _, c in sorted(nz, key=lambda x: -x[0])[:n]}
        for c in range(n_cols):
            want = dense[r, c] if c in keep else 0.0
            assert np.isclose(got[r, c], want, atol=1e-6)


def test_cosine_similarity_known_answer():
    # items 0 and 1 always together, item 2 alone
    ui = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32))
    sim = cosine_item_similarity(ui, top_n=5, shrink=0.0).toarray()
    assert np.isclose(sim[0, 1], 1.0)
    assert np.isclose(sim[1, 0], 1.0)
    assert sim[0, 2] == 0
    assert sim[2, 0] == 0
    assert np.all(np.diag(sim) == 0)


def test_basket_cooccurrence_is_conditional_probability_with_prior():
    # baskets: {0,1}, {0,1}, {0,2}; support(0)=3
    rows = np.array([0, 0, 1, 1, 2, 2])
    items = np.array([0, 1, 0, 1, 0, 2])
    co = basket_cooccurrence(rows, items, 3, 3, top_n=5).toarray()
    assert np.isclose(co[0, 1], 2 / (3 + 5))
    assert np.isclose(co[0, 2], 1 / (3 + 5))
    assert np.isclose(co[1, 0], 2 / (2 + 5))
    assert co[1, 2] == 0


def test_row_max_normalise_keeps_zero_rows():
    a = np.array([[0, 2, 4], [0, 0, 0]], dtype=np.float32)
    assert row_max_normalise(a).tolist() == [[0, 0.5, 1], [0, 0, 0]]


def _log():
    # visitor a buys x twice on two days and y once; b buys x once, views z
    rows = [
        ("a", "x", P, 0.0),
        ("a", "x", P, 2 * 86400.0),
        ("a", "y", P, 2 * 86400.0),
        ("b", "x", P, 86400.0),
        ("b", "z", V, 86400.0),
    ]
    return EventLog.build(
        visitor_ids=[r[0] for r in rows],
        item_ids=[r[1] for r in rows],
        event=np.array([r[2] for r in rows]),
        ts=np.array([r[3] for r in rows]),
    )


def test_item_tables_known_answers():
    log = _log()
    now = 3 * 86400.0
    t = fit_item_tables(log, now, EventWeights(), frozenset({EventType.PURCHASE}))
    ix = {i: n for n, i in enumerate(log.item_ids)}
    assert t.popularity[ix["x"]] == 2  # two distinct buyers
    assert t.popularity[ix["y"]] == 1
    assert t.popularity[ix["z"]] == 0  # a view is not positive
    assert np.isclose(t.repeat_rate[ix["x"]], 0.5)  # a re-bought on another day, b did not
    assert t.known.all()


def test_buy_again_ranks_by_count_then_popularity():
    log = _log()
    now = 3 * 86400.0
    t = fit_item_tables(log, now, EventWeights(), frozenset({EventType.PURCHASE}))
    prof = profiles_from_log(log, np.array([0], dtype=np.int32), now, EventWeights())
    s = buy_again_scores(t, prof)[0]
    ix = {i: n for n, i in enumerate(log.item_ids)}
    assert s[ix["x"]] > s[ix["y"]] > 0
    assert s[ix["z"]] == 0


def _kitchen_log() -> tuple[EventLog, float]:
    """Kettles k1, k2 and a kettle filter f (kettles, f repeatable by the catalog), teas t1 (repeatable by
    the catalog) and t2, a toaster with no category. Kettle buyers a, b, c, d: only c bought kettles on two
    days; tea buyers a (two days) and b; d bought kettle k1 an hour before ``now``."""
    now = 30 * DAY
    catalog = [
        CatalogItem(item_id="k1", category="kettles"),
        CatalogItem(item_id="k2", category="kettles"),
        CatalogItem(item_id="f", category="kettles", repeatable=True),
        CatalogItem(item_id="t1", category="tea", repeatable=True),
        CatalogItem(item_id="t2", category="tea"),
        CatalogItem(item_id="toaster"),
    ]
    rows = [
        ("a", "k1", 0.0),
        ("a", "t1", 0.0),
        ("a", "t2", 5 * DAY),
        ("b", "k2", DAY),
        ("b", "t1", DAY),
        ("c", "k1", 2 * DAY),
        ("c", "k2", 9 * DAY),
        ("c", "f", 9 * DAY),
        ("c", "toaster", 9 * DAY),
        ("d", "k1", now - 3600.0),
    ]
    log = EventLog.build(
        visitor_ids=[r[0] for r in rows],
        item_ids=[r[1] for r in rows],
        event=np.full(len(rows), P),
        ts=np.array([r[2] for r in rows]),
        catalog=catalog,
    )
    return log, now


def test_rebuy_rates_count_the_item_the_catalog_and_the_category():
    log, now = _kitchen_log()
    t = fit_item_tables(log, now + 1, EventWeights(), frozenset({EventType.PURCHASE}))
    ix = {i: n for n, i in enumerate(log.item_ids)}
    # categories are coded in name order: kettles 0, tea 1
    assert np.allclose(t.category_repeat, [1 / 4, 1 / 2])
    items = np.array([ix[i] for i in ("k1", "k2", "f", "t1", "t2", "toaster")], np.int64)
    assert np.allclose(t.item_rebuy_rate(items), [0, 0, 1, 1, 0, 0])  # nobody bought one item on two days
    assert np.allclose(t.rebuy_rate(items), [1 / 4, 1 / 4, 1, 1, 1 / 2, 0])


def test_substitutes_kept_out_are_fresh_one_off_alikes_for_retention_visitors_only():
    log, now = _kitchen_log()
    t = fit_item_tables(log, now + 1, EventWeights(), frozenset({EventType.PURCHASE}))
    ix = {i: n for n, i in enumerate(log.item_ids)}
    d = np.array([log.visitor_ids.index("d")], np.int32)
    prof = profiles_from_log(log, d, now, EventWeights())
    rules = ServingRules()
    sub = substitute_matrix(t, prof, rules.substitute_recency_days).toarray()[0]
    # k2: a kettle bought once by its buyers, 3/4 of kettle buyers buy one kettle; the catalog's repeatable
    # filter and the teas are no substitutes, nor is the kettle itself
    want = np.zeros(log.n_items)
    want[ix["k2"]] = np.exp(-1 / 72) * (1 - 1 / 4)
    assert np.allclose(sub, want, atol=1e-3)
    assert (
        substitutes_kept_out(t, prof, np.array([True]), rules).toarray()[0].tolist() == (want >= 0.5).tolist()
    )
    assert substitutes_kept_out(t, prof, np.array([False]), rules).nnz == 0
    fading = ServingRules(substitute_cutoff=0.8)  # above k2's value: nothing is kept out
    assert substitutes_kept_out(t, prof, np.array([True]), fading).nnz == 0


def _naive_neighbour_mean(pool: np.ndarray, own: np.ndarray, exclude: int, k: int) -> np.ndarray:
    """TIFU-KNN's neighbour part, one visitor, plain loops: the mean pool row of the k pool rows (not
    ``exclude``) with the highest positive cosine to ``own``."""
    sims = []
    for j, row in enumerate(pool):
        denom = float(np.sqrt(row @ row) * np.sqrt(own @ own))
        if j != exclude and denom > 0 and float(row @ own) > 0:
            sims.append((float(row @ own) / denom, j))
    near = [j for _, j in sorted(sims, key=lambda t: -t[0])[:k]]
    return pool[near].mean(axis=0) if near else np.zeros(pool.shape[1])


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 12), st.integers(1, 6))
def test_basket_neighbours_match_a_naive_search(seed: int, k: int, n_visitors: int) -> None:
    """Visitors buy on a few days; the pool holds other (training) visitors' basket vectors, and each
    visitor's own training row, which is never their neighbour."""
    rng = np.random.default_rng(seed)
    n_items, n_pool = 7, 10
    pool = rng.random((n_pool, n_items)) * (rng.random((n_pool, n_items)) < 0.5)
    pool[np.arange(n_pool), rng.integers(0, n_items, n_pool)] += 0.1 + rng.random(n_pool)
    n_events = int(rng.integers(0, 12))
    visitor = rng.integers(0, n_visitors, n_events)
    item = rng.integers(0, n_items, n_events)
    ts = rng.integers(0, 9, n_events) * DAY + rng.integers(0, 80_000, n_events)
    prof = profiles_from_arrays(
        visitor,
        item,
        np.full(n_events, P, np.int8),
        ts.astype(np.float64),
        n_rows=n_visitors,
        n_items=n_items,
        now=10 * DAY,
        weights=EventWeights(),
    )
    tables = ItemTables(
        popularity=np.ones(n_items, np.float32),
        trending=np.zeros(n_items, np.float32),
        repeat_rate=np.zeros(n_items, np.float32),
        complements=sp.csr_matrix((n_items, n_items), dtype=np.float32),
        similar=sp.csr_matrix((n_items, n_items), dtype=np.float32),
        known=np.ones(n_items, bool),
        visitor_baskets=sp.csr_matrix(pool.astype(np.float32)),
    )
    own_rows = rng.integers(-1, n_pool, n_visitors)
    got = basket_neighbour_matrix(tables, prof, ServingRules(basket_neighbours=k), own_rows).toarray()
    own = prof.basket_frequency.toarray()
    for v in range(n_visitors):
        want = _naive_neighbour_mean(pool.astype(np.float32), own[v], int(own_rows[v]), k)
        np.testing.assert_allclose(got[v], want, rtol=1e-5, atol=1e-6)
    # without a pool the source is empty
    none = basket_neighbour_matrix(replace(tables, visitor_baskets=None), prof, DEFAULT_SERVING)
    assert none.shape == (n_visitors, n_items)
    assert none.nnz == 0
