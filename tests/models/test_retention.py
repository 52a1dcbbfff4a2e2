"""What retention serves right after a one-off purchase: the kettle's tea, not another kitchen appliance.

Two blends of the storefront's model: the one it was fitted with (the storefront has too few retention
visitors for its retention fit to mean much), and a handcrafted retention blend that weighs every feature
as a fitted blend may, the substitute feature at 0: what keeps the substitutes out is the retention stage's
candidates (``ServingRules.substitute_cutoff``), whatever the blend.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from models.blend import FEATURE_NAMES
from models.domain import DAY, CatalogItem, Event, EventType, ItemKind, Stage
from models.recommender import Recommender
from models.request import Filters, Recommendations, VisitorContext
from tests.storefront import BUNDLES, product_id, storefront_catalog

KETTLE = product_id("Kettle")
# the kettle's bundles in the storefront: it sells with green and black tea
TEAS_WITH_KETTLE = {product_id("Green tea"), product_id("Black tea")}
GREEN_TEA = product_id("Green tea")
PRODUCTS = [c for c in storefront_catalog() if c.kind is ItemKind.PRODUCT]
# every one-off product a visitor can buy (in stock, not repeatable)
ONE_OFF = [c for c in PRODUCTS if c.in_stock and not c.repeatable]
# each product's bundle partner (tests/storefront.py): bought together, so complements
PARTNER = {product_id(a): product_id(b) for pair in BUNDLES for a, b in (pair, pair[::-1])}
K = 5


def _handcrafted(recommender: Recommender, substitute: float = 0.0) -> Recommender:
    w = dict.fromkeys(FEATURE_NAMES, 0.0)
    w.update(
        lightfm=1.0,
        bought_count=0.5,
        repeat_propensity=1.0,
        touch_recency=0.5,
        interest=0.5,
        complement=1.0,
        similar=1.0,
        popularity=0.5,
        bought_decayed=0.5,
        substitute=substitute,
    )
    weights = recommender.bundle.blend_weights.copy()
    weights[Stage.RETENTION.index] = [w[f] for f in FEATURE_NAMES]
    return Recommender(replace(recommender.bundle, blend_weights=weights))


@pytest.fixture(scope="module", params=["fitted", "handcrafted"])
def model(request: pytest.FixtureRequest, recommender: Recommender) -> Recommender:
    return recommender if request.param == "fitted" else _handcrafted(recommender)


def _bought(
    model: Recommender, item: CatalogItem, ago: float = 898.0, before: list[Event] | None = None
) -> Recommendations:
    """Compared three other items of its category, then bought ``item`` ``ago`` seconds before now."""
    now = model.manifest.trained_until + 3600
    others = [c.item_id for c in PRODUCTS if c.category == item.category and c.item_id != item.item_id][:3]
    viewed = [*others, item.item_id]
    t0 = now - ago - 3600
    events = list(before or [])
    events += [
        Event(visitor_id="walker", item_id=i, event=EventType.PRODUCT_VIEW, timestamp=t0 + 60 * n)
        for n, i in enumerate(viewed)
    ]
    events += [
        Event(visitor_id="walker", item_id=item.item_id, event=e, timestamp=now - ago - 2 + n)
        for n, e in enumerate((EventType.ADD_TO_CART, EventType.CHECKOUT, EventType.PURCHASE))
    ]
    purchases = {e.item_id: e.timestamp for e in events if e.event is EventType.PURCHASE}
    ctx = VisitorContext(visitor_id="walker", events=events, cart={}, purchases=purchases, now=now)
    return model.recommend(ctx, K, Filters())


def _item(model: Recommender, item_id: str) -> CatalogItem:
    return model.catalog.items[model.catalog.index[item_id]]


def _kettle() -> CatalogItem:
    return next(c for c in PRODUCTS if c.item_id == KETTLE)


def test_after_a_kettle_retention_serves_its_complements_and_how_to_content(recommender: Recommender) -> None:
    model = _handcrafted(recommender)
    assert not _item(model, KETTLE).repeatable
    got = _bought(model, _kettle())
    assert got.stage.stage is Stage.RETENTION
    assert {r.item_id for r in got.products[:2]} == TEAS_WITH_KETTLE
    assert got.products[0].reason == "complements the Kettle you bought"
    assert "kitchen" not in {_item(model, r.item_id).category for r in got.products}
    assert got.content[0].item_id == "c-kettle-care"  # "Descaling your kettle", retention's how-to


def test_right_after_any_one_off_purchase_retention_serves_no_substitute(model: Recommender) -> None:
    """For every one-off product of the storefront: no other one-off product of its category that was not
    bought with it. What of its category may remain are its bundle partner (a complement: most of the
    storefront's bundles share a category, the teapot's tea infuser is kitchen too) and repeatable items
    (the garden's plant food after a garden hose); without the partners, at most 10 % of the slots."""
    slots = repeatable = substitutes = 0
    for item in ONE_OFF:
        got = _bought(model, item)
        assert got.stage.stage is Stage.RETENTION, item.title
        alike = [c for c in (_item(model, r.item_id) for r in got.products) if c.category == item.category]
        slots += len(got.products)
        repeatable += sum(c.repeatable for c in alike)
        substitutes += sum(not c.repeatable and PARTNER.get(item.item_id) != c.item_id for c in alike)
    assert slots == K * len(ONE_OFF)
    assert substitutes == 0
    assert repeatable <= 0.10 * slots, (repeatable, slots)


def test_complements_are_served_after_the_purchase_even_in_its_own_category(recommender: Recommender) -> None:
    """Each bundle's partner is served right after the other was bought (handcrafted blend: the complement
    feature weighs as much as the factor score); most bundles share a category, so the cutoff spares them."""
    model = _handcrafted(recommender)
    for item in ONE_OFF:
        partner = PARTNER.get(item.item_id)
        if partner is None or not _item(model, partner).in_stock:
            continue
        assert partner in [r.item_id for r in _bought(model, item).products], item.title


def test_a_repeatable_item_is_still_replenished(model: Recommender) -> None:
    """Green tea bought 20 days ago (a repeatable item: its pack runs out), a kettle now: the tea is
    served again."""
    now = model.manifest.trained_until + 3600
    tea = [
        Event(visitor_id="walker", item_id=GREEN_TEA, event=e, timestamp=now - 20 * DAY + n)
        for n, e in enumerate((EventType.PRODUCT_VIEW, EventType.ADD_TO_CART, EventType.PURCHASE))
    ]
    got = _bought(model, _kettle(), before=tea)
    assert got.stage.stage is Stage.RETENTION
    assert GREEN_TEA in [r.item_id for r in got.products]


def test_days_after_the_purchase_its_category_may_be_served_again(recommender: Recommender) -> None:
    """The cutoff is about right after the purchase: ten days on, the substitute value has faded below it
    and, with the substitute feature at 0, kitchen items come back (the test above can fail)."""
    model = _handcrafted(recommender)
    got = _bought(model, _kettle(), ago=10 * DAY)
    assert got.stage.stage is Stage.RETENTION
    assert "kitchen" in {_item(model, r.item_id).category for r in got.products}
