"""Item-to-item answers and retargeting, on the storefront model."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import pytest

from models.domain import Event, EventType, ItemKind, Source, Stage
from models.recommender import Recommender
from models.related import page_anchors, related_items, retarget
from models.request import Filters, RecommendedItem, Relation, VisitorContext
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


def bought_with(rec: Recommender, item_ids: list[str]) -> set[str]:
    """The items the model saw bought together with any of ``item_ids`` (co-purchase evidence)."""
    m = rec.scorer.tables.complements
    rows = [rec.catalog.index[i] for i in item_ids]
    return {rec.catalog.items[int(j)].item_id for r in rows for j in m.indices[m.indptr[r] : m.indptr[r + 1]]}


def assert_honest(rec: Recommender, got: list[RecommendedItem], anchors: list[str]) -> None:
    """ "often bought with" exactly where there is co-purchase evidence; filler says what it is."""
    evidence = bought_with(rec, anchors)
    for r in got:
        assert (r.source is Source.COMPLEMENT) == (r.item_id in evidence), r
        assert r.reason.startswith("often bought with") == (r.item_id in evidence), r
        if r.source is Source.POPULAR:
            category = rec.catalog.items[rec.catalog.index[r.item_id]].category
            assert r.reason == f"popular in {category}"


def test_complements_recover_the_bundles_and_leave_out_the_anchor(recommender: Recommender) -> None:
    got = related_items(recommender.related, [KETTLE], 8, Filters(), "complement")
    ids = [r.item_id for r in got]
    assert (
        TEAS & set(ids) & bought_with(recommender, [KETTLE])
    )  # the simulated bundles: kettles sell with tea
    assert KETTLE not in ids
    assert (got[0].source, got[0].reason) == (Source.COMPLEMENT, "often bought with Kettle")
    assert_honest(recommender, got, [KETTLE])
    assert {r.source for r in got} - {Source.COMPLEMENT}  # past the bundles: filler, labelled as such
    assert [r.score for r in got] == sorted((r.score for r in got), reverse=True)


@pytest.mark.parametrize("relation", ["complement", "similar"])
def test_an_item_never_bought_with_anything_has_no_often_bought_with(
    recommender: Recommender, relation: Relation
) -> None:
    rel = recommender.related
    m = rel.tables.complements
    alone = [
        c.item_id
        for r, c in enumerate(rel.catalog.items)
        if c.kind is ItemKind.PRODUCT and m.indptr[r + 1] == m.indptr[r]
    ]
    assert alone  # the storefront sells some products only on their own
    for item in alone:
        got = related_items(rel, [item], 6, Filters(), relation)
        assert len(got) == 6
        assert not [r for r in got if r.source is Source.COMPLEMENT or "often bought with" in r.reason]
        # "similar to" only with evidence: co-interest, or an embedding cosine of at least related_min_cosine
        sim = rel.tables.similar
        anchor = rel.catalog.index[item]
        co_interest = {int(j) for j in sim.indices[sim.indptr[anchor] : sim.indptr[anchor + 1]]}
        for r in got:
            row = rel.catalog.index[r.item_id]
            cosine = float(rel.norm_repr[anchor] @ rel.norm_repr[row])
            alike = cosine >= rel.rules.related_min_cosine or (relation == "similar" and row in co_interest)
            if alike:
                assert (r.source, r.reason) == (Source.SIMILAR, f"similar to {rel.catalog.title(anchor)}")
            else:
                category = rel.catalog.items[row].category
                assert (r.source, r.reason) == (Source.POPULAR, f"popular in {category}"), (r, cosine)


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
    assert_honest(recommender, rest, [KETTLE])
    assert TEAS & {r.item_id for r in rest if r.source is Source.COMPLEMENT}
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
    assert_honest(recommender, got, [KETTLE])
    # what they own relates to each item: no abandoned-cart or browsed pushes
    assert {r.source for r in got} <= {Source.COMPLEMENT, Source.SIMILAR, Source.POPULAR}
    assert got[0].source is Source.COMPLEMENT


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
