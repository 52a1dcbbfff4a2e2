"""The live catalog: what the shop has told the service since the model was trained.

A model carries the catalog it was trained on. Between retrains the shop adds products, sells out, changes
prices, hides, schedules and retires items; each such write is one ``LiveItem`` (the item as it is served
now, with the time of the update). A ``CatalogOverlay`` is every live item at one version of the store's
change feed. ``Recommender.with_overlay`` (``models.recommender``) applies it to a loaded model off the
request path and returns a new front that serves it: trained items take the live fields, items the model
never saw are represented from their features, retired and hidden items are never served.

Updates are ordered by ``updated_at`` per item: ``newer`` decides whether a write replaces the stored one, so
an out-of-order feed cannot bring back what a later write changed.
"""

from __future__ import annotations

import msgspec

from models.domain import CatalogItem


class LiveItem(msgspec.Struct, frozen=True, kw_only=True):
    """One item as the service serves it now.

    item            every catalog field (kind, title, category, price, tags, stages, in_stock, repeatable)
    hidden          never served while true (a merchandiser's switch; the item keeps its history)
    available_from  POSIX seconds before which the item is not served (None: at once)
    expires_at      POSIX seconds from which the item is not served (None: never)
    retired         deleted: never served again, and no later write may change it
    updated_at      POSIX seconds of the write (the shop's clock, or the service's when the write gave none)
    """

    item: CatalogItem
    updated_at: float
    hidden: bool = False
    available_from: float | None = None
    expires_at: float | None = None
    retired: bool = False

    def servable_at(self, now: float) -> bool:
        """Whether the item may be served at ``now`` (stock aside: that is a filter the request chooses)."""
        if self.retired or self.hidden:
            return False
        if self.available_from is not None and now < self.available_from:
            return False
        return self.expires_at is None or now < self.expires_at


def newer(update: LiveItem, stored: LiveItem | None) -> bool:
    """Whether ``update`` replaces ``stored``: there is none, or it is strictly newer and not retired."""
    if stored is None:
        return True
    if stored.retired:
        return False
    return update.updated_at > stored.updated_at


class CatalogOverlay(msgspec.Struct, frozen=True):
    """Every live item at ``version`` of the store's change feed (0: nothing told yet)."""

    version: int = 0
    items: dict[str, LiveItem] = msgspec.field(default_factory=dict)


EMPTY_OVERLAY = CatalogOverlay()
