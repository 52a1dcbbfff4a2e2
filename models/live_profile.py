"""One live visitor's profile and sparse features, for the request path: numpy over the visitor's own items.

``Profiles`` (scipy csr rows) is the batch form shared by training and evaluation; building six one-row csr
matrices and multiplying them with the item tables cost more than the rest of a request at 100k items. A
``LiveProfile`` holds the same quantities as small dense arrays over the ``m`` distinct items the visitor
touched (m is at most a few hundred), and ``features`` gives what ``blend.sparse_features`` gives, as
(column, item indices, values) triples. ``tests/models/test_live_profile.py`` checks both agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from models.blend import (
    BASKET_FREQUENCY,
    BASKET_NEIGHBOURS,
    BOUGHT_COUNT,
    BOUGHT_DECAYED,
    BOUGHT_RECENCY,
    COMPLEMENT,
    IN_CART,
    INTEREST,
    REPEAT,
    SIMILAR,
    SUBSTITUTE,
    TOUCH_RECENCY,
)
from models.domain import DAY, EventType
from models.profiles import PURCHASE_DECAY_DAYS
from models.ranges import concat_ranges
from models.serving_rules import ServingRules
from models.sources import ItemTables, bought_once, substitute_weights
from models.tifu import TIFU_DEFAULTS, TifuParams, day_basket_vector, nearest_one

_PURCHASE = EventType.PURCHASE.code
_CANCEL = EventType.CANCEL.code
_ADD = EventType.ADD_TO_CART.code
_REMOVE = EventType.REMOVE_FROM_CART.code

#: (feature column, item indices int64 [m], values float32 [m]) with indices unique and sorted
Entry = tuple[int, np.ndarray, np.ndarray]


def gather_rows(m: sp.csr_matrix, rows: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``weights @ m[rows]`` as (column indices int64 [p] sorted, values float32 [p] non-zero).

    rows int64 [r] row indices of csr ``m``; weights float [r]. One vectorised gather, no scipy product.
    """
    starts = m.indptr[rows]
    counts = m.indptr[rows + 1] - starts
    if not counts.any():
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    offsets = concat_ranges(starts, counts)  # every gathered entry's position in m.data
    cols = m.indices[offsets]
    vals = m.data[offsets] * np.repeat(np.asarray(weights, np.float64), counts)
    uniq, inv = np.unique(cols, return_inverse=True)
    summed = np.bincount(inv.ravel(), weights=vals, minlength=len(uniq)).astype(np.float32)
    keep = summed != 0
    return uniq[keep].astype(np.int64), summed[keep]


def _found(sorted_rows: np.ndarray, items: np.ndarray) -> np.ndarray:
    """bool [len(sorted_rows)]: which of ``sorted_rows`` (int64 sorted) are among ``items`` (a binary search
    of each item, as ``scoring.positions_in``, which imports this module)."""
    hit = np.zeros(len(sorted_rows), bool)
    if len(sorted_rows) and len(items):
        pos = np.minimum(np.searchsorted(sorted_rows, items), len(sorted_rows) - 1)
        hit[pos[sorted_rows[pos] == items]] = True
    return hit


def best_anchors(m: sp.csr_matrix, anchors: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """int64 [t]: for each of ``targets`` (column indices), the position in ``anchors`` (int64 [a] row
    indices of csr ``m``) of the anchor row with the largest entry in that column; -1 where none has one.

    For the handful of items a response explains: one [entries, t] comparison, no sort.
    """
    starts = m.indptr[anchors]
    counts = m.indptr[anchors + 1] - starts
    if not counts.any() or len(targets) == 0:
        return np.full(len(targets), -1, np.int64)
    offsets = concat_ranges(starts, counts)
    match = m.indices[offsets][:, None] == np.asarray(targets)[None, :]
    vals = np.where(match, m.data[offsets][:, None], -np.inf)
    best = vals.argmax(axis=0)
    anchor = np.repeat(np.arange(len(anchors)), counts)[best]
    return np.where(np.isfinite(vals[best, np.arange(len(targets))]), anchor, -1).astype(np.int64)


def _basket_frequency(
    rows: np.ndarray, items: np.ndarray, codes: np.ndarray, ts: np.ndarray, params: TifuParams
) -> np.ndarray:
    """float32 [m]: ``Profiles.basket_frequency`` of each of ``rows`` (int64 [m] sorted, every purchased
    item among them) from the visitor's aligned events (items, codes, ts [n])."""
    bought = codes == _PURCHASE
    out = np.zeros(len(rows), np.float32)
    if bought.any():
        idx, vals = day_basket_vector(items[bought], ts[bought], params)
        out[np.searchsorted(rows, idx)] = vals
    return out


def max_normalised(idx: np.ndarray, vals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Scale non-negative ``vals`` to a maximum of 1 (``row_max_normalise_sparse`` for one row)."""
    if len(vals) == 0:
        return idx, vals
    return idx, (vals / max(float(vals.max()), 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class LiveProfile:
    """The ``Profiles`` quantities of one visitor over the items they touched (plus their cart).

    items           int64 [m]  sorted distinct catalog rows
    interest        float32 [m] summed event weights clipped at 0
    touch_age       float32 [m] days since the last event on the item + 1e-3 (0: cart-only item, untouched)
    purchases       float32 [m] net purchases clipped at 0
    purchase_age    float32 [m] days since the last purchase + 1e-3 (0: never bought)
    cart            float32 [m] 1 where the item is in the cart
    purchase_decay  float32 [m] sum of exp(-age / PURCHASE_DECAY_DAYS) over the item's purchases
    basket_frequency float32 [m] the ``Profiles.basket_frequency`` of the item
    """

    items: np.ndarray
    interest: np.ndarray
    touch_age: np.ndarray
    purchases: np.ndarray
    purchase_age: np.ndarray
    cart: np.ndarray
    purchase_decay: np.ndarray
    basket_frequency: np.ndarray

    @property
    def is_new(self) -> bool:
        """No item touched at all (a cart alone does not make a visitor known: ``blend.is_new``)."""
        return not bool((self.touch_age > 0).any())

    @classmethod
    def from_arrays(
        cls,
        items: np.ndarray,
        codes: np.ndarray,
        ts: np.ndarray,
        now: float,
        weights: np.ndarray,
        baskets: TifuParams = TIFU_DEFAULTS,
    ) -> LiveProfile:
        """From aligned event arrays (items int64 [n] catalog rows, codes int8 [n], ts float64 [n]) with
        every event at or before ``now``; the cart is derived from the events as ``Profiles`` does.
        weights: float [n_event_types] the weight of each event code (``EventWeights.vector()``, which the
        caller computes once per model, not per visitor); baskets: the decays of ``basket_frequency``
        (``ServingRules.basket_params``).

        One pass of plain Python over the visitor's events (a few dozen): on arrays that small, each numpy
        call costs more than the loop body.
        """
        w = np.asarray(weights, np.float64).tolist()
        decay_s = PURCHASE_DECAY_DAYS * DAY
        inf = float("inf")
        # per item: [interest, last event, net purchases, last purchase, purchase decay, in cart]
        acc: dict[int, list[float]] = {}
        order = np.argsort(ts, kind="stable").tolist()  # time order (ties: input order) decides the cart
        it, cs, tl = items.tolist(), codes.tolist(), ts.tolist()
        for k in order:
            i, c, t = it[k], cs[k], tl[k]
            a = acc.get(i)
            if a is None:
                a = acc[i] = [0.0, -inf, 0.0, -inf, 0.0, 0.0]
            a[0] += w[c]
            a[1] = max(a[1], t)
            if c == _PURCHASE:
                a[2] += 1.0
                a[3] = max(a[3], t)
                a[4] += math.exp(-(now - t) / decay_s)
                a[5] = 0.0
            elif c == _CANCEL:
                a[2] -= 1.0
            elif c == _ADD:
                a[5] = 1.0
            elif c == _REMOVE:
                a[5] = 0.0
        keys = sorted(acc)
        # one float64 [m, 6] array, then its columns (one conversion instead of six)
        table = np.array([acc[i] for i in keys], dtype=np.float64).reshape(len(keys), 6)
        f32 = np.float32
        last, last_p = table[:, 1], table[:, 3]
        rows = np.array(keys, dtype=np.int64)
        return cls(
            rows,
            np.maximum(table[:, 0], 0).astype(f32),
            np.where(np.isfinite(last), (now - last) / DAY + 1e-3, 0.0).astype(f32),
            np.maximum(table[:, 2], 0).astype(f32),
            np.where(np.isfinite(last_p), (now - last_p) / DAY + 1e-3, 0.0).astype(f32),
            table[:, 5].astype(f32),
            table[:, 4].astype(f32),
            _basket_frequency(rows, items, codes, ts, baskets),
        )

    def with_cart(self, cart_items: np.ndarray) -> LiveProfile:
        """The same profile with the cart replaced by ``cart_items`` (int64 catalog rows; the store's cart
        is authoritative: it survives the cap on recent events). Items only in the cart are added."""
        cart_items = np.unique(np.asarray(cart_items, np.int64))
        if len(cart_items) == 0:
            return replace(self, cart=np.zeros(len(self.items), np.float32))
        items = np.union1d(self.items, cart_items)
        pos = np.searchsorted(items, self.items)

        def spread(a: np.ndarray) -> np.ndarray:
            out = np.zeros(len(items), np.float32)
            out[pos] = a
            return out

        cart = np.zeros(len(items), np.float32)
        cart[np.searchsorted(items, cart_items)] = 1.0
        return LiveProfile(
            items,
            spread(self.interest),
            spread(self.touch_age),
            spread(self.purchases),
            spread(self.purchase_age),
            cart,
            spread(self.purchase_decay),
            spread(self.basket_frequency),
        )

    def features(
        self, tables: ItemTables, rules: ServingRules, substitutes: bool = True, own_row: int = -1
    ) -> list[Entry]:
        """The visitor's sparse blend features, as ``blend.sparse_features`` computes them for a one-row
        ``Profiles`` with the same ``rules`` (and ``own_rows`` [own_row]: the visitor's row in
        ``tables.visitor_baskets``, -1: none); none at all for a visitor with no touched item and an empty
        cart. ``substitutes=False`` leaves out the substitute feature (a whole category per recent
        purchase): the request path takes it for its candidate rows only (``substitutes_at``)."""
        if self.is_new and not self.cart.any():
            return []
        it = self.items
        bought = self.purchases > 0
        purchased = self.purchase_age > 0
        touched = self.touch_age > 0
        interested = self.interest > 0
        in_cart = self.cart > 0

        owned_w = (
            np.where(purchased, np.exp(-self.purchase_age / rules.complement_recency_days), 0.0) + self.cart
        )
        owned = owned_w > 0
        comp = gather_rows(tables.complements, it[owned], owned_w[owned])
        rec = np.exp(-self.touch_age[interested] / rules.similar_recency_days)
        sim = gather_rows(tables.similar, it[interested], np.log1p(self.interest[interested] * rec))
        decayed = self.purchase_decay > 0
        in_baskets = self.basket_frequency > 0
        sub = self._substitutes(tables, rules) if substitutes else None
        f32 = np.float32
        bought_days, touch_days = rules.bought_recency_days, rules.touch_recency_days
        return [
            (BOUGHT_COUNT, it[bought], np.log1p(self.purchases[bought]).astype(f32)),
            (BOUGHT_RECENCY, it[purchased], np.exp(-self.purchase_age[purchased] / bought_days).astype(f32)),
            (REPEAT, it[bought], tables.repeat_rate[it[bought]].astype(f32)),
            (TOUCH_RECENCY, it[touched], np.exp(-self.touch_age[touched] / touch_days).astype(f32)),
            (INTEREST, it[interested], np.log1p(self.interest[interested]).astype(f32)),
            (IN_CART, it[in_cart], self.cart[in_cart]),
            (COMPLEMENT, *max_normalised(*comp)),
            (SIMILAR, *max_normalised(*sim)),
            (BOUGHT_DECAYED, *max_normalised(it[decayed], self.purchase_decay[decayed])),
            *([] if sub is None else [(SUBSTITUTE, *sub)]),
            (BASKET_FREQUENCY, *max_normalised(it[in_baskets], self.basket_frequency[in_baskets])),
            (BASKET_NEIGHBOURS, *max_normalised(*self._basket_neighbours(tables, rules, own_row))),
        ]

    def _basket_neighbours(
        self, tables: ItemTables, rules: ServingRules, own_row: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """``sources.basket_neighbour_matrix`` for this visitor: (item rows int64 sorted, values float32):
        the neighbours by ``tifu.nearest_one`` (the pool's entries in the visitor's basket items, summed
        per pool row), then one gather of their rows."""
        held = self.basket_frequency > 0
        if tables.visitor_baskets is None or not held.any():
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        near = nearest_one(
            tables.visitor_basket_index,
            self.items[held],
            self.basket_frequency[held],
            own_row,
            rules.basket_neighbours,
        )
        if len(near) == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        return gather_rows(tables.visitor_baskets, near, np.full(len(near), 1.0 / len(near)))

    def substitutes_at(self, tables: ItemTables, rules: ServingRules, rows: np.ndarray) -> Entry | None:
        """The substitute feature (``features``' entry) at ``rows`` only (int64 [c] sorted catalog rows, a
        request's candidates), or None when it is empty: one lookup of each row's category in the few
        categories of the visitor's recent one-off purchases, O(c) however large those categories are."""
        if self.is_new and not self.cart.any():
            return None
        per_cat, anchors = self._substitute_categories(tables, rules)
        if not per_cat:
            return None
        assert tables.category is not None  # per_cat is empty without categories
        row_cat = tables.category[rows]
        vals = np.zeros(len(rows), np.float64)
        for code, weight in per_cat.items():  # the categories of a few recent purchases
            vals[row_cat == code] += weight
        vals[_found(rows, self._not_substitutes(tables, anchors))] = 0.0
        vals = np.minimum(vals, 1.0).astype(np.float32) * bought_once(tables, rows)
        hit = vals > 0
        if not hit.any():
            return None
        return SUBSTITUTE, rows[hit], vals[hit]

    def _substitute_categories(
        self, tables: ItemTables, rules: ServingRules
    ) -> tuple[dict[int, float], np.ndarray]:
        """({category code: summed weight} of the recent one-off purchases, their item rows int64)."""
        purchased = self.purchase_age > 0
        w = substitute_weights(
            tables.rebuy_rate(self.items[purchased]),
            self.purchase_age[purchased],
            rules.substitute_recency_days,
        )
        anchors = self.items[purchased][w > 0]
        if tables.category is None or len(anchors) == 0:
            return {}, anchors
        per_cat: dict[int, float] = {}
        for code, weight in zip(tables.category[anchors].tolist(), w[w > 0].tolist(), strict=True):
            if code >= 0:
                per_cat[code] = per_cat.get(code, 0.0) + weight
        return per_cat, anchors

    @staticmethod
    def _not_substitutes(tables: ItemTables, anchors: np.ndarray) -> np.ndarray:
        """int64 sorted: items bought with an anchor, and the anchors themselves, are not substitutes."""
        together, _ = gather_rows(tables.complements, anchors, np.ones(len(anchors)))
        return np.union1d(together, anchors)

    def _substitutes(self, tables: ItemTables, rules: ServingRules) -> tuple[np.ndarray, np.ndarray]:
        """``sources.substitute_matrix`` for this visitor: (item rows int64 sorted, values float32)."""
        per_cat, anchors = self._substitute_categories(tables, rules)
        if not per_cat:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        # gather_rows(category_members, categories, weights) without its sort of a whole category
        # (thousands of items on a large catalog): categories are disjoint rows, each sorted in itself
        ucats = np.array(sorted(per_cat), np.int64)
        m = tables.category_members
        starts = m.indptr[ucats]
        counts = m.indptr[ucats + 1] - starts
        offsets = concat_ranges(starts, counts)
        idx = m.indices[offsets].astype(np.int64)
        weights = np.array([per_cat[c] for c in ucats.tolist()], np.float64)
        vals = (m.data[offsets] * np.repeat(weights, counts)).astype(np.float32)
        if len(ucats) > 1:
            order = np.argsort(idx, kind="stable")
            idx, vals = idx[order], vals[order]
        alike = ~_found(idx, self._not_substitutes(tables, anchors))
        idx, vals = idx[alike], np.minimum(vals[alike], np.float32(1.0)) * bought_once(tables, idx[alike])
        hit = vals > 0
        return idx[hit], vals[hit]
