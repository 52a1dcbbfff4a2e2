"""``Recommender.with_overlay``: the live catalog on the storefront model. Stock, price, hidden, retired
and availability windows apply to every answer; new items join from their features."""

from __future__ import annotations

import msgspec
import pytest

from models.domain import CatalogItem, Event, EventType, ItemKind, Stage
from models.overlay import CatalogOverlay, LiveItem
from models.recommender import Recommender
from models.request import Filters, RecommendedItem, VisitorContext
from tests.storefront import product_id

NOW = 1_750_000_000.0
KETTLE, TEAPOT, TENT = product_id("Kettle"), product_id("Teapot"), product_id("Tent")
GREEN_TEA = product_id("Green tea")


def ev(item: str, kind: EventType, t: float, visitor: str = "v") -> Event:
    return Event(visitor_id=visitor, item_id=item, event=kind, timestamp=t)


def ctx_of(**kw: object) -> VisitorContext:
    base: dict[str, object] = {"visitor_id": "v", "events": [], "cart": {}, "purchases": {}, "now": NOW}
    return VisitorContext(**{**base, **kw})  # type: ignore[arg-type]


def kitchen_browser(now: float = NOW, **kw: object) -> VisitorContext:
    """A visitor the model never saw who looked at three kitchen products."""
    items = [KETTLE, TEAPOT, product_id("Mug set")]
    events = [ev(i, EventType.PRODUCT_VIEW, now - 900 + 60 * j) for j, i in enumerate(items)]
    return ctx_of(events=events, now=now, **kw)


def item(rec: Recommender, item_id: str) -> CatalogItem:
    return rec.base.catalog.items[rec.base.catalog.index[item_id]]


def patched(rec: Recommender, item_id: str, t: float = NOW - 10, **fields: object) -> LiveItem:
    """A live entry for a trained item: its catalog fields with ``fields`` changed (LiveItem fields too)."""
    live_keys = {"hidden", "available_from", "expires_at", "retired"}
    live = {k: v for k, v in fields.items() if k in live_keys}
    changes = {k: v for k, v in fields.items() if k not in live_keys}
    return LiveItem(item=msgspec.structs.replace(item(rec, item_id), **changes), updated_at=t, **live)  # type: ignore[arg-type]


def overlay(*entries: LiveItem, version: int = 1) -> CatalogOverlay:
    return CatalogOverlay(version, {e.item.item_id: e for e in entries})


def ids(items: list[RecommendedItem]) -> list[str]:
    return [r.item_id for r in items]


def every_answer(rec: Recommender, ctx: VisitorContext, anchors: list[str], f: Filters) -> dict[str, bytes]:
    """Every path's answer, encoded: recommend (products and content), fallback, similar, complements and
    retargeting."""
    enc = msgspec.json.encode
    return {
        "recommend": enc(rec.recommend(ctx, 10, f, n_content=5)),
        "fallback": enc(rec.fallback(ctx, 30, f, n_content=5)),
        "similar": enc(rec.similar(anchors, 30, f, now=ctx.now)),
        "complements": enc(rec.complements(anchors, 30, f, now=ctx.now)),
        "content_similar": enc(rec.similar(anchors, 30, Filters(kind=ItemKind.CONTENT), now=ctx.now)),
        "retargeting": enc(rec.retargeting(ctx, 30, f, frozenset())),
    }


def served_ids(rec: Recommender, ctx: VisitorContext, anchors: list[str], f: Filters) -> set[str]:
    """The item ids of every answer of ``every_answer``."""
    r = rec.recommend(ctx, 10, f, n_content=5)
    fb = rec.fallback(ctx, 30, f, n_content=5)
    out = [
        *r.products,
        *r.content,
        *fb.products,
        *fb.content,
        *rec.similar(anchors, 30, f, now=ctx.now),
        *rec.complements(anchors, 30, f, now=ctx.now),
        *rec.similar(anchors, 30, Filters(kind=ItemKind.CONTENT), now=ctx.now),
        *rec.retargeting(ctx, 30, f, frozenset()),
    ]
    return set(ids(out))


CONTEXTS = [
    ctx_of(),
    kitchen_browser(),
    kitchen_browser(visitor_id="sim-0001"),
    ctx_of(events=[ev(TENT, EventType.PURCHASE, NOW - 86_400)], purchases={TENT: NOW - 86_400}),
    ctx_of(cart={KETTLE: NOW - 600}, placement="cart"),
    kitchen_browser(current_item=KETTLE, stage_override=Stage.DECISION),
]


@pytest.mark.parametrize("ctx", CONTEXTS)
def test_an_empty_overlay_answers_byte_identically(recommender: Recommender, ctx: VisitorContext) -> None:
    restated = overlay(*(LiveItem(item=c, updated_at=NOW) for c in recommender.catalog.items[::3]))
    for live in (recommender.with_overlay(CatalogOverlay()), recommender.with_overlay(restated)):
        for f in (Filters(), Filters(in_stock_only=False, category="kitchen")):
            assert every_answer(live, ctx, [KETTLE, TENT], f) == every_answer(
                recommender, ctx, [KETTLE, TENT], f
            )


def test_a_patch_shares_the_models_arrays(recommender: Recommender) -> None:
    live = recommender.with_overlay(overlay(patched(recommender, KETTLE, price=10.0, in_stock=False)))
    assert live.scorer is recommender.scorer
    assert live.candidates is recommender.candidates
    assert live.related.norm_repr is recommender.related.norm_repr
    assert live.catalog.index is recommender.catalog.index
    assert live.catalog.repeatable is not recommender.catalog.repeatable  # copied: the patch may change it
    assert recommender.catalog.in_stock[recommender.catalog.index[KETTLE]]  # the base is unchanged
    assert recommender.catalog.price[recommender.catalog.index[KETTLE]] == 39.0


def test_out_of_stock_leaves_recommend_similar_complements_and_retargeting(recommender: Recommender) -> None:
    ctx = kitchen_browser(cart={GREEN_TEA: NOW - 300})
    before = recommender.complements([KETTLE], 10, Filters(), now=NOW)
    assert GREEN_TEA in ids(before)
    assert GREEN_TEA in ids(recommender.retargeting(ctx, 10, Filters(), frozenset()))
    similar = recommender.similar([KETTLE], 30, Filters(), now=NOW)
    assert TEAPOT in ids(similar)
    recommended = ids(recommender.recommend(ctx_of(visitor_id="sim-0002"), 30, Filters()).products)
    assert TEAPOT in recommended
    assert GREEN_TEA in recommended
    live = recommender.with_overlay(
        overlay(patched(recommender, GREEN_TEA, in_stock=False), patched(recommender, TEAPOT, in_stock=False))
    )
    assert GREEN_TEA not in ids(live.complements([KETTLE], 10, Filters(), now=NOW))
    assert GREEN_TEA not in ids(live.retargeting(ctx, 10, Filters(), frozenset()))
    assert TEAPOT not in ids(live.similar([KETTLE], 30, Filters(), now=NOW))
    after = ids(live.recommend(ctx_of(visitor_id="sim-0002"), 30, Filters()).products)
    assert TEAPOT not in after
    assert GREEN_TEA not in after
    assert TEAPOT not in ids(live.fallback(ctx_of(), 30, Filters()).products)
    # stock is a filter: a caller who asks for out-of-stock items gets them
    assert TEAPOT in ids(live.similar([KETTLE], 30, Filters(in_stock_only=False), now=NOW))


HIDDEN_CONTENT = "c-tea-101"  # the awareness guide an unknown visitor is shown first


@pytest.mark.parametrize(
    "flags",
    [
        {"hidden": True},
        {"retired": True},
        {"expires_at": NOW - 1.0},
        {"available_from": NOW + 1.0},
    ],
)
def test_hidden_retired_and_unavailable_items_are_gone_from_every_path(
    recommender: Recommender, flags: dict[str, object]
) -> None:
    ctx = kitchen_browser(cart={GREEN_TEA: NOW - 300}, purchases={TENT: NOW - 9e5})
    anchors = [KETTLE, TENT, TEAPOT]
    f = Filters(in_stock_only=False)
    targets = [GREEN_TEA, TEAPOT, product_id("Sleeping bag"), HIDDEN_CONTENT, product_id("Toaster")]
    before = served_ids(recommender, ctx, anchors, f) | served_ids(recommender, ctx_of(), anchors, f)
    assert set(targets) <= before
    live = recommender.with_overlay(overlay(*(patched(recommender, t, **flags) for t in targets)))
    after = served_ids(live, ctx, anchors, f) | served_ids(live, ctx_of(), anchors, f)
    assert after.isdisjoint(targets)
    assert after  # the rest is still served


def test_availability_windows_follow_the_requests_time(recommender: Recommender) -> None:
    opens, closes = NOW + 3_600, NOW + 7_200
    live = recommender.with_overlay(
        overlay(patched(recommender, TEAPOT, available_from=opens, expires_at=closes))
    )
    for t, served in ((NOW, False), (opens - 1, False), (opens, True), (closes - 1, True), (closes, False)):
        assert (TEAPOT in ids(live.similar([KETTLE], 30, Filters(), now=t))) is served, t
        got = ids(live.fallback(ctx_of(now=t), 30, Filters()).products)
        assert (TEAPOT in got) is served, t
        got = ids(live.recommend(ctx_of(visitor_id="sim-0002", now=t), 30, Filters()).products)
        assert (TEAPOT in got) is served, t


def test_a_price_change_moves_an_item_across_price_filters(recommender: Recommender) -> None:
    cheap = Filters(max_price=20.0)
    dear = Filters(min_price=30.0)
    assert KETTLE not in ids(recommender.similar([TEAPOT], 30, cheap, now=NOW))
    assert KETTLE in ids(recommender.similar([TEAPOT], 30, dear, now=NOW))
    live = recommender.with_overlay(overlay(patched(recommender, KETTLE, price=15.0)))
    assert KETTLE in ids(live.similar([TEAPOT], 30, cheap, now=NOW))
    assert KETTLE not in ids(live.similar([TEAPOT], 30, dear, now=NOW))
    assert KETTLE in ids(live.fallback(ctx_of(), 30, cheap).products)
    assert KETTLE not in ids(live.fallback(ctx_of(), 30, dear).products)


def test_a_category_change_moves_the_category_filter(recommender: Recommender) -> None:
    live = recommender.with_overlay(overlay(patched(recommender, KETTLE, category="Kettles")))
    assert ids(live.fallback(ctx_of(), 30, Filters(category="kettles")).products) == [KETTLE]
    assert KETTLE not in ids(live.fallback(ctx_of(), 30, Filters(category="kitchen")).products)
    assert "kettles" not in recommender.catalog.categories
