"""A visitor's purchase history on the request path: what they bought before the recent events, what they
own, and their events as the aligned arrays the live profile and the content ranking read."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from models.domain import PURCHASE_LOG_EVENTS, Event, EventType
from models.request import VisitorContext

_P = EventType.PURCHASE
# codes of the events a purchase log holds (a set of ints: Enum hashing is Python code, slow per event)
_LOGGED_CODES = frozenset(e.code for e in PURCHASE_LOG_EVENTS)


def older_purchases(ctx: VisitorContext) -> list[Event]:
    """The visitor's purchases and cancels from before ``ctx.events``, oldest first.

    The purchase log's last entries are the purchases and cancels among the recent events (both are in
    arrival order), so the log without that many entries is what came before them. A purchased item that
    neither the log nor the events hold (kept from before the store had a log) counts once, at the time of
    its latest purchase.
    """
    log = ctx.purchase_log
    in_events = sum(1 for e in ctx.events if e.event.code in _LOGGED_CODES)
    older = log[: max(len(log) - in_events, 0)]
    if not ctx.purchases:
        return older
    known = {e.item_id for e in log} | {e.item_id for e in ctx.events if e.event is _P}
    kept = [
        Event(visitor_id=ctx.visitor_id, item_id=i, event=_P, timestamp=t)
        for i, t in ctx.purchases.items()
        if i not in known
    ]
    return [*kept, *older]


def owned_items(ctx: VisitorContext) -> list[str]:
    """Item ids the visitor owns: more purchases than cancels in the purchase log, plus purchased items
    the log does not reach. (The store's ``purchases`` map forgets an item at a cancel even when an
    earlier purchase of it stands: "bought twice, cancelled once" still owns one.)"""
    if not ctx.purchase_log:
        return list(ctx.purchases)
    net: dict[str, int] = {}
    for e in ctx.purchase_log:
        net[e.item_id] = net.get(e.item_id, 0) + (1 if e.event is _P else -1)
    return [i for i, n in net.items() if n > 0] + [i for i in ctx.purchases if i not in net]


def ever_bought(ctx: VisitorContext) -> set[str]:
    """Item ids the visitor bought at least once (cancelled or not), as far as the state reaches."""
    return set(ctx.purchases) | {e.item_id for e in (*ctx.purchase_log, *ctx.events) if e.event is _P}


def event_arrays(
    ctx: VisitorContext, rows: Sequence[int], older: Sequence[Event], index: Mapping[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(items int64, codes int8, ts float64) [n]: the visitor's events on catalog items up to now, in
    time order, plus ``older``: the purchases and cancels from before the recent-events window
    (``older_purchases``). rows: the catalog row of each of ``ctx.events`` (-1: not in the catalog);
    index: item id -> catalog row, for ``older``."""
    get, now = index.get, ctx.now
    items: list[int] = []
    codes: list[int] = []
    ts: list[float] = []
    for e in older:
        row = get(e.item_id)
        if row is not None and e.timestamp <= now:
            items.append(row)
            codes.append(e.event.code)
            ts.append(e.timestamp)
    for e, row in zip(ctx.events, rows, strict=True):
        if row >= 0 and e.timestamp <= now:
            items.append(row)
            codes.append(e.event.code)
            ts.append(e.timestamp)
    t_arr = np.array(ts, dtype=np.float64)
    order = np.argsort(t_arr, kind="stable")
    return np.array(items, dtype=np.int64)[order], np.array(codes, dtype=np.int8)[order], t_arr[order]
