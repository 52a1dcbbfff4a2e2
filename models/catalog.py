"""The catalog as columns for the request path, and the masks over it: what the filters allow, minus what
the visitor owns, has in the cart or sees on screen.

A mask is over every item (``rows`` None) or over a candidate set (``rows`` int64 [c] sorted catalog
rows); the handful of items to hide are then found by binary search.

The live catalog (``models.overlay``) changes the columns of the items it lists (``with_live``) and adds
``Availability``: hidden and retired items are never allowed, and items with an availability window only
inside it, checked against the request's time over the few windowed rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from models.domain import STAGES, CatalogItem, Event, ItemKind
from models.history import owned_items
from models.request import Filters, VisitorContext
from models.scoring import positions_in


@dataclass(frozen=True)
class Availability:
    """Which items may be served, from the live catalog.

    servable  bool [n_items]: False for hidden and retired items (whatever the time)
    timed     int64 [w] sorted rows of the items with an availability window
    opens     float64 [w]: POSIX seconds from which each is served (-inf: at once)
    closes    float64 [w]: POSIX seconds from which it is not served any more (+inf: never)
    """

    servable: np.ndarray
    timed: np.ndarray
    opens: np.ndarray
    closes: np.ndarray

    def closed(self, now: float | None) -> np.ndarray:
        """int64 [m]: the timed rows not served at ``now`` (all of them without a time: a caller that
        cannot tell whether a window is open serves none of them)."""
        if now is None:
            return self.timed
        return self.timed[~((self.opens <= now) & (now < self.closes))]


@dataclass(frozen=True)
class CatalogColumns:
    """Catalog columns for vectorised filtering (all length n_items), built once per model load.

    category           int32 code into ``categories`` (lowercased category -> code)
    serves             bool [n_stages, n_items]: content serving that stage (untagged serves all)
    products_in_stock  is_product & in_stock (the common filter, precomputed)
    specificity        float32: minus the number of stages an item serves (stage-specific content first)
    category_by_row    the category of each row as a list (a visitor's few rows are read one by one)
    tags               lowercased tag -> code
    tag_items          csr bool [n_tags, n_items]: the items carrying each tag (merchandising rules'
                       conditions, ``models.rules``)
    availability       what the live catalog keeps from serving (None: every item, at any time)
    """

    items: list[CatalogItem]
    index: dict[str, int]
    is_product: np.ndarray
    in_stock: np.ndarray
    repeatable: np.ndarray
    price: np.ndarray
    category: np.ndarray
    categories: dict[str, int]
    serves: np.ndarray
    products_in_stock: np.ndarray
    specificity: np.ndarray
    category_by_row: list[str]
    tags: dict[str, int]
    tag_items: sp.csr_matrix
    availability: Availability | None = None

    @classmethod
    def build(cls, items: list[CatalogItem]) -> CatalogColumns:
        cats: dict[str, int] = {}
        code = np.array([cats.setdefault(c.category.lower(), len(cats)) for c in items], dtype=np.int32)
        serves = np.array(
            [[(not c.stages) or (s in c.stages) for c in items] for s in STAGES], dtype=bool
        ).reshape(len(STAGES), len(items))
        is_product = np.array([c.kind is ItemKind.PRODUCT for c in items], dtype=bool)
        in_stock = np.array([c.in_stock for c in items], dtype=bool)
        tags: dict[str, int] = {}
        tag_code = [tags.setdefault(t.lower(), len(tags)) for c in items for t in c.tags]
        tag_row = np.repeat(np.arange(len(items)), [len(c.tags) for c in items])
        # an item listing a tag twice sums to 2: still True as a bool matrix
        tag_items = sp.csr_matrix(
            (np.ones(len(tag_code), dtype=bool), (np.array(tag_code, dtype=np.int64), tag_row)),
            shape=(len(tags), len(items)),
        )
        return cls(
            items=items,
            index={c.item_id: i for i, c in enumerate(items)},
            is_product=is_product,
            in_stock=in_stock,
            repeatable=np.array([c.repeatable for c in items], dtype=bool),
            price=np.array([np.nan if c.price is None else c.price for c in items], dtype=np.float64),
            category=code,
            categories=cats,
            serves=serves,
            products_in_stock=is_product & in_stock,
            specificity=-serves.sum(axis=0).astype(np.float32),
            category_by_row=[c.category for c in items],
            tags=tags,
            tag_items=tag_items,
        )

    def __len__(self) -> int:
        return len(self.items)

    def extend(self, new: Sequence[CatalogItem]) -> CatalogColumns:
        """New columns with ``new`` items appended as rows ``len(self)`` onwards (this one is unchanged, so
        a server can build the extended catalog off the request path and swap it in as a whole). New
        categories get the next codes; the ids must be new and distinct (ValueError naming one)."""
        seen = set(self.index)
        for c in new:
            if c.item_id in seen:
                raise ValueError(f"item {c.item_id!r} is already in the catalog")
            seen.add(c.item_id)
        part = CatalogColumns.build(list(new))
        categories = dict(self.categories)
        # part.categories maps names to codes 0..k-1 in insertion order: recode them into the full map
        recode = np.array([categories.setdefault(n, len(categories)) for n in part.categories], np.int32)
        n = len(self.items)
        index = dict(self.index)
        index.update({c.item_id: n + i for i, c in enumerate(new)})
        in_stock = np.concatenate([self.in_stock, part.in_stock])
        is_product = np.concatenate([self.is_product, part.is_product])
        serves = np.concatenate([self.serves, part.serves], axis=1)
        tags = dict(self.tags)
        recode_tags = np.array([tags.setdefault(t, len(tags)) for t in part.tags], np.int64)
        old, added = self.tag_items.tocoo(), part.tag_items.tocoo()
        tag_code = np.concatenate([old.row, recode_tags[added.row]]).astype(np.int64)
        tag_row = np.concatenate([old.col, added.col + n]).astype(np.int64)
        return CatalogColumns(
            items=[*self.items, *new],
            index=index,
            is_product=is_product,
            in_stock=in_stock,
            repeatable=np.concatenate([self.repeatable, part.repeatable]),
            price=np.concatenate([self.price, part.price]),
            category=np.concatenate([self.category, recode[part.category] if len(new) else part.category]),
            categories=categories,
            serves=serves,
            products_in_stock=is_product & in_stock,
            specificity=-serves.sum(axis=0).astype(np.float32),
            category_by_row=[*self.category_by_row, *part.category_by_row],
            tags=tags,
            tag_items=sp.csr_matrix(
                (np.ones(len(tag_code), dtype=bool), (tag_code, tag_row)), shape=(len(tags), n + len(new))
            ),
            availability=None
            if self.availability is None
            else replace(
                self.availability,
                servable=np.concatenate([self.availability.servable, np.ones(len(new), bool)]),
            ),
        )

    def with_live(
        self, rows: np.ndarray, items: Sequence[CatalogItem], availability: Availability | None
    ) -> CatalogColumns:
        """New columns where the items at ``rows`` (int64 [m] distinct) take the fields of ``items`` (same
        ids; kind, title, category, price, tags, stages, stock, repeatable) and ``availability`` applies.
        Columns no item changes are shared with this one, which is unchanged (build off the request path,
        swap in whole). New categories get the next codes."""
        rows = np.asarray(rows, np.int64)
        for r, it in zip(rows.tolist(), items, strict=True):
            if self.items[r].item_id != it.item_id:
                raise ValueError(f"row {r} is {self.items[r].item_id!r}, not {it.item_id!r}")
        if len(rows) == 0:
            return replace(self, availability=availability)
        part = CatalogColumns.build(list(items))
        categories = dict(self.categories)
        recode = np.array([categories.setdefault(n, len(categories)) for n in part.categories], np.int32)

        def put(a: np.ndarray, values: np.ndarray) -> np.ndarray:
            out = a.copy()
            out[..., rows] = values
            return out

        listed = list(self.items)
        by_row = list(self.category_by_row)
        for j, r in enumerate(rows.tolist()):
            listed[r] = items[j]
            by_row[r] = part.category_by_row[j]
        is_product = put(self.is_product, part.is_product)
        in_stock = put(self.in_stock, part.in_stock)
        serves = put(self.serves, part.serves)
        # tags: the patched items' entries replaced by their live ones (new tags take the next codes)
        tags = dict(self.tags)
        recode_tags = np.array([tags.setdefault(t, len(tags)) for t in part.tags], np.int64)
        old, added = self.tag_items.tocoo(), part.tag_items.tocoo()
        keep = ~np.isin(old.col, rows)
        tag_code = np.concatenate([old.row[keep], recode_tags[added.row]]).astype(np.int64)
        tag_row = np.concatenate([old.col[keep], rows[added.col]]).astype(np.int64)
        return CatalogColumns(
            items=listed,
            index=self.index,
            is_product=is_product,
            in_stock=in_stock,
            repeatable=put(self.repeatable, part.repeatable),
            price=put(self.price, part.price),
            category=put(self.category, recode[part.category]),
            categories=categories,
            serves=serves,
            products_in_stock=is_product & in_stock,
            specificity=-serves.sum(axis=0).astype(np.float32),
            category_by_row=by_row,
            tags=tags,
            tag_items=sp.csr_matrix(
                (np.ones(len(tag_code), dtype=bool), (tag_code, tag_row)), shape=(len(tags), len(listed))
            ),
            availability=availability,
        )

    def rows_of(self, item_ids: Sequence[str]) -> np.ndarray:
        """int64 [m]: the catalog rows of ``item_ids`` that are in the catalog (one lookup each)."""
        get = self.index.get
        rows = [get(i, -1) for i in item_ids]
        return np.array([r for r in rows if r >= 0], dtype=np.int64)

    def event_rows(self, events: Sequence[Event]) -> list[int]:
        """The catalog row of each event's item (-1: not in the catalog).

        The one pass over the big id -> row dict a request makes: on a 100k-item catalog each lookup misses
        the CPU caches (about a microsecond), so the stage signals and the event arrays share these rows.
        """
        get = self.index.get
        return [get(e.item_id, -1) for e in events]

    def title(self, row: int) -> str:
        """The item's title, or its id when it has none."""
        item = self.items[row]
        return item.title or item.item_id


def hide(mask: np.ndarray, rows: np.ndarray | None, items: np.ndarray) -> None:
    """Set ``mask`` False at catalog rows ``items`` (int64 [m]): mask is over every item (rows None) or
    over ``rows`` (int64 sorted)."""
    if rows is None:
        mask[items] = False
    else:
        pos, hit = positions_in(rows, items)
        mask[pos[hit]] = False


def served_mask(catalog: CatalogColumns, now: float | None, rows: np.ndarray | None = None) -> np.ndarray:
    """bool [n_items], or [c] for ``rows`` (int64 [c] sorted): what the live catalog serves at ``now``
    (every item without ``Availability``)."""
    n = len(catalog) if rows is None else len(rows)
    live = catalog.availability
    if live is None:
        return np.ones(n, bool)
    m = (live.servable if rows is None else live.servable[rows]).copy()
    if len(live.timed):
        hide(m, rows, live.closed(now))
    return m


def filter_mask(
    catalog: CatalogColumns,
    f: Filters,
    kind: ItemKind,
    rows: np.ndarray | None = None,
    now: float | None = None,
) -> np.ndarray:
    """bool [n_items], or [c] for ``rows`` (int64 [c] sorted catalog rows): the items of ``kind`` the
    filters allow (category, price range, stock, excluded ids) that the live catalog serves at ``now``
    (``Availability``; without ``now`` no windowed item is served)."""
    c = catalog

    def col(a: np.ndarray) -> np.ndarray:
        return a if rows is None else a[rows]

    if kind is ItemKind.PRODUCT and f.in_stock_only:
        m = col(c.products_in_stock).copy()  # the common case, precomputed
    else:
        m = col(c.is_product).copy() if kind is ItemKind.PRODUCT else ~col(c.is_product)
        if f.in_stock_only:
            m &= col(c.in_stock)
    if f.category is not None:
        code = c.categories.get(f.category.lower())
        m &= col(c.category) == code if code is not None else False
    if f.min_price is not None:
        m &= col(c.price) >= f.min_price
    if f.max_price is not None:
        m &= col(c.price) <= f.max_price
    if f.exclude:
        hide(m, rows, c.rows_of(sorted(f.exclude)))
    live = c.availability
    if live is not None:  # hidden, retired, not yet or no longer available: a gather and the few windows
        m &= col(live.servable)
        if len(live.timed):
            hide(m, rows, live.closed(now))
    return m


def hidden_rows(catalog: CatalogColumns, ctx: VisitorContext, f: Filters) -> np.ndarray:
    """int64 [m]: the visitor's items to hide: owned (unless repeatable or ``f.include_purchased``), in
    the cart (unless ``f.include_cart``), or on screen (``ctx.current_item``)."""
    hidden = [np.zeros(0, np.int64)]
    if not f.include_purchased:
        bought = catalog.rows_of(owned_items(ctx))
        hidden.append(bought[~catalog.repeatable[bought]])
    if not f.include_cart:
        hidden.append(catalog.rows_of(list(ctx.cart)))
    if ctx.current_item is not None:
        hidden.append(catalog.rows_of([ctx.current_item]))
    return np.concatenate(hidden)


def allowed_mask(
    catalog: CatalogColumns, ctx: VisitorContext, f: Filters, kind: ItemKind, rows: np.ndarray | None = None
) -> np.ndarray:
    """bool [n_items] (or [c] for ``rows``): ``filter_mask`` at ``ctx.now`` minus ``hidden_rows``."""
    m = filter_mask(catalog, f, kind, rows, ctx.now)
    hide(m, rows, hidden_rows(catalog, ctx, f))
    return m
