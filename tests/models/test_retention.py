"""What retention serves right after a one-off purchase: the kettle's tea, not another kitchen appliance.

The storefront's model with a handcrafted retention blend (the storefront has too few retention visitors
to fit one): every feature as a fitted blend weighs it, and the substitute feature at a negative weight,
which is the direction the fit may take it (``blend.NON_POSITIVE``).
"""

from __future__ import annotations

from dataclasses import replace

from models.blend import FEATURE_NAMES
from models.domain import Event, EventType, ItemKind, Stage
from models.recommender import Recommender
from models.request import Filters, Recommendations, VisitorContext
from tests.storefront import product_id

KETTLE = product_id("Kettle")
# the kettle's bundles in the storefront: it sells with green and black tea
TEAS_WITH_KETTLE = {product_id("Green tea"), product_id("Black tea")}


def _retention_model(recommender: Recommender, substitute: float) -> Recommender:
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


def _just_bought_the_kettle(model: Recommender) -> Recommendations:
    """Compared kitchen items, then bought the (non-repeatable) kettle a quarter of an hour ago."""
    now = model.manifest.trained_until + 3600
    viewed = [product_id(t) for t in ("Toaster", "Teapot", "Kettle", "Mug set", "Kettle")]
    events = [
        Event(visitor_id="walker", item_id=i, event=EventType.PRODUCT_VIEW, timestamp=now - 3600 + 60 * n)
        for n, i in enumerate(viewed)
    ]
    events += [
        Event(visitor_id="walker", item_id=KETTLE, event=e, timestamp=now - 900 + n)
        for n, e in enumerate((EventType.ADD_TO_CART, EventType.CHECKOUT, EventType.PURCHASE))
    ]
    ctx = VisitorContext(visitor_id="walker", events=events, cart={}, purchases={KETTLE: now - 898}, now=now)
    return model.recommend(ctx, 5, Filters())


def _categories(model: Recommender, got: Recommendations) -> list[str]:
    c = model.catalog
    return [c.items[c.index[r.item_id]].category for r in got.products]


def test_after_a_kettle_retention_serves_its_complements_not_more_kitchen_appliances(
    recommender: Recommender,
) -> None:
    assert not recommender.catalog.items[recommender.catalog.index[KETTLE]].repeatable
    model = _retention_model(recommender, substitute=-3.0)
    got = _just_bought_the_kettle(model)
    assert got.stage.stage is Stage.RETENTION
    assert {r.item_id for r in got.products[:2]} == TEAS_WITH_KETTLE
    assert got.products[0].reason == "complements the Kettle you bought"
    assert "kitchen" not in _categories(model, got)  # no substitute of the kettle at all
    kinds = {model.catalog.items[model.catalog.index[r.item_id]].kind for r in got.products}
    assert kinds == {ItemKind.PRODUCT}


def test_without_the_substitute_feature_the_kitchen_comes_back(recommender: Recommender) -> None:
    """The same blend with the substitute feature weighing nothing serves kitchen items again: the
    feature, not the rest of the handcrafted blend, keeps them out."""
    model = _retention_model(recommender, substitute=0.0)
    got = _just_bought_the_kettle(model)
    assert "kitchen" in _categories(model, got)
