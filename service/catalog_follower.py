"""Every worker follows the live catalog: ``CatalogFollower.step`` reads the store's version (one cheap
read) and, when it moved, the whole overlay, which the model holder applies off the request path
(``ModelHolder.apply_overlay``: ``Recommender.with_overlay`` in a worker thread, then one swap).

The app runs ``step`` every ``catalog_poll_seconds`` under ``service.followers.Followers``. A request never
reads the catalog store: it uses the model the holder serves. While the store cannot be reached, the last
catalog applied keeps being served; the outage is logged once when it starts and once when it ends.
"""

from __future__ import annotations

import logging

from models.errors import StoreUnavailableError
from service.model_holder import ModelHolder
from service.store.catalog_base import CatalogStore

log = logging.getLogger("journeyrec.service")


class CatalogFollower:
    def __init__(self, catalog: CatalogStore, holder: ModelHolder) -> None:
        self.catalog = catalog
        self.holder = holder
        self.unreachable = False

    async def step(self) -> bool:
        """Apply the store's catalog if its version moved; True when a new one is served. Raises what
        applying it raised (that version is then skipped: ``ModelHolder.overlay_failed``)."""
        holder = self.holder
        try:
            version = await self.catalog.version()
            if version in (holder.overlay.version, holder.overlay_failed):
                self._reachable()
                return False
            overlay = await self.catalog.overlay()
        except StoreUnavailableError as e:
            if not self.unreachable:
                log.warning(
                    "cannot read the live catalog (%s); serving catalog version %d until it answers",
                    e,
                    holder.overlay.version,
                )
            self.unreachable = True
            return False
        self._reachable()
        changed = await holder.apply_overlay(overlay)
        if changed:
            log.debug("serving live catalog version %d (%d items)", overlay.version, len(overlay.items))
        return changed

    def _reachable(self) -> None:
        if self.unreachable:
            log.warning("the live catalog answers again (version %d served)", self.holder.overlay.version)
        self.unreachable = False
