"""Bodies of the live catalog API (``service.api.catalog``): msgspec Structs, unknown fields refused.

Times (``updated_at``, ``available_from``, ``expires_at``) are POSIX seconds or ISO-8601 with a UTC offset.
Text is stripped of surrounding spaces as the catalog CSV loader strips it, so an exported catalog reads
back the same; a tag may not hold ``|`` (the catalog CSV's list separator).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from models.domain import CatalogItem, ItemKind, Stage
from models.errors import InvalidInputError
from models.overlay import LiveItem
from service.schemas import Id, parse_timestamp
from service.store.catalog_base import WriteOutcome

Title = Annotated[str, msgspec.Meta(max_length=512, pattern=r"^[^\x00-\x1f]*$")]
Category = Annotated[str, msgspec.Meta(max_length=128, pattern=r"^[^\x00-\x1f]*$")]
Tag = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[^|\x00-\x1f]+$")]
Tags = Annotated[list[Tag], msgspec.Meta(max_length=64)]
Stages = Annotated[list[Stage], msgspec.Meta(max_length=len(Stage))]
Price = Annotated[float, msgspec.Meta(ge=0, le=1e12)]
Time = float | str
#: fields of ``CatalogItem`` a write may set (``item_id`` comes from the path or the batch entry)
ITEM_FIELDS = ("kind", "title", "category", "price", "tags", "stages", "in_stock", "repeatable")
#: fields of ``LiveItem`` beside the item a write may set
LIVE_FIELDS = ("hidden", "available_from", "expires_at")


class ItemIn(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A full item (``PUT /v1/items/{item_id}``): absent fields take their defaults, as in the catalog CSV.

    hidden: never served while true; available_from / expires_at: not served before / from then (null:
    no limit); updated_at: the time of this write (default: now), which orders writes of one item."""

    kind: ItemKind = ItemKind.PRODUCT
    title: Title = ""
    category: Category = ""
    price: Price | None = None
    tags: Tags = msgspec.field(default_factory=list)
    stages: Stages = msgspec.field(default_factory=list)
    in_stock: bool = True
    repeatable: bool = False
    hidden: bool = False
    available_from: Time | None = None
    expires_at: Time | None = None
    updated_at: Time | None = None


class ItemBatchEntry(ItemIn, kw_only=True, forbid_unknown_fields=True):
    """One full item of a batch, with its id."""

    item_id: Id


class ItemBatchIn(msgspec.Struct, forbid_unknown_fields=True):
    """``POST /v1/items``: ``{"items": [...]}`` (at most ``max_catalog_batch`` items)."""

    items: Annotated[list[ItemBatchEntry], msgspec.Meta(min_length=1)]


class ItemPatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Some fields of an item (``PATCH /v1/items/{item_id}``); absent fields keep their value. A null
    ``price``, ``available_from`` or ``expires_at`` clears it."""

    kind: ItemKind | UnsetType = UNSET
    title: Title | UnsetType = UNSET
    category: Category | UnsetType = UNSET
    price: Price | UnsetType | None = UNSET
    tags: Tags | UnsetType = UNSET
    stages: Stages | UnsetType = UNSET
    in_stock: bool | UnsetType = UNSET
    repeatable: bool | UnsetType = UNSET
    hidden: bool | UnsetType = UNSET
    available_from: Time | UnsetType | None = UNSET
    expires_at: Time | UnsetType | None = UNSET
    updated_at: Time | None = None


class WriteResultOut(msgspec.Struct, frozen=True):
    """What became of one item of a write: stored, ignored_older (the stored update is as new or newer)
    or refused (the item is retired)."""

    item_id: str
    outcome: Literal["stored", "ignored_older", "refused"]


class WriteOut(msgspec.Struct, frozen=True):
    """The outcome of every item written, in order, and the catalog version after the write (every worker
    serves it within ``catalog_poll_seconds``)."""

    catalog_version: int
    items: list[WriteResultOut]


class ItemFieldsOut(msgspec.Struct, frozen=True):
    kind: ItemKind
    title: str
    category: str
    price: float | None
    tags: list[str]
    stages: list[Stage]
    in_stock: bool
    repeatable: bool

    @classmethod
    def of(cls, c: CatalogItem) -> ItemFieldsOut:
        return cls(
            c.kind, c.title, c.category, c.price, list(c.tags), list(c.stages), c.in_stock, c.repeatable
        )


class LiveOut(msgspec.Struct, frozen=True):
    """The live catalog's entry: the item's fields as written, and when it is served."""

    item: ItemFieldsOut
    hidden: bool
    available_from: float | None
    expires_at: float | None
    retired: bool
    updated_at: float


class ItemView(msgspec.Struct, frozen=True):
    """What the service serves for one item.

    represented  "trained": the model learned the item; "features": the model never saw it, its
                 representation comes from its features
    servable     whether it may be served now (stock aside: a filter each request chooses)
    served       the fields served: the live entry's when there is one, else the model's
    model        the fields the live model was trained with (null: a new item)
    live         the live catalog's entry (null: nothing written since the model was trained)
    """

    item_id: str
    represented: Literal["trained", "features"]
    servable: bool
    served: ItemFieldsOut
    model: ItemFieldsOut | None
    live: LiveOut | None
    model_version: str
    catalog_version: int


def live_out(live: LiveItem) -> LiveOut:
    return LiveOut(
        ItemFieldsOut.of(live.item),
        live.hidden,
        live.available_from,
        live.expires_at,
        live.retired,
        live.updated_at,
    )


def result_out(item_id: str, outcome: WriteOutcome) -> WriteResultOut:
    value: Any = outcome.value
    return WriteResultOut(item_id, value)


def _time(value: Time | None, where: str) -> float | None:
    """A schedule time: POSIX seconds from seconds or ISO-8601 with an offset; any time from 0 on."""
    if value is None:
        return None
    return parse_timestamp(value, math.inf, where)


def _item_changes(fields: Any) -> dict[str, Any]:
    """The ``CatalogItem`` fields of a write, cleaned as the catalog CSV loader cleans them."""
    out: dict[str, Any] = {}
    for name in ITEM_FIELDS:
        value = getattr(fields, name)
        if value is UNSET:
            continue
        if name in ("title", "category"):
            value = value.strip()
        elif name == "tags":
            value = tuple(dict.fromkeys(t.strip() for t in value if t.strip()))
        elif name == "stages":
            value = tuple(dict.fromkeys(value))
        out[name] = value
    return out


def _live_changes(fields: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in LIVE_FIELDS:
        value = getattr(fields, name)
        if value is UNSET:
            continue
        out[name] = value if name == "hidden" else _time(value, f"body field '{where}{name}'")
    return out


def _check_window(live: LiveItem, where: str) -> LiveItem:
    start, end = live.available_from, live.expires_at
    if start is not None and end is not None and end <= start:
        raise InvalidInputError(f"body field '{where}expires_at': {end} is not after available_from {start}")
    return live


def updated_at(fields: ItemIn | ItemPatch, now: float, where: str = "") -> float:
    """The write's time: its ``updated_at``, at most a day ahead of ``now`` (a write far in the future
    would shut out every later one), or ``now``."""
    return parse_timestamp(fields.updated_at, now, f"body field '{where}updated_at'")


def full_item(item_id: str, fields: ItemIn, now: float, where: str = "") -> LiveItem:
    """The live entry a full write (PUT, a batch entry) makes; ``where`` prefixes field names in errors."""
    item = CatalogItem(item_id=item_id, **_item_changes(fields))
    live = LiveItem(item=item, updated_at=updated_at(fields, now, where), **_live_changes(fields, where))
    return _check_window(live, where)


def patched(base: LiveItem | CatalogItem, patch: ItemPatch, now: float) -> LiveItem:
    """``patch`` merged onto the stored entry (or, when there is none, onto the trained item)."""
    old = base.item if isinstance(base, LiveItem) else base
    item = msgspec.structs.replace(old, **_item_changes(patch))
    flags: dict[str, Any] = {}
    if isinstance(base, LiveItem):
        flags = {"hidden": base.hidden, "available_from": base.available_from, "expires_at": base.expires_at}
    flags.update(_live_changes(patch, ""))
    return _check_window(LiveItem(item=item, updated_at=updated_at(patch, now), **flags), "")


def check_batch(n: int, limit: int) -> None:
    if n > limit:
        raise InvalidInputError(f"body field 'items': {n} items; at most {limit} per request")
