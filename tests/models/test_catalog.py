"""Catalog columns and the masks over them: what the filters allow, what the visitor's own items hide."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.catalog import CatalogColumns, allowed_mask, filter_mask, hidden_rows
from models.domain import Event, EventType, ItemKind
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
