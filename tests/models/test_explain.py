"""Why each chosen item is shown: its source and the sentence naming the anchor it relates to."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from models.blend import BOUGHT_COUNT, LIGHTFM, TRENDING
from models.domain import DAY, Event, EventType, Source, Stage
from models.explain import explain, item_sources
from models.history import older_purchases
from models.recommender import Recommender
from models.request import Filters, VisitorContext
from tests.storefront import product_id

E = EventType
NOW = 1_750_000_000.0
KETTLE = product_id("Kettle")


def ev(item: str, kind: EventType, t: float, visitor: str = "v") -> Event:
    return Event(visitor_id=visitor, item_id=item, event=kind, timestamp=t)


def test_sources_are_the_dominant_feature_unless_the_page_explains_the_item() -> None:
    scored = SimpleNamespace(
        dominant_feature=lambda pos: np.array([LIGHTFM, BOUGHT_COUNT, TRENDING, LIGHTFM])[pos]
    )
    positions = np.array([0, 1, 2, 3], np.int64)
    assert item_sources(scored, positions, None, 0.2) == [  # type: ignore[arg-type]
        Source.PERSONALIZED,
        Source.BUY_AGAIN,
        Source.TRENDING,
        Source.PERSONALIZED,
    ]
    comp = np.array([0.0, 0.5, 0.2, 0.1], np.float32)
    sim = np.array([0.9, 0.1, 0.0, 0.3], np.float32)
    assert item_sources(scored, positions, (comp, sim), 0.2) == [  # type: ignore[arg-type]
        Source.SIMILAR,
        Source.COMPLEMENT,
        Source.TRENDING,  # 0.2 is not above the threshold
        Source.SIMILAR,
    ]


def _tea_with_kettle(rec: Recommender) -> str:
    """A tea the model learned goes with the kettle (the storefront's bundles)."""
    m, row = rec.scorer.tables.complements, rec.catalog.index[KETTLE]
    cols = m.indices[m.indptr[row] : m.indptr[row + 1]]
    return next(
        rec.catalog.items[int(c)].item_id for c in cols if rec.catalog.items[int(c)].category == "tea"
    )


def test_a_complement_names_the_cart_item_it_goes_with(recommender: Recommender) -> None:
    c = recommender.catalog
    tea = _tea_with_kettle(recommender)
    ctx = VisitorContext(visitor_id="v", events=[], cart={KETTLE: NOW - 60}, purchases={}, now=NOW)
    idx = c.rows_of([tea])
    got = explain(
        c,
        recommender.scorer.tables,
        idx,
        np.array([1.5], np.float32),
        [Source.COMPLEMENT],
        ctx,
        Stage.AWARENESS,
        None,
        [],
        [],
    )
    assert [(r.item_id, r.score, r.source) for r in got] == [(tea, 1.5, Source.COMPLEMENT)]
    assert got[0].reason == "complements the Kettle in your cart"
    # the page's anchors, when given, are the ones looked at
    on_page = VisitorContext(visitor_id="v", events=[], cart={}, purchases={}, now=NOW, current_item=KETTLE)
    got = explain(
        c,
        recommender.scorer.tables,
        idx,
        np.array([1.5], np.float32),
        [Source.COMPLEMENT],
        on_page,
        Stage.AWARENESS,
        c.rows_of([KETTLE]),
        [],
        [],
    )
    assert got[0].reason == "complements the Kettle you are viewing"


def test_buy_again_counts_every_purchase_the_state_reaches(recommender: Recommender) -> None:
    c = recommender.catalog
    tea = product_id("Green tea")
    log = [ev(tea, E.PURCHASE, NOW - 40 * DAY), ev(tea, E.PURCHASE, NOW - 3 * DAY)]
    ctx = VisitorContext(
        visitor_id="v", events=[log[1]], cart={}, purchases={tea: NOW - 3 * DAY}, now=NOW, purchase_log=log
    )
    got = explain(
        c,
        recommender.scorer.tables,
        c.rows_of([tea]),
        np.array([2.0], np.float32),
        [Source.BUY_AGAIN],
        ctx,
        Stage.RETENTION,
        None,
        c.event_rows(ctx.events),
        older_purchases(ctx),
    )
    assert got[0].reason == "you bought this 2 times 3 days ago — time to restock?"


def test_a_bought_anchor_is_named_as_bought(recommender: Recommender) -> None:
    products = [c for c in recommender.catalog.items if c.kind.value == "product"]
    reasons: list[str] = []
    for anchor in products[:20]:  # a few purchases, so that some similar/complement item names its anchor
        bought = ev(anchor.item_id, E.PURCHASE, NOW - 3600, visitor="b")
        ctx = VisitorContext(
            visitor_id="b",
            events=[bought],
            cart={},
            purchases={anchor.item_id: bought.timestamp},
            now=NOW,
            purchase_log=[bought],
        )
        reasons += [
            r.reason
            for r in recommender.recommend(ctx, 20, Filters()).products
            if r.source in (Source.SIMILAR, Source.COMPLEMENT)
            and (anchor.title or anchor.item_id) in r.reason
        ]
    assert reasons
    assert all(r.endswith("you bought") for r in reasons), reasons
