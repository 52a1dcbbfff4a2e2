"""Candidate sources: item-level tables fitted from history, and the per-visitor scores they give.

Every score function takes ``Profiles`` for ``u`` visitors and returns float32 [u, n_items] (dense: the
blend adds them up per item; ``u`` is a batch, so memory stays bounded by the caller's batch size).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import scipy.sparse as sp

from models.dataset import EventLog
from models.domain import CatalogItem, EventType
from models.profiles import DAY, Profiles
from models.serving_rules import DEFAULT_SERVING, ServingRules
from models.tifu import nearest_in_pool, neighbour_mean, row_normalised
from models.weights import EventWeights, positive_codes


def top_n_per_row(m: sp.csr_matrix, n: int) -> sp.csr_matrix:
    """Keep the ``n`` largest entries of every row of a csr matrix (vectorised, no loop over rows)."""
    m = m.tocsr()
    m.eliminate_zeros()
    rows = np.repeat(np.arange(m.shape[0]), np.diff(m.indptr))
    order = np.lexsort((-m.data, rows))
    rank = np.arange(len(order)) - m.indptr[rows[order]]
    keep = order[rank < n]
    out = sp.csr_matrix((m.data[keep], (rows[keep], m.indices[keep])), shape=m.shape, dtype=np.float32)
    out.sort_indices()
    return out


def row_max_normalise(a: np.ndarray) -> np.ndarray:
    """Scale every row of float32 [u, n] into [0, 1] by its maximum (rows of zeros stay zero)."""
    mx = a.max(axis=1, keepdims=True)
    return np.divide(a, mx, out=np.zeros_like(a), where=mx > 0)


def cosine_item_similarity(user_item: sp.csr_matrix, top_n: int, shrink: float = 10.0) -> sp.csr_matrix:
    """Item-item cosine similarity from a [visitors, items] matrix, shrunk towards 0 for rare pairs and
    pruned to ``top_n`` neighbours per item. Returns csr float32 [items, items] with a zero diagonal."""
    x = user_item.tocsc().astype(np.float32)
    co = (x.T @ x).tocsr()
    norms = np.sqrt(co.diagonal()).astype(np.float32)
    co.setdiag(0)
    co.eliminate_zeros()
    coo = co.tocoo()
    denom = norms[coo.row] * norms[coo.col] + shrink
    sim = sp.csr_matrix((coo.data / denom, (coo.row, coo.col)), shape=co.shape, dtype=np.float32)
    return top_n_per_row(sim, top_n)


def basket_cooccurrence(
    rows: np.ndarray, items: np.ndarray, n_rows: int, n_items: int, top_n: int
) -> sp.csr_matrix:
    """Bought together: P(j in basket | i in basket) from basket x item incidence, zero diagonal,
    pruned to ``top_n`` per item. rows int[n] basket index, items int[n].
    Returns csr float32 [items, items]."""
    b = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, items)), shape=(n_rows, n_items))
    b.sum_duplicates()
    b.data[:] = 1.0  # an item twice in one basket counts once
    co = (b.T @ b).tocsr()
    support = co.diagonal().astype(np.float32)
    co.setdiag(0)
    co.eliminate_zeros()
    coo = co.tocoo()
    # conditional probability with a small prior so single co-occurrences of rare items do not dominate
    cond = coo.data / (support[coo.row] + 5.0)
    m = sp.csr_matrix((cond, (coo.row, coo.col)), shape=co.shape, dtype=np.float32)
    return top_n_per_row(m, top_n)


@dataclass(frozen=True)
class ItemTables:
    """Item-level statistics learned from a training log (all float32, length/shape by ``n_items``).

    popularity    [n_items]  distinct visitors with a positive event
    trending      [n_items]  positive events in the last ``trend_days`` before ``now``, decayed by age
    repeat_rate   [n_items]  share of the item's buyers who bought it on two or more distinct days
    complements   csr [n_items, n_items]  bought/carted together in one basket or session
    similar       csr [n_items, n_items]  cosine over visitors' interest
    known         bool[n_items]  the item occurs in the training events
    category      int32 [n_items] the item's catalog category code (-1: none), from ``category_codes``;
                  None: no categories at all
    as_of         the time (epoch seconds) popularity and trending were counted up to: the end of the
                  model's data, which "trending" reasons are dated by; None: unknown
    category_repeat  float32 [n_categories] by category code: share of the category's buyers who bought in
                  it on two or more distinct days (a kettle's category: few; tea, or the bags a wholesaler
                  restocks in many designs: most); None: not counted (a model fitted before it)
    repeatable    bool [n_items] the catalog says the item is bought again and again
                  (``CatalogItem.repeatable``, from the catalog as ``category``); None: not known
    visitor_baskets  csr float32 [n_visitors, n_items]: every training visitor's ``basket_frequency``
                  (``Profiles``) at ``as_of``, rows in the order of the model's visitors (the user
                  vocabulary's ``visitor:`` features), the pool the basket-neighbours source searches;
                  None: not kept (that source is then empty)
    """

    popularity: np.ndarray
    trending: np.ndarray
    repeat_rate: np.ndarray
    complements: sp.csr_matrix
    similar: sp.csr_matrix
    known: np.ndarray
    category: np.ndarray | None = None
    as_of: float | None = None
    category_repeat: np.ndarray | None = None
    repeatable: np.ndarray | None = None
    visitor_baskets: sp.csr_matrix | None = None

    @property
    def n_items(self) -> int:
        return len(self.popularity)

    def item_rebuy_rate(self, items: np.ndarray) -> np.ndarray:
        """float32 [m]: how likely a buyer of each of ``items`` (int64 [m] rows) buys that item again: its
        ``repeat_rate``, or 1 where the catalog says it is ``repeatable``."""
        rate = np.clip(self.repeat_rate[items], 0.0, 1.0).astype(np.float32)
        if self.repeatable is not None:
            rate[self.repeatable[items]] = 1.0
        return rate

    def rebuy_rate(self, items: np.ndarray) -> np.ndarray:
        """float32 [m]: how likely a buyer of each of ``items`` (int64 [m] rows) buys in its line again: the
        larger of ``item_rebuy_rate`` and its category's ``category_repeat`` (an item without a category,
        or of one the model never counted, has its own rate only)."""
        rate = self.item_rebuy_rate(items)
        if self.category is None or self.category_repeat is None or len(self.category_repeat) == 0:
            return rate
        code = self.category[items]
        counted = (code >= 0) & (code < len(self.category_repeat))
        cat = np.where(counted, self.category_repeat[np.where(counted, code, 0)], 0.0)
        return np.maximum(rate, cat).astype(np.float32)

    def with_new_items(self, m: int) -> ItemTables:
        """The tables with ``m`` items appended that have no events: zero popularity, trend and repeat
        rate, no co-occurrence or similarity entries, not ``known``, no category (so no substitutes), not
        ``repeatable``."""

        def pad(x: sp.csr_matrix) -> sp.csr_matrix:
            n = x.shape[0] + m
            indptr = np.concatenate([x.indptr, np.full(m, x.indptr[-1], x.indptr.dtype)])
            return sp.csr_matrix((x.data, x.indices, indptr), shape=(n, n))

        def zeros(a: np.ndarray) -> np.ndarray:
            return np.concatenate([a, np.zeros(m, a.dtype)])

        return ItemTables(
            zeros(self.popularity),
            zeros(self.trending),
            zeros(self.repeat_rate),
            pad(self.complements),
            pad(self.similar),
            zeros(self.known),
            None if self.category is None else np.concatenate([self.category, np.full(m, -1, np.int32)]),
            as_of=self.as_of,
            category_repeat=self.category_repeat,
            repeatable=None
            if self.repeatable is None
            else np.concatenate([self.repeatable, np.zeros(m, bool)]),
            visitor_baskets=None
            if self.visitor_baskets is None
            else sp.csr_matrix(
                (self.visitor_baskets.data, self.visitor_baskets.indices, self.visitor_baskets.indptr),
                shape=(self.visitor_baskets.shape[0], self.n_items + m),
            ),
        )

    @cached_property
    def visitor_basket_index(self) -> sp.csc_matrix:
        """csc float32 [n_visitors, n_items]: ``visitor_baskets`` with unit rows, by item (the neighbour
        search's similarities are products with its columns); empty without ``visitor_baskets``."""
        if self.visitor_baskets is None:
            return sp.csc_matrix((0, self.n_items), dtype=np.float32)
        return sp.csc_matrix(row_normalised(self.visitor_baskets), dtype=np.float32)

    @cached_property
    def category_members(self) -> sp.csr_matrix:
        """csr float32 [n_categories, n_items]: a 1 for every item of each category. "Same category as"
        goes through it (gathered rows, or a product with its transpose) and never needs a
        [n_items, n_items] matrix."""
        cat = self.category if self.category is not None else np.full(self.n_items, -1, np.int32)
        has = np.flatnonzero(cat >= 0)
        n_cats = int(cat.max(initial=-1)) + 1
        return sp.csr_matrix(
            (np.ones(len(has), np.float32), (cat[has], has)), shape=(n_cats, self.n_items), dtype=np.float32
        )


def category_codes(catalog: Sequence[CatalogItem]) -> np.ndarray:
    """int32 [n_items]: each item's category as a code (categories numbered in sorted order; -1: none)."""
    names = sorted({c.category for c in catalog if c.category})
    code = {n: i for i, n in enumerate(names)}
    return np.array([code.get(c.category, -1) if c.category else -1 for c in catalog], dtype=np.int32)


def repeatable_flags(catalog: Sequence[CatalogItem]) -> np.ndarray:
    """bool [n_items]: ``CatalogItem.repeatable`` of each item."""
    return np.array([c.repeatable for c in catalog], dtype=bool).reshape(len(catalog))


def fit_item_tables(
    log: EventLog,
    now: float,
    weights: EventWeights,
    positive: frozenset[EventType],
    *,
    trend_days: float = 14.0,
    neighbours: int = 100,
) -> ItemTables:
    """Fit the item tables from the events of ``log`` before ``now``."""
    keep = log.ts < now
    v, it, ev, ts = log.visitor[keep], log.item[keep], log.event[keep], log.ts[keep]
    n_items = log.n_items
    pos = np.isin(ev, positive_codes(positive))

    pairs = np.unique(v[pos].astype(np.int64) * n_items + it[pos])
    popularity = np.bincount(pairs % n_items, minlength=n_items).astype(np.float32)

    age = (now - ts[pos]) / DAY
    recent = age <= trend_days
    trending = np.bincount(
        it[pos][recent], weights=np.exp(-age[recent] / (trend_days / 2)), minlength=n_items
    ).astype(np.float32)

    buy = ev == EventType.PURCHASE.code
    day = np.floor(ts[buy] / DAY).astype(np.int64)
    repeat_rate = _repeat_share(v[buy], it[buy], day, n_items)
    category = category_codes(log.catalog)
    in_cat = category[it[buy]] >= 0
    category_repeat = _repeat_share(
        v[buy][in_cat], category[it[buy][in_cat]], day[in_cat], int(category.max(initial=-1)) + 1
    )

    # baskets: the session when known, else the visitor's calendar day
    sess = log.session[keep]
    basket_key = np.where(
        sess >= 0, sess, -(v.astype(np.int64) * 100_000 + np.floor(ts / DAY).astype(np.int64)) - 2
    )
    _, basket = np.unique(basket_key[pos], return_inverse=True)
    complements = basket_cooccurrence(basket, it[pos], int(basket.max(initial=-1)) + 1, n_items, neighbours)

    w = weights.of(ev)
    interest = sp.csr_matrix((w, (v, it)), shape=(log.n_visitors, n_items), dtype=np.float32)
    interest.sum_duplicates()
    interest.data = np.log1p(np.maximum(interest.data, 0))
    interest.eliminate_zeros()
    similar = cosine_item_similarity(interest, neighbours)

    known = np.zeros(n_items, dtype=bool)
    known[np.unique(it)] = True
    return ItemTables(
        popularity,
        trending,
        repeat_rate,
        complements,
        similar,
        known,
        category,
        as_of=now,
        category_repeat=category_repeat,
        repeatable=repeatable_flags(log.catalog),
    )


def _repeat_share(visitor: np.ndarray, group: np.ndarray, day: np.ndarray, n_groups: int) -> np.ndarray:
    """float32 [n_groups]: per group (an item, a category), the share of its buyers who bought in it on
    two or more distinct days, from aligned purchases (visitor, group int [p], day int64 [p]); 0 without
    buyers."""
    if len(visitor) == 0:
        return np.zeros(n_groups, np.float32)
    key = visitor.astype(np.int64) * n_groups + group
    ids, days = np.unique(np.unique(np.stack([key, day], axis=1), axis=0)[:, 0], return_counts=True)
    buyers = np.bincount(ids % n_groups, minlength=n_groups)
    repeaters = np.bincount(ids[days >= 2] % n_groups, minlength=n_groups)
    return np.divide(repeaters, buyers, out=np.zeros(n_groups, np.float64), where=buyers > 0).astype(
        np.float32
    )


# -- per-visitor scores -------------------------------------------------------------------------------


def complement_matrix(tables: ItemTables, profiles: Profiles, recency_days: float) -> sp.csr_matrix:
    """csr float32 [u, n_items]: complements of what the visitor bought or has in the cart, recent first."""
    owned = profiles.purchase_age.copy()
    owned.data = np.exp(-owned.data / recency_days).astype(np.float32)
    anchors = (owned + profiles.cart).tocsr()
    return sp.csr_matrix(anchors @ tables.complements, dtype=np.float32)


def similar_matrix(tables: ItemTables, profiles: Profiles, recency_days: float) -> sp.csr_matrix:
    """csr float32 [u, n_items]: items similar to what the visitor showed interest in, recent first."""
    rec = profiles.touch_age.copy()
    rec.data = np.exp(-rec.data / recency_days).astype(np.float32)
    weights = profiles.interest.multiply(rec).tocsr()
    weights.data = np.log1p(weights.data)
    return sp.csr_matrix(weights @ tables.similar, dtype=np.float32)


def substitute_weights(rebuy: np.ndarray, age_days: np.ndarray, recency_days: float) -> np.ndarray:
    """float32 [m]: how strongly each bought item (its ``ItemTables.rebuy_rate`` [m] and days since its last
    purchase [m]) makes the rest of its category substitutes: recent purchases of items whose category
    buyers rarely buy in again count most (a kettle; not a tea, nor a wholesaler's restocked line)."""
    return (np.exp(-age_days / recency_days) * (1.0 - np.clip(rebuy, 0.0, 1.0))).astype(np.float32)


def bought_once(tables: ItemTables, items: np.ndarray) -> np.ndarray:
    """float32 [m]: 1 - ``ItemTables.item_rebuy_rate`` of ``items`` (int64 [m] rows). A substitute is
    something bought once in place of the purchase: an item of the kettle's category that is itself bought
    again and again (the garden's plant food beside a garden hose) is not one, whatever its category."""
    return 1.0 - tables.item_rebuy_rate(items)


def substitute_matrix(tables: ItemTables, profiles: Profiles, recency_days: float) -> sp.csr_matrix:
    """csr float32 [u, n_items] in [0, 1]: the other items of the categories of what the visitor bought
    recently and is unlikely to buy again (another kettle after a kettle), by ``substitute_weights`` summed
    per category and capped at 1, times ``bought_once`` of the item; items bought together with one of
    those purchases (the kettle's descaler, if it shares the category) are complements, not substitutes,
    and are left out, as are the purchases themselves."""
    bought = sp.csr_matrix(profiles.purchase_age, dtype=np.float32, copy=True)
    bought.data = substitute_weights(tables.rebuy_rate(bought.indices), bought.data, recency_days)
    bought.eliminate_zeros()
    members = tables.category_members
    alike = sp.csr_matrix(bought @ members.T @ members, dtype=np.float32)  # via categories, never I x I
    drop = sp.csr_matrix(bought @ tables.complements, dtype=np.float32) + bought
    drop.data[:] = 1.0
    out = sp.csr_matrix(alike - alike.multiply(drop), dtype=np.float32)
    out.eliminate_zeros()
    # not scaled per visitor: how recent the purchase is is the point (1 right after it, fading)
    np.minimum(out.data, 1.0, out=out.data)
    out.data *= bought_once(tables, out.indices)
    out.eliminate_zeros()
    return out


def substitutes_kept_out(
    tables: ItemTables, profiles: Profiles, retention: np.ndarray, rules: ServingRules
) -> sp.csr_matrix:
    """csr bool [u, n_items]: what retention never serves (``ServingRules.substitute_cutoff``): for the
    visitors at the retention stage (``retention`` bool [u]), the items whose ``substitute_matrix`` value
    reaches the cutoff; nothing for the others. ``LiveProfile.substitutes_at`` gives the same per request."""
    sub = substitute_matrix(tables, profiles, rules.substitute_recency_days)
    sub = sp.csr_matrix(sp.diags(np.asarray(retention, np.float32)) @ sub)
    out = sp.csr_matrix(sub >= np.float32(rules.substitute_cutoff), dtype=bool)
    out.eliminate_zeros()
    return out


def basket_neighbour_matrix(
    tables: ItemTables, profiles: Profiles, rules: ServingRules, own_rows: np.ndarray | None = None
) -> sp.csr_matrix:
    """csr float32 [u, n_items]: the mean ``basket_frequency`` of the ``rules.basket_neighbours`` training
    visitors (``tables.visitor_baskets``) most cosine-similar to each visitor's own (TIFU-KNN's neighbour
    part), never the visitor's own training row (``own_rows`` int64 [u], -1: none); empty rows for a
    visitor with no purchase or no neighbour sharing an item, and without ``visitor_baskets``."""
    u = profiles.n_visitors
    own = profiles.basket_frequency
    if tables.visitor_baskets is None or own.nnz == 0:
        return sp.csr_matrix((u, tables.n_items), dtype=np.float32)
    exclude = np.full(u, -1, np.int64) if own_rows is None else np.asarray(own_rows, np.int64)
    idx, _ = nearest_in_pool(
        tables.visitor_basket_index, row_normalised(own), exclude, rules.basket_neighbours
    )
    return neighbour_mean(tables.visitor_baskets, idx)


def similar_scores(
    tables: ItemTables, profiles: Profiles, recency_days: float = DEFAULT_SERVING.similar_recency_days
) -> np.ndarray:
    """float32 [u, n_items]: ``similar_matrix`` as a dense array."""
    return similar_matrix(tables, profiles, recency_days).toarray()


def row_max_normalise_sparse(m: sp.csr_matrix) -> sp.csr_matrix:
    """``row_max_normalise`` for a csr matrix with non-negative entries (stays sparse)."""
    m = sp.csr_matrix(m, dtype=np.float32, copy=True)
    m.eliminate_zeros()
    counts = np.diff(m.indptr)
    if m.nnz:
        mx = np.maximum.reduceat(m.data, m.indptr[:-1][counts > 0])
        m.data /= np.repeat(np.maximum(mx, 1e-12), counts[counts > 0])
    return m


def buy_again_scores(tables: ItemTables, profiles: Profiles) -> np.ndarray:
    """float32 [u, n_items]: the visitor's own purchases by frequency with popularity as tie-break.

    The tie-break term is < 1 so it never reorders different purchase counts.
    """
    counts = np.asarray(profiles.purchases.todense(), dtype=np.float32)
    pop = tables.popularity / (tables.popularity.max() + 1.0)
    return counts + (counts > 0) * pop[None, :]


def recency(m: sp.csr_matrix, days: float) -> sp.csr_matrix:
    """csr float32: exp(-age/days) where ``m`` holds ages (days)."""
    out = sp.csr_matrix(m, dtype=np.float32, copy=True)
    out.data = np.exp(-out.data / days).astype(np.float32)
    return out
