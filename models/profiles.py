"""Visitor profiles: the sparse per-visitor summaries every candidate source scores from.

The same struct is built offline from an ``EventLog`` (many visitors at a split time) and online from one
visitor's live events, so training, evaluation and serving share one scoring path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from models.dataset import EventLog
from models.domain import DAY, Event, EventType
from models.tifu import TIFU_DEFAULTS, TifuParams, day_basket_vectors
from models.weights import EventWeights

PURCHASE_DECAY_DAYS = 90.0
_PURCHASE = EventType.PURCHASE.code
_CANCEL = EventType.CANCEL.code
_ADD = EventType.ADD_TO_CART.code
_REMOVE = EventType.REMOVE_FROM_CART.code


@dataclass(frozen=True)
class Profiles:
    """Sparse summaries of ``u`` visitors over ``n_items`` items, all csr float32 [u, n_items].

    interest       summed event weights, clipped at 0 (how much the visitor cared about each item)
    touch_age      days since the last interaction with the item (stored as age + 1e-3 so 0 stays sparse)
    purchases      net purchase count (purchases minus cancels, clipped at 0)
    purchase_age   days since the last purchase of the item (+1e-3)
    cart           1 where the item is in the cart now (last cart event was add_to_cart, no purchase since)
    purchase_decay sum over the item's purchases of exp(-age / PURCHASE_DECAY_DAYS): frequency that fades
    basket_frequency  TIFU-KNN's personal vector over the visitor's purchase days as baskets, latest
                   first (``tifu.day_basket_vectors``; decays from the ``TifuParams`` the profile was built
                   with): how often the item was in the visitor's recent baskets
    """

    interest: sp.csr_matrix
    touch_age: sp.csr_matrix
    purchases: sp.csr_matrix
    purchase_age: sp.csr_matrix
    cart: sp.csr_matrix
    purchase_decay: sp.csr_matrix
    basket_frequency: sp.csr_matrix

    @property
    def n_visitors(self) -> int:
        return int(self.interest.shape[0])

    def seen(self) -> sp.csr_matrix:
        """bool-like csr [u, n_items]: items the visitor interacted with at all."""
        return (self.touch_age > 0).astype(np.float32).tocsr()


def _csr(rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """csr float32 of ``shape`` with duplicates summed and zeros dropped, indices sorted (built directly:
    scipy's COO route costs more than the work itself for the one-visitor profiles of the request path)."""
    key = rows.astype(np.int64) * shape[1] + cols.astype(np.int64)
    uniq, inv = np.unique(key, return_inverse=True)
    data = np.bincount(inv.ravel(), weights=vals, minlength=len(uniq)).astype(np.float32)
    keep = data != 0
    uniq, data = uniq[keep], data[keep]
    r = uniq // shape[1]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(r, minlength=shape[0]))]).astype(np.int64)
    return sp.csr_matrix((data, (uniq % shape[1]).astype(np.int64), indptr), shape=shape)


def _last_per_pair(rows: np.ndarray, cols: np.ndarray, ts: np.ndarray) -> tuple[np.ndarray, ...]:
    """For each distinct (row, col): the index of its latest event. Inputs int/float arrays of length n."""
    order = np.lexsort((ts, cols, rows))
    r, c = rows[order], cols[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = (r[1:] != r[:-1]) | (c[1:] != c[:-1])
    return (order[last],)


def profiles_from_arrays(
    rows: np.ndarray,
    items: np.ndarray,
    events: np.ndarray,
    ts: np.ndarray,
    *,
    n_rows: int,
    n_items: int,
    now: float,
    weights: EventWeights,
    baskets: TifuParams = TIFU_DEFAULTS,
) -> Profiles:
    """Build profiles from aligned event arrays (rows int[n] in [0, n_rows), items int[n], events int8[n],
    ts float64[n]). Events at or after ``now`` must already be removed. ``baskets``: the decays of
    ``basket_frequency`` (``ServingRules.basket_params``)."""
    shape = (n_rows, n_items)
    w = weights.of(events)
    interest = _csr(rows, items, w, shape)
    interest.data = np.maximum(interest.data, 0)
    interest.eliminate_zeros()

    (last,) = _last_per_pair(rows, items, ts)
    touch_age = _csr(rows[last], items[last], (now - ts[last]) / DAY + 1e-3, shape)

    is_p = events == _PURCHASE
    is_c = events == _CANCEL
    signed = np.where(is_p, 1.0, np.where(is_c, -1.0, 0.0)).astype(np.float32)
    pm = is_p | is_c
    purchases = _csr(rows[pm], items[pm], signed[pm], shape)
    purchases.data = np.maximum(purchases.data, 0)
    purchases.eliminate_zeros()
    (lastp,) = _last_per_pair(rows[is_p], items[is_p], ts[is_p])
    pr, pi, pt = rows[is_p][lastp], items[is_p][lastp], ts[is_p][lastp]
    purchase_age = _csr(pr, pi, (now - pt) / DAY + 1e-3, shape)

    # cart: the latest cart-changing event per (visitor, item) is an add
    cm = np.isin(events, np.array([_ADD, _REMOVE, _PURCHASE], dtype=np.int8))
    (lastc,) = _last_per_pair(rows[cm], items[cm], ts[cm])
    in_cart = events[cm][lastc] == _ADD
    cart = _csr(rows[cm][lastc][in_cart], items[cm][lastc][in_cart], np.ones(int(in_cart.sum())), shape)
    decay = np.exp(-(now - ts[is_p]) / (PURCHASE_DECAY_DAYS * DAY))
    purchase_decay = _csr(rows[is_p], items[is_p], decay, shape)
    basket_frequency = day_basket_vectors(
        rows[is_p], items[is_p], ts[is_p], n_visitors=n_rows, n_items=n_items, params=baskets
    )
    return Profiles(interest, touch_age, purchases, purchase_age, cart, purchase_decay, basket_frequency)


def profiles_from_log(
    log: EventLog,
    visitors: np.ndarray,
    now: float,
    weights: EventWeights,
    baskets: TifuParams = TIFU_DEFAULTS,
) -> Profiles:
    """Profiles of ``visitors`` (int32[u] indices into ``log.visitor_ids``) from their events before ``now``.

    Row i of every matrix belongs to ``visitors[i]``.
    """
    pos = np.full(log.n_visitors, -1, dtype=np.int64)
    pos[visitors] = np.arange(len(visitors))
    keep = (pos[log.visitor] >= 0) & (log.ts < now)
    return profiles_from_arrays(
        pos[log.visitor[keep]],
        log.item[keep],
        log.event[keep],
        log.ts[keep],
        n_rows=len(visitors),
        n_items=log.n_items,
        now=now,
        weights=weights,
        baskets=baskets,
    )


def profile_from_events(
    events: Sequence[Event],
    item_index: Mapping[str, int],
    n_items: int,
    now: float,
    weights: EventWeights,
    baskets: TifuParams = TIFU_DEFAULTS,
) -> Profiles:
    """A one-row profile from one visitor's live events; events on unknown items are ignored here
    (they still count for the journey stage)."""
    known = [(item_index[e.item_id], e) for e in events if e.item_id in item_index and e.timestamp <= now]
    n = len(known)
    items = np.fromiter((i for i, _ in known), dtype=np.int64, count=n)
    codes = np.fromiter((e.event.code for _, e in known), dtype=np.int8, count=n)
    ts = np.fromiter((e.timestamp for _, e in known), dtype=np.float64, count=n)
    return profiles_from_arrays(
        np.zeros(n, dtype=np.int64),
        items,
        codes,
        ts,
        n_rows=1,
        n_items=n_items,
        now=now,
        weights=weights,
        baskets=baskets,
    )
