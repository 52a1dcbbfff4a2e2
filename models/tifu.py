"""TIFU-KNN (Hu, He, Gao, Zhang, "Modeling Personalized Item Frequency Information for Next-basket
Recommendation", SIGIR 2020), vectorised with scipy.sparse.

A visitor's baskets, oldest first, are cut into groups of ``group_size`` (m) consecutive baskets counted
back from the latest one (the oldest group may hold fewer). A basket is a binary item vector. Within a
group, a basket followed by j later baskets of its group weighs ``within_decay`` (r_b) ** j and the group
vector is the mean of its weighted baskets; the group followed by g later groups weighs ``group_decay``
(r_g) ** g and the visitor's vector is the mean of the weighted group vectors. The prediction blends the
visitor's vector with the mean vector of the ``neighbours`` (k) most cosine-similar other visitors:
``alpha * own + (1 - alpha) * mean(neighbours)``. Visitors with nothing in common (cosine 0) are not
neighbours; the mean is over those found (at most k).

``TIFU_DEFAULTS`` are the settings of the authors' published quick start (github.com/HaojiHu/TIFUKNN,
README: ``python TIFUKNN.py ... 300 0.9 0.7 0.7 7 10`` = 300 neighbours, within-group decay 0.9,
across-group decay 0.7, alpha 0.7, group size 7, top 10).

The authors' script differs in details from the definition above, which this module follows: it cuts a
history of at least m baskets into m groups of about equal size (fewer baskets: one group each), decays
baskets by r_b over the whole history rather than within their group, and finds neighbours by Euclidean
distance among a training subset of users.
"""

from __future__ import annotations

import math

import msgspec
import numpy as np
import scipy.sparse as sp

from models.domain import DAY
from models.ranges import concat_ranges


class TifuParams(msgspec.Struct, frozen=True, kw_only=True):
    """TIFU-KNN's hyperparameters (see the module docstring)."""

    neighbours: int = 300
    within_decay: float = 0.9
    group_decay: float = 0.7
    alpha: float = 0.7
    group_size: int = 7


TIFU_DEFAULTS = TifuParams()

#: similarities one block of the neighbour search may hold ([rows, visitors]; with the float64 product and
#: the masks of the top-k choice about 24 bytes each)
_BLOCK_BUDGET = 10_000_000


def basket_keys(visitor: np.ndarray, session: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """int64 [n]: each event's basket: its session (an invoice) when known (>= 0), else the visitor's
    calendar day (UTC), as the complements table counts baskets (``models.sources.fit_item_tables``)."""
    day = np.floor(ts / DAY).astype(np.int64)
    return np.where(session >= 0, session, -(visitor.astype(np.int64) * 100_000 + day) - 2)


def user_vectors(
    visitor: np.ndarray,
    item: np.ndarray,
    basket: np.ndarray,
    ts: np.ndarray,
    *,
    n_visitors: int,
    n_items: int,
    params: TifuParams = TIFU_DEFAULTS,
) -> sp.csr_matrix:
    """csr float32 [n_visitors, n_items]: every visitor's time-decayed basket average.

    Aligned inputs of length n (the basket events only): visitor int [n], item int [n], basket int64 [n]
    (``basket_keys``), ts float64 [n]. Baskets are ordered by their first event; an item twice in one
    basket counts once. Visitors without events get an empty row.
    """
    if len(visitor) == 0:
        return sp.csr_matrix((n_visitors, n_items), dtype=np.float32)
    v = visitor.astype(np.int64)
    # one row per (visitor, basket), ordered by visitor then the basket's first event
    key = np.stack([v, basket.astype(np.int64)], axis=1)
    uniq, inv = np.unique(key, axis=0, return_inverse=True)
    inv = inv.ravel()
    first = np.full(len(uniq), np.inf)
    np.minimum.at(first, inv, ts)
    order = np.lexsort((uniq[:, 1], first, uniq[:, 0]))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order))
    b_vis = uniq[order, 0]
    n_b = np.bincount(b_vis, minlength=n_visitors)
    start = np.concatenate([[0], np.cumsum(n_b)[:-1]])
    # baskets after this one (0 = the latest), its group counted from the latest and place in the group
    after = n_b[b_vis] - 1 - (np.arange(len(order)) - start[b_vis])
    group, within = after // params.group_size, after % params.group_size
    n_groups = -(-n_b[b_vis] // params.group_size)
    oldest = group == n_groups - 1
    in_group = np.where(oldest, n_b[b_vis] - params.group_size * (n_groups - 1), params.group_size)
    weight = (
        params.within_decay**within / in_group * params.group_decay**group / n_groups
    )  # float64 [baskets], by sorted basket
    cells = np.unique(np.stack([rank[inv], item.astype(np.int64)], axis=1), axis=0)
    w = weight[cells[:, 0]]
    out = sp.csr_matrix((w, (b_vis[cells[:, 0]], cells[:, 1])), shape=(n_visitors, n_items), dtype=np.float64)
    out.sum_duplicates()
    return sp.csr_matrix(out, dtype=np.float32)


def day_basket_vectors(
    visitor: np.ndarray,
    item: np.ndarray,
    ts: np.ndarray,
    *,
    n_visitors: int,
    n_items: int,
    params: TifuParams = TIFU_DEFAULTS,
) -> sp.csr_matrix:
    """``user_vectors`` with each visitor's calendar days (UTC) as the baskets: what the request path can
    rebuild from a visitor's purchases alone (events carry no invoice there). Aligned purchases: visitor
    int [n], item int [n], ts float64 [n]; csr float32 [n_visitors, n_items]."""
    day = np.floor(np.asarray(ts, np.float64) / DAY).astype(np.int64)
    return user_vectors(visitor, item, day, ts, n_visitors=n_visitors, n_items=n_items, params=params)


def day_basket_vector(
    items: np.ndarray, ts: np.ndarray, params: TifuParams = TIFU_DEFAULTS
) -> tuple[np.ndarray, np.ndarray]:
    """``day_basket_vectors`` of one visitor, the request path's form: (item rows int64 [p] sorted, values
    float32 [p]) from their aligned purchases (items int [n], ts float64 [n]). One pass of plain Python
    over the visitor's purchases (a handful: a numpy call costs more than the loop body), with the batch
    form's float64 weights, summed in the same order (oldest basket first)."""
    days: dict[int, set[int]] = {}
    for item, t in zip(np.asarray(items).tolist(), np.asarray(ts, np.float64).tolist(), strict=True):
        days.setdefault(math.floor(t / DAY), set()).add(int(item))
    m, n_b = params.group_size, len(days)
    n_groups = -(-n_b // m)
    summed: dict[int, float] = {}
    for i, day in enumerate(sorted(days)):
        group, within = divmod(n_b - 1 - i, m)  # baskets after this one (0 = the latest), by group
        in_group = n_b - m * (n_groups - 1) if group == n_groups - 1 else m
        weight = params.within_decay**within / in_group * params.group_decay**group / n_groups
        for item in days[day]:
            summed[item] = summed.get(item, 0.0) + weight
    rows = sorted(summed)
    return np.array(rows, np.int64), np.array([summed[r] for r in rows], np.float32)


def unit_values(data: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """float32 [nnz]: the values ``data`` (float [nnz]) of the rows ``indptr`` (int [r + 1], csr-style)
    delimits, each row scaled to unit L2 norm (an all-zero row stays zero). One computation for the batch
    (``row_normalised``) and the request path (``nearest_one``): float64 sums in the same order, so that
    both give the same float32 values to the bit."""
    v = np.asarray(data, np.float64)
    bounds = np.asarray(indptr, np.int64)
    counts = bounds[1:] - bounds[:-1]
    if len(v) == 0:
        return np.zeros(0, np.float32)
    starts = bounds[:-1][counts > 0]
    sq = np.zeros(len(counts))
    sq[counts > 0] = np.add.reduceat(v * v, starts)
    norm = np.repeat(np.sqrt(sq), counts)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0).astype(np.float32)


def row_normalised(u: sp.csr_matrix) -> sp.csr_matrix:
    """csr float32: ``u`` with every non-empty row scaled to unit L2 norm (cosine by dot products)."""
    c = sp.csr_matrix(u, dtype=np.float32)
    c.sum_duplicates()
    return sp.csr_matrix((unit_values(c.data, c.indptr), c.indices, c.indptr), shape=c.shape)


def nearest_neighbours(
    normed: sp.csr_matrix, rows: np.ndarray, k: int, *, block_budget: int = _BLOCK_BUDGET
) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [r, k] neighbour rows, float32 [r, k] their cosine) of each of ``rows`` (int [r]) among all
    rows of ``normed`` (``row_normalised``), a row never its own neighbour: ``nearest_in_pool`` with the
    rows as their own queries."""
    rows = np.asarray(rows, np.int64)
    return nearest_in_pool(normed.tocsc(), normed[rows], rows, k, block_budget=block_budget)


def nearest_in_pool(
    pool_by_item: sp.csc_matrix,
    queries: sp.csr_matrix,
    exclude: np.ndarray,
    k: int,
    *,
    block_budget: int = _BLOCK_BUDGET,
) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [q, k] pool rows, float32 [q, k] their cosine): the ``k`` rows of the pool (``pool_by_item``:
    csc [n_pool, n_items] of unit rows, ``row_normalised``) most cosine-similar to each row of ``queries``
    (csr [q, n_items] of unit rows), never the pool row ``exclude`` names (int64 [q]; -1: none), e.g. the
    visitor asking. Exact: brute force in blocks of queries (a sparse product, ``top_mask``), each block
    at most ``block_budget`` similarities. Where fewer than k pool rows share anything with a query, the
    rest are -1 with cosine 0. Of cosines tied at the k-th, the lower pool rows are kept (``top_mask``)."""
    n = pool_by_item.shape[0]
    q_n = queries.shape[0]
    k_eff = max(0, min(k, n))
    idx_out = np.full((q_n, k), -1, np.int64)
    sim_out = np.zeros((q_n, k), np.float32)
    if k_eff == 0 or q_n == 0:
        return idx_out, sim_out
    exclude = np.asarray(exclude, np.int64)
    step = max(1, block_budget // max(n, 1))
    for lo in range(0, q_n, step):
        block = queries[lo : lo + step]
        b = block.shape[0]
        # similarities as sparse [n, items of the block] x dense [items of the block, b]: popular items
        # make the product all but dense, which a sparse x sparse product builds slowly. float64 sums
        # column by column, in the order ``nearest_one`` sums them: the same cosines to the bit.
        cols = np.unique(block.indices)
        dense = block[:, cols].toarray().astype(np.float64)
        pool = sp.csc_matrix(pool_by_item[:, cols], dtype=np.float64)
        s = np.ascontiguousarray((pool @ dense.T).T, dtype=np.float32).reshape(b, n)
        ex = exclude[lo : lo + b]
        own = (ex >= 0) & (ex < n)
        s[np.flatnonzero(own), ex[own]] = 0.0
        r, c = np.nonzero(top_mask(s, k_eff))
        _place(r, c, s[r, c], idx_out[lo : lo + b], sim_out[lo : lo + b])
    return idx_out, sim_out


def top_mask(s: np.ndarray, k: int) -> np.ndarray:
    """bool [b, n]: each row's ``k`` largest positive values of ``s`` (float32 [b, n]); of values tied at
    the k-th, those in the lowest columns. The rule ``nearest_in_pool`` and ``nearest_one`` share, so that
    a tie picks the same neighbours on the batch and the request path."""
    n = s.shape[1]
    if k >= n:
        return s > 0
    # the k-th largest: partitioned at n - k (measured several times faster than at k - 1 of -s)
    kth = np.partition(s, n - k, axis=1)[:, n - k : n - k + 1]
    above, tied = s > kth, s == kth
    room = k - above.sum(axis=1, keepdims=True)
    return (above | (tied & (np.cumsum(tied, axis=1) <= room))) & (s > 0)


def _place(r: np.ndarray, c: np.ndarray, v: np.ndarray, idx_out: np.ndarray, sim_out: np.ndarray) -> None:
    """Write the kept (row r, column c, cosine v) of a block into ``idx_out`` / ``sim_out`` [b, k], each
    row's most similar first (ties: the lower column first)."""
    order = np.lexsort((c, -v, r))
    r, c, v = r[order], c[order], v[order]
    start = np.searchsorted(r, np.arange(idx_out.shape[0]))
    slot = np.arange(len(r)) - start[r]
    idx_out[r, slot] = c
    sim_out[r, slot] = v


def nearest_one(
    pool_by_item: sp.csc_matrix, items: np.ndarray, values: np.ndarray, exclude: int, k: int
) -> np.ndarray:
    """int64 [<= k]: ``nearest_in_pool`` for one query given as its sorted distinct columns ``items``
    (int64 [m]) and their values (float [m], made unit here as ``row_normalised`` does), most similar
    first; the request path's form. No sparse product: the pool's entries in the query's columns summed
    per pool row, and a partial sort of the rows that share a column only."""
    n = pool_by_item.shape[0]
    if len(items) == 0 or n == 0 or k <= 0:
        return np.zeros(0, np.int64)
    # ``unit_values`` of one row, without its bookkeeping for many: the same reduction, so the same bits
    v = np.asarray(values, np.float64)
    norm = math.sqrt(float(np.add.reduceat(v * v, _FIRST)[0]))
    if norm == 0:
        return np.zeros(0, np.int64)
    unit = (v / norm).astype(np.float32).astype(np.float64)
    starts = pool_by_item.indptr[items]
    counts = pool_by_item.indptr[items + 1] - starts
    at = concat_ranges(starts, counts)
    rows = pool_by_item.indices[at]
    weights = pool_by_item.data[at].astype(np.float64) * np.repeat(unit, counts)
    sums = np.bincount(rows, weights=weights, minlength=n).astype(np.float32)
    if 0 <= exclude < n:
        sums[exclude] = 0.0
    shared = np.flatnonzero(sums > 0)
    s = sums[shared]
    if len(shared) > k:  # else every row sharing an item is a neighbour
        keep = np.flatnonzero(top_mask(s[None, :], k)[0])
        shared, s = shared[keep], s[keep]
    return shared[np.lexsort((shared, -s))].astype(np.int64)


#: the one segment of a one-row ``np.add.reduceat``
_FIRST = np.zeros(1, np.intp)


def neighbour_mean(pool: sp.csr_matrix, idx: np.ndarray) -> sp.csr_matrix:
    """csr float32 [q, n_items]: per row of ``idx`` (int64 [q, k] rows of ``pool``, -1: none, as
    ``nearest_in_pool`` gives them), the mean of those rows of ``pool`` (csr [n_pool, n_items]); an empty
    row where none was found."""
    found = idx >= 0
    count = found.sum(axis=1)
    r = np.repeat(np.arange(len(idx)), count)
    w = np.repeat(1.0 / np.maximum(count, 1), count)
    mean_of = sp.csr_matrix((w, (r, idx[found])), shape=(len(idx), pool.shape[0]), dtype=np.float32)
    return sp.csr_matrix(mean_of @ pool, dtype=np.float32)


def predict(
    vectors: sp.csr_matrix,
    rows: np.ndarray,
    params: TifuParams = TIFU_DEFAULTS,
    normed: sp.csr_matrix | None = None,
) -> sp.csr_matrix:
    """csr float32 [r, n_items]: ``alpha * own + (1 - alpha) * mean of the neighbours' vectors`` for each of
    ``rows`` (int [r] rows of ``vectors``, from ``user_vectors``; ``normed``: their ``row_normalised``,
    computed when not given)."""
    rows = np.asarray(rows, np.int64)
    unit = row_normalised(vectors) if normed is None else normed
    idx, _ = nearest_neighbours(unit, rows, params.neighbours)
    own = vectors[rows]
    return sp.csr_matrix(
        params.alpha * own + (1.0 - params.alpha) * neighbour_mean(vectors, idx), dtype=np.float32
    )
