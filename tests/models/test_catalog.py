"""Catalog columns and the masks over them: what the filters allow, what the visitor's own items hide."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.catalog import Availability, CatalogColumns, allowed_mask, filter_mask, hidden_rows, served_mask
from models.domain import Event, EventType, ItemKind, Stage
from models.request import Filters, VisitorContext
from tests.storefront import OUT_OF_STOCK_TITLE, product_id, storefront_catalog

CATALOG = CatalogColumns.build(storefront_catalog())
ITEMS = CATALOG.items
NOW = 1_750_000_000.0


def _chosen(mask: np.ndarray) -> set[str]:
    return {ITEMS[i].item_id for i in np.flatnonzero(mask)}


def _ctx(**kw: object) -> VisitorContext:
    base: dict[str, object] = {"visitor_id": "v", "events": [], "cart": {}, "purchases": {}, "now": NOW}
    return VisitorContext(**{**base, **kw})  # type: ignore[arg-type]


def test_default_filters_allow_products_in_stock() -> None:
    want = {c.item_id for c in ITEMS if c.kind is ItemKind.PRODUCT and c.in_stock}
    assert _chosen(filter_mask(CATALOG, Filters(), ItemKind.PRODUCT)) == want
    assert product_id(OUT_OF_STOCK_TITLE) not in want
    with_stock = _chosen(filter_mask(CATALOG, Filters(in_stock_only=False), ItemKind.PRODUCT))
    assert with_stock == want | {product_id(OUT_OF_STOCK_TITLE)}


def test_content_kind() -> None:
    got = _chosen(filter_mask(CATALOG, Filters(), ItemKind.CONTENT))
    assert got == {c.item_id for c in ITEMS if c.kind is ItemKind.CONTENT}


@pytest.mark.parametrize(
    ("filters", "want"),
    [
        (Filters(category="Garden"), lambda c: c.category == "garden"),  # case does not matter
        (Filters(category="no such category"), lambda c: False),
        (Filters(min_price=20.0, max_price=30.0), lambda c: 20.0 <= c.price <= 30.0),  # bounds included
        (Filters(max_price=6.0), lambda c: c.price <= 6.0),
        (
            Filters(category="outdoor", exclude=frozenset({product_id("Tent"), "ghost"})),
            lambda c: c.category == "outdoor" and c.title != "Tent",
        ),
    ],
)
def test_filters(filters: Filters, want: object) -> None:
    products = [c for c in ITEMS if c.kind is ItemKind.PRODUCT and c.in_stock]
    expected = {c.item_id for c in products if want(c)}  # type: ignore[operator]
    assert _chosen(filter_mask(CATALOG, filters, ItemKind.PRODUCT)) == expected


@settings(max_examples=50, deadline=None)
@given(
    st.sets(st.integers(0, len(ITEMS) - 1)),
    st.sampled_from([None, "kitchen", "tea"]),
    st.sampled_from([None, 10.0, 40.0]),
    st.booleans(),
    st.sets(st.sampled_from([c.item_id for c in ITEMS]), max_size=4),
)
def test_a_mask_over_candidates_is_the_full_mask_at_their_rows(
    rows: set[int], category: str | None, max_price: float | None, in_stock: bool, exclude: set[str]
) -> None:
    f = Filters(category=category, max_price=max_price, in_stock_only=in_stock, exclude=frozenset(exclude))
    r = np.array(sorted(rows), np.int64)
    ctx = _ctx(cart={product_id("Kettle"): NOW}, current_item=product_id("Teapot"))
    for kind in ItemKind:
        assert np.array_equal(filter_mask(CATALOG, f, kind, r), filter_mask(CATALOG, f, kind)[r])
        assert np.array_equal(allowed_mask(CATALOG, ctx, f, kind, r), allowed_mask(CATALOG, ctx, f, kind)[r])


def test_owned_cart_and_on_screen_items_are_hidden() -> None:
    kettle, tea, tent, teapot = (product_id(t) for t in ("Kettle", "Green tea", "Tent", "Teapot"))
    bought = [
        Event(visitor_id="v", item_id=i, event=EventType.PURCHASE, timestamp=NOW - 9) for i in (kettle, tea)
    ]
    ctx = _ctx(
        events=bought,
        purchases={kettle: NOW - 9, tea: NOW - 9},
        purchase_log=bought,
        cart={tent: NOW - 5},
        current_item=teapot,
    )
    hidden = {ITEMS[i].item_id for i in hidden_rows(CATALOG, ctx, Filters())}
    assert hidden == {kettle, tent, teapot}  # green tea is repeatable: it may be bought again
    assert {ITEMS[i].item_id for i in hidden_rows(CATALOG, ctx, Filters(include_purchased=True))} == {
        tent,
        teapot,
    }
    assert {ITEMS[i].item_id for i in hidden_rows(CATALOG, ctx, Filters(include_cart=True))} == {
        kettle,
        teapot,
    }
    allowed = _chosen(allowed_mask(CATALOG, ctx, Filters(), ItemKind.PRODUCT))
    assert allowed == _chosen(filter_mask(CATALOG, Filters(), ItemKind.PRODUCT)) - {kettle, tent, teapot}


def test_rows_of_skips_unknown_ids_and_event_rows_marks_them() -> None:
    kettle = product_id("Kettle")
    assert CATALOG.rows_of(["ghost", kettle]).tolist() == [CATALOG.index[kettle]]
    events = [
        Event(visitor_id="v", item_id=i, event=EventType.PAGE_VIEW, timestamp=1.0) for i in ("ghost", kettle)
    ]
    assert CATALOG.event_rows(events) == [-1, CATALOG.index[kettle]]


def test_live_fields_give_the_columns_a_catalog_built_with_them_has() -> None:
    rows = [
        CATALOG.index[product_id("Kettle")],
        CATALOG.index["c-tea-101"],
        CATALOG.index[product_id("Tent")],
    ]
    live = [
        msgspec.structs.replace(
            ITEMS[rows[0]], price=12.0, in_stock=False, category="Kettles", repeatable=True, tags=("Sale",)
        ),
        msgspec.structs.replace(ITEMS[rows[1]], stages=(Stage.DECISION, Stage.RETENTION)),
        msgspec.structs.replace(ITEMS[rows[2]], kind=ItemKind.CONTENT),
    ]
    got = CATALOG.with_live(np.array(rows), live, None)
    items = list(ITEMS)
    for r, c in zip(rows, live, strict=True):
        items[r] = c
    want = CatalogColumns.build(items)

    # codes may differ (a new category takes the next one); the names per row agree
    def names(c: CatalogColumns) -> list[str]:
        by_code = {v: k for k, v in c.categories.items()}
        return [by_code[int(x)] for x in c.category]

    assert names(got) == names(want)
    assert got.categories["kitchen"] == CATALOG.categories["kitchen"]  # an old name keeps its code
    for name in (
        "is_product",
        "in_stock",
        "repeatable",
        "serves",
        "products_in_stock",
        "specificity",
    ):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert np.array_equal(got.price, want.price, equal_nan=True)
    assert got.items == want.items
    assert got.category_by_row == want.category_by_row

    def tagged(c: CatalogColumns) -> dict[str, list[int]]:
        m = c.tag_items.tocsr()
        return {t: sorted(m[code].indices.tolist()) for t, code in c.tags.items() if m[code].nnz}

    assert tagged(got) == tagged(want)
    assert tagged(got)["sale"] == [rows[0]]
    assert CATALOG.price[rows[0]] == 39.0  # unchanged
    with pytest.raises(ValueError, match="not 'x'"):
        CATALOG.with_live(np.array([0]), [msgspec.structs.replace(ITEMS[0], item_id="x")], None)


def test_availability_keeps_hidden_items_and_closed_windows_out_of_every_mask() -> None:
    n = len(CATALOG)
    kettle, tent, teapot = (CATALOG.index[product_id(t)] for t in ("Kettle", "Tent", "Teapot"))
    servable = np.ones(n, bool)
    servable[kettle] = False
    live = Availability(servable, np.array([teapot, tent]), np.array([NOW, -np.inf]), np.array([np.inf, NOW]))
    assert live.closed(NOW - 1).tolist() == [teapot]
    assert live.closed(NOW).tolist() == [tent]
    assert live.closed(None).tolist() == [teapot, tent]  # no time: no window can be trusted open
    c = CatalogColumns.with_live(CATALOG, np.zeros(0, np.int64), [], live)
    f = Filters(in_stock_only=False)
    for now, off in ((NOW - 1, {kettle, teapot}), (NOW, {kettle, tent})):
        m = filter_mask(c, f, ItemKind.PRODUCT, None, now)
        assert set(np.flatnonzero(CATALOG.is_product & ~m).tolist()) == off
        rows = np.array(sorted({kettle, tent, teapot, 0}))
        assert filter_mask(c, f, ItemKind.PRODUCT, rows, now).tolist() == [r not in off for r in rows]
        assert set(np.flatnonzero(~served_mask(c, now)).tolist()) == off
        assert not allowed_mask(c, _ctx(now=now), f, ItemKind.PRODUCT)[sorted(off)].any()
