"""The live catalog API: ``/v1/items`` writes (``catalog`` scope) and what is served for one item.

Writes go to the catalog store (``service.store.catalog_base``); every worker follows its version
(``service.catalog_follower``), so a write is served everywhere within ``catalog_poll_seconds``. Each write
answers per item: stored, ignored_older (a write with a later ``updated_at`` is stored) or refused (the item
is retired). A single-item write to a retired item is a 409 naming it.

PATCH and DELETE merge onto the stored entry (or onto the trained item when the store has none) and write
conditionally on that entry (``based_on``): when another write landed in between, they merge again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated

from litestar import Controller, delete, get, patch, post, put
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter
from litestar.status_codes import HTTP_200_OK

from models.domain import CatalogItem
from models.errors import NotFoundError
from models.overlay import LiveItem
from service import metrics
from service.api.catalog_schemas import (
    ItemBatchIn,
    ItemFieldsOut,
    ItemIn,
    ItemPatch,
    ItemView,
    WriteOut,
    check_batch,
    full_item,
    live_out,
    patched,
    result_out,
)
from service.api.deps import IdPath, Services
from service.auth import Scope, scopes
from service.errors import ConflictError
from service.model_holder import ModelHolder
from service.schemas import parse_timestamp
from service.store.catalog_base import PutAnswer, RetiredItemError, WriteOutcome

#: merges a PATCH or DELETE tries before it gives up on an item other writes keep changing (409)
MERGE_ATTEMPTS = 8
UpdatedAt = Annotated[
    float | None,
    Parameter(
        ge=0, description="time of the retirement, POSIX seconds (default now); orders it among writes"
    ),
]


def trained_item(holder: ModelHolder, item_id: str) -> CatalogItem | None:
    """The item as the live model was trained with it, or None."""
    base = holder.base
    if base is None:
        return None
    row = base.catalog.index.get(item_id)
    return None if row is None else base.bundle.catalog[row]


def _answer(answer: PutAnswer, single: bool) -> WriteOut:
    for r in answer.results:
        metrics.CATALOG_WRITES.labels(r.outcome.value).inc()
    if single and answer.results[0].outcome is WriteOutcome.REFUSED:
        raise RetiredItemError(answer.results[0].item_id)
    return WriteOut(answer.version, [result_out(r.item_id, r.outcome) for r in answer.results])


async def _merge_write(
    svc: Services, item_id: str, merge: Callable[[LiveItem | CatalogItem], LiveItem]
) -> WriteOut:
    """Write ``merge(stored entry or trained item)`` on the condition that the stored entry is still the
    one merged onto; again while other writes land in between."""
    for _ in range(MERGE_ATTEMPTS):
        stored = await svc.catalog.get(item_id)
        if stored is not None and stored.retired:
            raise RetiredItemError(item_id)
        base = stored if stored is not None else trained_item(svc.holder, item_id)
        if base is None:
            raise NotFoundError(
                f"unknown item {item_id!r}: neither the live catalog nor the model has it (PUT it first)"
            )
        answer = await svc.catalog.put(
            [merge(base)], based_on=[None if stored is None else stored.updated_at]
        )
        if answer.results[0].outcome is not WriteOutcome.MOVED:
            return _answer(answer, single=True)
    raise ConflictError(
        f"item {item_id!r} changed {MERGE_ATTEMPTS} times while this write was merged onto it; retry"
    )


class CatalogController(Controller):
    path = "/items"
    tags = ["catalog"]  # noqa: RUF012 (Litestar reads a class attribute)

    @get(
        "/{item_id:str}",
        opt=scopes(Scope.READ, Scope.CATALOG),
        summary="What is served for one item",
        description=(
            "The item's served fields (the live catalog's when it has the item, else the model's), whether "
            "it is a trained item or represented from its features, and whether it may be served now."
        ),
    )
    async def show(self, svc: NamedDependency[Services], item_id: IdPath) -> ItemView:
        model = svc.holder.require()
        live = await svc.catalog.get(item_id)
        trained = trained_item(svc.holder, item_id)
        if live is None and trained is None:
            raise NotFoundError(f"unknown item {item_id!r}: neither the live catalog nor the model has it")
        served = live.item if live is not None else trained
        assert served is not None
        return ItemView(
            item_id=item_id,
            represented="trained" if trained is not None else "features",
            servable=live.servable_at(time.time()) if live is not None else True,
            served=ItemFieldsOut.of(served),
            model=None if trained is None else ItemFieldsOut.of(trained),
            live=None if live is None else live_out(live),
            model_version=model.version,
            catalog_version=svc.holder.overlay.version,
        )

    @put(
        "/{item_id:str}",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.CATALOG),
        summary="Write a full item to the live catalog",
        description=(
            "A new item is served at once, represented from its features; a trained item takes these "
            "fields. An update older than the stored one (updated_at) is ignored and reported; an update "
            "of a retired item is a 409."
        ),
    )
    async def put_item(
        self, svc: NamedDependency[Services], item_id: IdPath, data: JSONBody[ItemIn]
    ) -> WriteOut:
        update = full_item(item_id, data, time.time())
        return _answer(await svc.catalog.put([update]), single=True)

    @patch(
        "/{item_id:str}",
        opt=scopes(Scope.CATALOG),
        summary="Change some fields of an item",
        description=(
            "The fields given are merged onto the live catalog's entry, or onto the trained item when there "
            "is none; 404 when neither exists."
        ),
    )
    async def patch_item(
        self, svc: NamedDependency[Services], item_id: IdPath, data: JSONBody[ItemPatch]
    ) -> WriteOut:
        now = time.time()
        return await _merge_write(svc, item_id, lambda base: patched(base, data, now))

    @delete(
        "/{item_id:str}",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.CATALOG),
        summary="Retire an item: never served again",
        description="A retired item refuses every later write (409); its entry is kept.",
    )
    async def retire_item(
        self, svc: NamedDependency[Services], item_id: IdPath, updated_at: UpdatedAt = None
    ) -> WriteOut:
        t = parse_timestamp(updated_at, time.time(), "query parameter 'updated_at'")

        def retire(base: LiveItem | CatalogItem) -> LiveItem:
            if isinstance(base, LiveItem):
                return LiveItem(
                    item=base.item,
                    updated_at=t,
                    hidden=base.hidden,
                    available_from=base.available_from,
                    expires_at=base.expires_at,
                    retired=True,
                )
            return LiveItem(item=base, updated_at=t, retired=True)

        return await _merge_write(svc, item_id, retire)


class CatalogBatchController(Controller):
    """The batch write: on the router whose body limit is ``max_body_bytes``."""

    path = "/items"
    tags = ["catalog"]  # noqa: RUF012

    @post(
        "/",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.CATALOG),
        summary="Write a batch of full items to the live catalog",
        description=(
            'Body: {"items": [{"item_id", "kind", "title", ...}]}, at most JOURNEYREC_MAX_CATALOG_BATCH '
            "items, applied in order in one atomic step. The answer says per item: stored, ignored_older "
            "or refused (retired)."
        ),
    )
    async def put_batch(self, svc: NamedDependency[Services], data: JSONBody[ItemBatchIn]) -> WriteOut:
        check_batch(len(data.items), svc.settings.max_catalog_batch)
        now = time.time()
        updates = [full_item(e.item_id, e, now, f"items[{i}].") for i, e in enumerate(data.items)]
        return _answer(await svc.catalog.put(updates), single=False)
