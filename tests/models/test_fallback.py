"""The fallback answer (visitor state unavailable): the crowd's favourites and stage content."""

from __future__ import annotations

import datetime as dt

import numpy as np
import scipy.sparse as sp

from models.catalog import CatalogColumns
from models.content import fallback_content
from models.domain import CatalogItem, Event, EventType, ItemKind, Source, Stage
from models.fallback import crowd_score, popular_items
from models.recommender import Recommender
from models.request import Filters, VisitorContext
from models.serving_rules import DEFAULT_SERVING, ServingRules
from models.sources import ItemTables
from tests.storefront import product_id

NOW = 1_750_000_000.0


def _tables(popularity: list[float], trending: list[float], as_of: float | None = None) -> ItemTables:
    n = len(popularity)
    empty = sp.csr_matrix((n, n), dtype=np.float32)
    return ItemTables(
        np.array(popularity, np.float32),
        np.array(trending, np.float32),
        np.zeros(n, np.float32),
        empty,
        empty,
        np.ones(n, bool),
        as_of=as_of,
    )


def test_crowd_score_known_answer() -> None:
    t = _tables([0.0, np.e - 1, 0.0], [0.0, 0.0, np.e**2 - 1])
    assert np.allclose(crowd_score(t, DEFAULT_SERVING), [0.0, 1.0, 1.0])  # log1p: 0, 1 and 0.5 * 2
    assert np.allclose(crowd_score(t, ServingRules(fallback_trending_weight=0.25)), [0.0, 1.0, 0.5])


def test_popular_items_are_best_first_and_trending_above_a_share_of_the_top() -> None:
    catalog = CatalogColumns.build([CatalogItem(item_id=f"i{i}") for i in range(4)])
    t = _tables([5, 4, 3, 2], [0.0, 0.5, 10.0, 0.9])
    score = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    allowed = np.array([True, True, True, False])
    got = popular_items(catalog, t, score, allowed, 5, Stage.AWARENESS, DEFAULT_SERVING)
    assert [(r.item_id, r.source) for r in got] == [
        ("i0", Source.POPULAR),  # not trending at all
        ("i1", Source.POPULAR),  # 0.5 < a tenth of the top trending score
        ("i2", Source.TRENDING),
    ]
    assert [r.score for r in got] == [0.9, 0.8, 0.7]
    assert got[0].reason == "popular with shoppers"
    got = popular_items(catalog, t, score, allowed, 2, Stage.AWARENESS, ServingRules(trending_share=0.04))
    assert [r.source for r in got] == [Source.POPULAR, Source.TRENDING]


def test_a_trending_reason_is_dated_by_the_models_data() -> None:
    catalog = CatalogColumns.build([CatalogItem(item_id=f"i{i}") for i in range(2)])
    data_end = 1_712_707_200.0  # 2024-04-10T00:00:00Z
    t = _tables([5, 4], [10.0, 9.0], as_of=data_end)
    score = np.array([0.9, 0.8], np.float32)
    allowed = np.ones(2, bool)

    def reasons(now: float | None) -> list[str]:
        got = popular_items(catalog, t, score, allowed, 2, Stage.CONSIDERATION, DEFAULT_SERVING, now=now)
        assert [r.source for r in got] == [Source.TRENDING, Source.TRENDING]
        return [r.reason for r in got]

    assert reasons(data_end + 600) == ["trending this week"] * 2
    assert reasons(data_end + 30 * 86_400) == ["trending in the week to 2024-04-09"] * 2
    assert reasons(None) == ["trending in the week to 2024-04-09"] * 2


def test_the_fallback_dates_trending_by_the_model_not_the_clock(recommender: Recommender) -> None:
    until = recommender.manifest.trained_until
    assert recommender.scorer.tables.as_of == until

    def trending_reasons(now: float) -> set[str]:
        ctx = VisitorContext(visitor_id="s", events=[], cart={}, purchases={}, now=now)
        got = recommender.fallback(ctx, 40, Filters()).products
        return {r.reason for r in got if r.source is Source.TRENDING}

    assert trending_reasons(until + 3600) == {"trending this week"}
    day = dt.datetime.fromtimestamp(until - 1, dt.UTC).date().isoformat()
    assert trending_reasons(until + 90 * 86_400) == {f"trending in the week to {day}"}


def test_fallback_content_serves_the_stage_specific_first() -> None:
    items = [
        CatalogItem(item_id="everyone", kind=ItemKind.CONTENT),
        CatalogItem(item_id="decide", kind=ItemKind.CONTENT, stages=(Stage.DECISION,)),
        CatalogItem(item_id="two", kind=ItemKind.CONTENT, stages=(Stage.DECISION, Stage.RETENTION)),
        CatalogItem(item_id="aware", kind=ItemKind.CONTENT, stages=(Stage.AWARENESS,)),
        CatalogItem(item_id="product"),
    ]
    catalog = CatalogColumns.build(items)
    got = fallback_content(catalog, Stage.DECISION, 5)
    assert [r.item_id for r in got] == ["decide", "two", "everyone"]
    assert all(r.source is Source.CONTENT and r.score == 0.0 for r in got)
    assert fallback_content(catalog, Stage.DECISION, 0) == []


def test_the_fallback_answer_hides_owned_items_and_says_why(recommender: Recommender) -> None:
    kettle, tent = product_id("Kettle"), product_id("Tent")
    stranger = VisitorContext(
        visitor_id="s", events=[], cart={tent: NOW}, purchases={kettle: NOW - 9}, now=NOW
    )
    k = 40
    got = recommender.fallback(stranger, k, Filters())
    assert got.fallback
    assert (got.stage.stage, got.stage.confidence) == (Stage.AWARENESS, 0.0)
    assert got.stage.signals == ["visitor state unavailable: showing popular items"]
    ids = [r.item_id for r in got.products]
    c = recommender.catalog
    allowed = {c.items[i].item_id for i in np.flatnonzero(c.products_in_stock)} - {kettle, tent}
    assert set(ids) == allowed  # k covers them all
    assert [r.score for r in got.products] == sorted((r.score for r in got.products), reverse=True)
    assert {r.source for r in got.products} <= {Source.POPULAR, Source.TRENDING}
    assert got.content
    assert all(c.serves[Stage.AWARENESS.index, c.index[r.item_id]] for r in got.content)
    assert all(not c.is_product[c.index[r.item_id]] for r in got.content)


def test_the_fallback_stage_comes_from_the_events_or_the_caller(recommender: Recommender) -> None:
    kettle = product_id("Kettle")
    cart = Event(visitor_id="v", item_id=kettle, event=EventType.ADD_TO_CART, timestamp=NOW - 60)
    ctx = VisitorContext(visitor_id="v", events=[cart], cart={kettle: NOW - 60}, purchases={}, now=NOW)
    assert recommender.fallback(ctx, 3, Filters()).stage.stage is Stage.DECISION
    override = VisitorContext(
        visitor_id="v", events=[], cart={}, purchases={}, now=NOW, stage_override=Stage.RETENTION
    )
    got = recommender.fallback(override, 3, Filters(category="garden"))
    assert got.stage.stage is Stage.RETENTION
    assert all(r.item_id.startswith("p-garden-") for r in got.products)
