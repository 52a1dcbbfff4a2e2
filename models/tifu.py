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

import msgspec
import numpy as np
import scipy.sparse as sp

from models.domain import DAY


class TifuParams(msgspec.Struct, frozen=True, kw_only=True):
    """TIFU-KNN's hyperparameters (see the module docstring)."""

    neighbours: int = 300
    within_decay: float = 0.9
    group_decay: float = 0.7
    alpha: float = 0.7
    group_size: int = 7


TIFU_DEFAULTS = TifuParams()

#: dense float32 cells one block of the neighbour search may hold ([rows, visitors] similarities)
_BLOCK_BUDGET = 30_000_000


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


def row_normalised(u: sp.csr_matrix) -> sp.csr_matrix:
    """csr float32: ``u`` with every non-empty row scaled to unit L2 norm (cosine by dot products)."""
    norms = np.sqrt(np.asarray(u.multiply(u).sum(axis=1)).ravel())
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ u, dtype=np.float32)


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
    visitor asking. Exact: brute force in blocks of queries (a sparse product, ``argpartition``), each
    block at most ``block_budget`` similarities. Where fewer than k pool rows share anything with a query,
    the rest are -1 with cosine 0. Ties at the k-th cosine are broken by ``argpartition``'s order."""
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
        # make the product all but dense, which a sparse x sparse product builds slowly
        cols = np.unique(block.indices)
        dense = block[:, cols].toarray()
        s = np.ascontiguousarray((pool_by_item[:, cols] @ dense.T).T, dtype=np.float32).reshape(b, n)
        ex = exclude[lo : lo + b]
        own = (ex >= 0) & (ex < n)
        s[np.flatnonzero(own), ex[own]] = -np.inf
        # the k largest: partitioned at n - k (measured several times faster than at k - 1 of -s)
        part = (
            np.argpartition(s, n - k_eff, axis=1)[:, n - k_eff :]
            if k_eff < n
            else np.tile(np.arange(n), (b, 1))
        )
        vals = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1, kind="stable")
        part, vals = np.take_along_axis(part, order, axis=1), np.take_along_axis(vals, order, axis=1)
        found = vals > 0
        idx_out[lo : lo + b, :k_eff] = np.where(found, part, -1)
        sim_out[lo : lo + b, :k_eff] = np.where(found, vals, 0.0)
    return idx_out, sim_out


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
