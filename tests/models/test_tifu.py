"""TIFU-KNN against hand-computed figures and a naive pure-Python reference of the paper's definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from models.domain import DAY
from models.tifu import (
    TIFU_DEFAULTS,
    TifuParams,
    basket_keys,
    day_basket_vector,
    day_basket_vectors,
    nearest_in_pool,
    nearest_neighbours,
    nearest_one,
    neighbour_mean,
    predict,
    row_normalised,
    top_mask,
    unit_values,
    user_vectors,
)

Basket = set[int]


def ref_vector(baskets: list[Basket], p: TifuParams, n_items: int) -> list[float]:
    """The visitor's vector from its baskets (oldest first), one loop per step of the definition."""
    groups: list[list[Basket]] = []
    end = len(baskets)
    while end > 0:
        groups.insert(0, baskets[max(0, end - p.group_size) : end])
        end -= p.group_size
    vec = [0.0] * n_items
    for gi, group in enumerate(groups):
        g_weight = p.group_decay ** (len(groups) - 1 - gi) / len(groups)
        for j, basket in enumerate(group):
            b_weight = p.within_decay ** (len(group) - 1 - j) / len(group)
            for item in basket:
                vec[item] += g_weight * b_weight
    return vec


def ref_predict(vectors: list[list[float]], p: TifuParams) -> list[list[float]]:
    """alpha * own + (1 - alpha) * mean of the k most cosine-similar others with cosine > 0."""

    def cos(a: list[float], b: list[float]) -> float:
        na, nb = math.sqrt(sum(x * x for x in a)), math.sqrt(sum(x * x for x in b))
        return sum(x * y for x, y in zip(a, b, strict=True)) / (na * nb) if na and nb else 0.0

    out = []
    for i, own in enumerate(vectors):
        sims = sorted(
            ((cos(own, other), j) for j, other in enumerate(vectors) if j != i), key=lambda t: -t[0]
        )
        near = [j for c, j in sims[: p.neighbours] if c > 0]
        mean = [sum(vectors[j][t] for j in near) / len(near) if near else 0.0 for t in range(len(own))]
        out.append([p.alpha * own[t] + (1 - p.alpha) * mean[t] for t in range(len(own))])
    return out


def vectors_of(visitor_baskets: list[list[Basket]], p: TifuParams, n_items: int) -> np.ndarray:
    """Dense [visitors, items] from ``user_vectors`` given each visitor's baskets (oldest first)."""
    vis, item, bkt, ts = [], [], [], []
    for v, baskets in enumerate(visitor_baskets):
        for b, basket in enumerate(baskets):
            for it in sorted(basket):
                # a later basket may carry a smaller key: the order is by time, not by key
                vis.append(v), item.append(it), bkt.append(1000 - b), ts.append(float(b * DAY + it))
    return user_vectors(
        np.array(vis, np.int32),
        np.array(item, np.int32),
        np.array(bkt, np.int64),
        np.array(ts),
        n_visitors=len(visitor_baskets),
        n_items=n_items,
        params=p,
    ).toarray()


def test_published_defaults() -> None:
    assert (TIFU_DEFAULTS.neighbours, TIFU_DEFAULTS.within_decay, TIFU_DEFAULTS.group_decay) == (
        300,
        0.9,
        0.7,
    )
    assert (TIFU_DEFAULTS.alpha, TIFU_DEFAULTS.group_size) == (0.7, 7)


def test_decay_arithmetic_by_hand() -> None:
    # groups of 2 counted back from the latest: [{0}] (the oldest, partial), [{1}, {0, 2}]
    p = TifuParams(group_size=2, within_decay=0.5, group_decay=0.25)
    got = vectors_of([[{0}, {1}, {0, 2}]], p, 3)[0]
    # latest group: {1} weighs 0.5 / 2, {0, 2} weighs 1 / 2; oldest: {0} weighs 1 / 1 * 0.25; mean of 2
    np.testing.assert_allclose(got, [(0.5 + 0.25) / 2, 0.25 / 2, 0.5 / 2], rtol=1e-6)


def test_an_item_twice_in_a_basket_counts_once() -> None:
    v = user_vectors(
        np.array([0, 0, 0]),
        np.array([1, 1, 0]),
        np.array([5, 5, 6]),
        np.array([0.0, 1.0, DAY]),
        n_visitors=2,
        n_items=2,
        params=TifuParams(group_size=3, within_decay=0.5),
    ).toarray()
    # basket 5 ({1}) then basket 6 ({0}): one group of 2
    np.testing.assert_allclose(v, [[1 / 2, 0.5 / 2], [0.0, 0.0]], rtol=1e-6)


def test_vectors_match_the_reference() -> None:
    rng = np.random.default_rng(3)
    p = TifuParams(group_size=3, within_decay=0.8, group_decay=0.6)
    n_items = 6
    visitors = [
        [set(rng.choice(n_items, rng.integers(1, 4), replace=False).tolist()) for _ in range(n_b)]
        for n_b in (1, 2, 3, 4, 7, 9, 0)
    ]
    got = vectors_of(visitors, p, n_items)
    want = [ref_vector(b, p, n_items) for b in visitors]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_basket_keys_session_else_day() -> None:
    keys = basket_keys(np.array([0, 0, 0, 1]), np.array([7, -1, -1, -1]), np.array([0.0, 10.0, 20.0, 10.0]))
    assert keys[0] == 7
    assert keys[1] == keys[2] != keys[3]  # one visitor's day is one basket; another visitor's is another
    assert (keys[1:] < 0).all()


def test_neighbour_blend_by_hand() -> None:
    vectors = np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]], np.float32)
    m = sp.csr_matrix(vectors)
    p = TifuParams(neighbours=1, alpha=0.7)
    got = predict(m, np.array([0, 3]), p).toarray()
    # 0's nearest is 1 (cos 0.71); 3's nearest is 2 (cos 0.71)
    np.testing.assert_allclose(got[0], 0.7 * vectors[0] + 0.3 * vectors[1], rtol=1e-6)
    np.testing.assert_allclose(got[1], 0.7 * vectors[3] + 0.3 * vectors[2], rtol=1e-6)


def test_no_common_item_is_no_neighbour() -> None:
    m = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], np.float32))
    idx, sim = nearest_neighbours(row_normalised(m), np.array([0, 2]), 2)
    assert (idx == -1).all()
    assert (sim == 0).all()
    np.testing.assert_allclose(predict(m, np.array([0]), TifuParams(alpha=0.4)).toarray(), [[0.4, 0.0]])


@pytest.mark.parametrize("budget", [1, 7, 10_000])
def test_predict_matches_the_reference_in_any_block_size(budget: int) -> None:
    rng = np.random.default_rng(11)
    n_visitors, n_items = 25, 8
    dense = rng.random((n_visitors, n_items)) * (rng.random((n_visitors, n_items)) < 0.6)
    p = TifuParams(neighbours=4, alpha=0.6)
    m = sp.csr_matrix(dense.astype(np.float32))
    unit = row_normalised(m)
    rows = np.arange(n_visitors)
    _idx, sim = nearest_neighbours(unit, rows, p.neighbours, block_budget=budget)
    want_sim = np.sort(np.where(np.eye(n_visitors, dtype=bool), -1, (unit @ unit.T).toarray()), axis=1)
    # no two cosines tie at the k-th place, so the neighbour sets are defined
    assert (want_sim[:, -p.neighbours] - want_sim[:, -p.neighbours - 1] > 1e-4).all()
    np.testing.assert_allclose(sim, np.maximum(want_sim[:, ::-1][:, : p.neighbours], 0), rtol=1e-5)
    got = predict(m, rows, p, unit).toarray()
    want = ref_predict(dense.astype(np.float32).tolist(), p)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def ref_nearest(pool: np.ndarray, query: np.ndarray, exclude: int, k: int) -> list[int]:
    """The pool rows with a positive cosine to ``query``, most similar first, never ``exclude``, at most k."""

    def cos(a: np.ndarray, b: np.ndarray) -> float:
        na, nb = math.sqrt(float(a @ a)), math.sqrt(float(b @ b))
        return float(a @ b) / (na * nb) if na and nb else 0.0

    sims = sorted(((cos(query, row), j) for j, row in enumerate(pool) if j != exclude), key=lambda t: -t[0])
    return [j for c, j in sims[:k] if c > 0]


@pytest.mark.parametrize("budget", [1, 9, 10_000])
@pytest.mark.parametrize("seed", range(3))
def test_nearest_in_pool_matches_a_naive_search(budget: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_pool, n_items, k = 20, 9, 4
    pool = (rng.random((n_pool, n_items)) * (rng.random((n_pool, n_items)) < 0.4)).astype(np.float32)
    # two items at least in every row: no two rows are parallel, so no two cosines tie
    pool[np.arange(n_pool), rng.integers(0, n_items, n_pool)] = rng.random(n_pool) + 0.1
    pool[np.arange(n_pool), rng.integers(0, n_items, n_pool)] = rng.random(n_pool) + 0.1
    queries = (rng.random((6, n_items)) * (rng.random((6, n_items)) < 0.4)).astype(np.float32)
    queries[5] = 0.0  # a visitor with no basket has no neighbour
    exclude = np.array([3, -1, 0, 19, -1, 2], np.int64)
    idx, sim = nearest_in_pool(
        row_normalised(sp.csr_matrix(pool)).tocsc(),
        row_normalised(sp.csr_matrix(queries)),
        exclude,
        k,
        block_budget=budget,
    )
    for q in range(len(queries)):
        want = ref_nearest(pool, queries[q], int(exclude[q]), k)
        got = [int(j) for j in idx[q] if j >= 0]
        assert got == want
        assert (idx[q, len(want) :] == -1).all()
        assert (sim[q, len(want) :] == 0).all()
        assert (np.diff(sim[q, : len(want)]) <= 1e-7).all()  # most similar first


def test_a_larger_k_than_the_pool_takes_every_row_sharing_an_item() -> None:
    pool = sp.csr_matrix(np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], np.float32))
    query = row_normalised(sp.csr_matrix(np.array([[1.0, 0.0]], np.float32)))
    idx, sim = nearest_in_pool(row_normalised(pool).tocsc(), query, np.array([0]), 5)
    # row 0 is the visitor's own; row 2 shares nothing
    assert idx.tolist() == [[1, -1, -1, -1, -1]]
    np.testing.assert_allclose(sim[0, 0], 1 / math.sqrt(2), rtol=1e-6)


def test_neighbour_mean_by_hand() -> None:
    pool = sp.csr_matrix(np.array([[1.0, 0.0, 2.0], [0.0, 4.0, 0.0], [3.0, 0.0, 0.0]], np.float32))
    got = neighbour_mean(pool, np.array([[0, 2, -1], [-1, -1, -1], [1, -1, -1]], np.int64)).toarray()
    np.testing.assert_allclose(got, [[2.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 4.0, 0.0]])


def test_day_baskets_are_the_visitors_calendar_days() -> None:
    # visitor 0 buys item 0 and item 1 on day 2 (two invoices), item 1 on day 5; visitor 1 item 2 on day 2
    p = TifuParams(group_size=7, within_decay=0.5)
    got = day_basket_vectors(
        np.array([0, 0, 0, 1]),
        np.array([0, 1, 1, 2]),
        np.array([2 * DAY + 10, 2 * DAY + 50_000, 5 * DAY, 2 * DAY]),
        n_visitors=2,
        n_items=3,
        params=p,
    ).toarray()
    want = [ref_vector([{0, 1}, {1}], p, 3), ref_vector([{2}], p, 3)]
    np.testing.assert_allclose(got, want, rtol=1e-6)


def test_ties_at_the_kth_value_keep_the_lowest_columns() -> None:
    s = np.array([[0.5, 0.9, 0.5, 0.0, 0.5], [0.0, 0.0, 0.0, 0.2, 0.0]], np.float32)
    assert top_mask(s, 2).tolist() == [
        [True, True, False, False, False],
        [False, False, False, True, False],  # a zero is never kept
    ]
    assert top_mask(s, 9).tolist() == (s > 0).tolist()


def test_unit_values_scale_each_row_and_keep_empty_rows() -> None:
    got = unit_values(np.array([3.0, 4.0, 2.0, 0.0]), np.array([0, 2, 2, 4]))
    np.testing.assert_allclose(got, [0.6, 0.8, 1.0, 0.0], rtol=1e-7)
    assert got.dtype == np.float32


def _pool_with_ties(rng: np.random.Generator, n_pool: int, n_items: int) -> np.ndarray:
    """Random rows, a third of them copies of others (so that cosines tie exactly)."""
    pool = (rng.random((n_pool, n_items)) * (rng.random((n_pool, n_items)) < 0.3)).astype(np.float32)
    copies = rng.choice(n_pool, n_pool // 3, replace=False)
    pool[copies] = pool[rng.integers(0, n_pool, len(copies))]
    return pool


@pytest.mark.parametrize("seed", range(25))
def test_the_request_path_search_picks_what_the_batch_search_picks(seed: int) -> None:
    """``nearest_one`` (one visitor, no sparse product) gives ``nearest_in_pool``'s rows in its order, ties
    included: the neighbours a visitor is served with are those their evaluation counted."""
    rng = np.random.default_rng(seed)
    n_pool, n_items, k = 40, 12, int(rng.integers(1, 8))
    pool = row_normalised(sp.csr_matrix(_pool_with_ties(rng, n_pool, n_items))).tocsc()
    queries = sp.csr_matrix(_pool_with_ties(rng, 10, n_items) * 3.0)
    exclude = rng.integers(-1, n_pool, 10)
    idx, _ = nearest_in_pool(
        pool, row_normalised(queries), exclude, k, block_budget=int(rng.integers(1, 500))
    )
    for q in range(10):
        row = queries[q]
        got = nearest_one(pool, row.indices.astype(np.int64), row.data, int(exclude[q]), k)
        assert got.tolist() == [int(j) for j in idx[q] if j >= 0]


@pytest.mark.parametrize("seed", range(10))
def test_one_visitors_day_baskets_are_the_batch_row(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    items = rng.integers(0, 15, n)
    ts = np.sort(rng.uniform(0, 40 * DAY, n))
    p = TifuParams(group_size=int(rng.integers(1, 5)), within_decay=0.8, group_decay=0.6)
    want = day_basket_vectors(np.zeros(n, np.int64), items, ts, n_visitors=1, n_items=15, params=p)
    idx, vals = day_basket_vector(items, ts, p)
    assert idx.tolist() == want.indices.tolist()
    np.testing.assert_allclose(vals, want.data, rtol=1e-6)
    assert day_basket_vector(np.zeros(0, np.int64), np.zeros(0), p)[0].size == 0
