"""Item-to-item answers and retargeting, on the storefront model."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from models.domain import Event, EventType, ItemKind, Source, Stage
from models.recommender import Recommender
from models.related import page_anchors, related_items, retarget
from models.request import Filters, VisitorContext
from models.serving_rules import ServingRules
from tests.storefront import OUT_OF_STOCK_TITLE, product_id

NOW = 1_750_000_000.0
KETTLE, TOASTER, TENT = product_id("Kettle"), product_id("Toaster"), product_id("Tent")
TEAS = {product_id(t) for t in ("Green tea", "Black tea", "Herbal tea", "Chai blend")}


def ev(item: str, kind: EventType, t: float) -> Event:
    return Event(visitor_id="v", item_id=item, event=kind, timestamp=t)


def ctx_of(**kw: object) -> VisitorContext:
    base: dict[str, object] = {"visitor_id": "v", "events": [], "cart": {}, "purchases": {}, "now": NOW}
    return VisitorContext(**{**base, **kw})  # type: ignore[arg-type]


def test_complements_recover_the_bundles_and_leave_out_the_anchor(recommender: Recommender) -> None:
    got = related_items(recommender.related, [KETTLE], 5, Filters(), "complement")
    ids = [r.item_id for r in got]
    assert TEAS & set(ids)  # the simulated bundles: kettles sell with tea
    assert KETTLE not in ids
    assert all(r.source is Source.COMPLEMENT and r.reason.startswith("often bought with Kettle") for r in got)
    assert [r.score for r in got] == sorted((r.score for r in got), reverse=True)


def test_similar_items_respect_the_filters(recommender: Recommender) -> None:
    outdoor = {
        c.item_id for c in recommender.catalog.items if c.category == "outdoor" and c.kind is ItemKind.PRODUCT
    }
    got = related_items(recommender.related, [TENT, "ghost"], 10, Filters(category="outdoor"), "similar")
    ids = {r.item_id for r in got}
    assert ids == outdoor - {
        TENT,
        product_id(OUT_OF_STOCK_TITLE),
    }  # every in-stock outdoor product but the anchor
    assert all(r.source is Source.SIMILAR and r.reason == "similar to Tent" for r in got)
    content = related_items(recommender.related, [TENT], 3, Filters(kind=ItemKind.CONTENT), "similar")
    assert content
    assert all(r.item_id.startswith("c-") for r in content)
    assert related_items(recommender.related, ["ghost"], 3, Filters(), "similar") == []


def test_page_anchors(recommender: Recommender) -> None:
    c = recommender.catalog
    assert page_anchors(c, ctx_of(current_item=KETTLE, cart={TENT: NOW})).tolist() == [c.index[KETTLE]]
    assert page_anchors(c, ctx_of(current_item="ghost", cart={TENT: NOW})).tolist() == [c.index[TENT]]
    assert page_anchors(c, ctx_of(placement="cart")).tolist() == []


def test_retargeting_puts_the_cart_first_then_browsed_items_then_complements(
    recommender: Recommender,
) -> None:
    rules = recommender.serving
    ctx = ctx_of(
        events=[
            ev(TOASTER, EventType.PRODUCT_VIEW, NOW - 3600),
            ev(KETTLE, EventType.ADD_TO_CART, NOW - 1800),
        ],
        cart={KETTLE: NOW - 1800},
    )
    got = retarget(recommender.related, ctx, Stage.DECISION, 6, Filters(), frozenset())
    assert [(r.item_id, r.source, r.score) for r in got[:2]] == [
        (KETTLE, Source.ABANDONED_CART, rules.abandoned_cart_score),
        (TOASTER, Source.BROWSED, rules.browsed_score),
    ]
    assert got[0].reason == "left in your cart 30 min ago"
    assert got[1].reason == "you viewed this 1 h ago — still deciding?"
    rest = got[2:]
    assert rest
    assert all(r.source is Source.COMPLEMENT for r in rest)
    assert TEAS & {r.item_id for r in rest}
    assert len({r.item_id for r in got}) == len(got)


def test_retargeting_leaves_out_what_was_sent_bought_or_is_out_of_stock(recommender: Recommender) -> None:
    lantern = product_id(OUT_OF_STOCK_TITLE)
    bought = ev(TENT, EventType.PURCHASE, NOW - 7200)
    ctx = ctx_of(
        events=[
            ev(lantern, EventType.PRODUCT_VIEW, NOW - 9000),
            bought,
            ev(TOASTER, EventType.PRODUCT_VIEW, NOW - 60),
        ],
        cart={KETTLE: NOW - 1800},
        purchases={TENT: bought.timestamp},
        purchase_log=[bought],
    )
    got = retarget(recommender.related, ctx, Stage.DECISION, 10, Filters(), frozenset({KETTLE}))
    ids = [r.item_id for r in got]
    assert ids[0] == TOASTER
    assert not {KETTLE, TENT, lantern} & set(ids)
    assert len(retarget(recommender.related, ctx, Stage.DECISION, 2, Filters(), frozenset())) == 2


def test_advocates_get_only_complements_of_what_they_own(recommender: Recommender) -> None:
    ctx = ctx_of(events=[ev(TOASTER, EventType.PRODUCT_VIEW, NOW - 60)], cart={KETTLE: NOW - 60})
    got = retarget(recommender.related, ctx, Stage.ADVOCACY, 5, Filters(), frozenset())
    assert got
    assert all(r.source is Source.COMPLEMENT for r in got)


def test_retargeting_scores_are_the_models_serving_rules(recommender: Recommender) -> None:
    rules = ServingRules(abandoned_cart_score=7.5, browsed_score=6.25)
    bundle = recommender.bundle
    model = Recommender(replace(bundle, manifest=msgspec.structs.replace(bundle.manifest, serving=rules)))
    ctx = ctx_of(events=[ev(TOASTER, EventType.PRODUCT_VIEW, NOW - 60)], cart={KETTLE: NOW - 60})
    got = model.retargeting(ctx, 2, Filters(), frozenset())
    assert [(r.item_id, r.score) for r in got] == [(KETTLE, 7.5), (TOASTER, 6.25)]


@pytest.mark.parametrize("which", ["similar", "complement"])
def test_the_front_answers_as_the_module(recommender: Recommender, which: str) -> None:
    front = recommender.similar if which == "similar" else recommender.complements
    assert front([KETTLE], 4, Filters()) == related_items(recommender.related, [KETTLE], 4, Filters(), which)  # type: ignore[arg-type]
