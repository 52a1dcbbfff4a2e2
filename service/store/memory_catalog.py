"""The embedded live catalog store: this process's memory (one process only, lost on restart).

The Redis store's twin (``service.store.redis_catalog``); the semantics are those of
``service.store.catalog_base``. No method awaits while it reads or changes state, so each call is atomic
with respect to the other coroutines of the event loop.
"""

from __future__ import annotations

from collections.abc import Sequence

from models.overlay import CatalogOverlay, LiveItem
from service.store.catalog_base import PutAnswer, PutResult, WriteOutcome, check_based_on, outcome_of


class MemoryCatalog:
    """CatalogStore in this process's memory."""

    def __init__(self) -> None:
        self._items: dict[str, LiveItem] = {}
        self._version = 0

    async def put(
        self, items: Sequence[LiveItem], *, based_on: Sequence[float | None] | None = None
    ) -> PutAnswer:
        check_based_on(items, based_on)
        results: list[PutResult] = []
        for i, update in enumerate(items):
            item_id = update.item.item_id
            outcome = outcome_of(update, self._items.get(item_id), False if based_on is None else based_on[i])
            if outcome is WriteOutcome.STORED:
                self._items[item_id] = update
                self._version += 1
            results.append(PutResult(item_id, outcome))
        return PutAnswer(self._version, results)

    async def get(self, item_id: str) -> LiveItem | None:
        return self._items.get(item_id)

    async def overlay(self) -> CatalogOverlay:
        return CatalogOverlay(self._version, dict(self._items))

    async def version(self) -> int:
        return self._version

    async def close(self) -> None:
        return None
