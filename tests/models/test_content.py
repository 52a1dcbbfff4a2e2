"""Content for the visitor's stage: serving the stage, unread, in the visitor's categories first."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from models.catalog import CatalogColumns
from models.content import StageContent, rank_content
from models.domain import CatalogItem, EventType, ItemKind, Source, Stage
from models.serving_rules import DEFAULT_SERVING, ServingRules

C = ItemKind.CONTENT
ITEMS = [
    CatalogItem(item_id="guide-kitchen", kind=C, category="kitchen", stages=(Stage.CONSIDERATION,)),
    CatalogItem(item_id="guide-garden", kind=C, category="garden", stages=(Stage.CONSIDERATION,)),
    CatalogItem(item_id="all-kitchen", kind=C, category="kitchen"),
    CatalogItem(item_id="kettle", category="kitchen"),
    CatalogItem(item_id="read-tea", kind=C, category="tea", stages=(Stage.CONSIDERATION,)),
    CatalogItem(item_id="decide", kind=C, category="kitchen", stages=(Stage.DECISION,)),
]
CATALOG = CatalogColumns.build(ITEMS)
ROW = CATALOG.index


def _content(stage: Stage, rules: ServingRules, repr_: np.ndarray | None = None) -> StageContent:
    n = len(ITEMS)
    scorer = SimpleNamespace(
        item_repr=np.zeros((n, 2), np.float32) if repr_ is None else repr_, item_bias=np.zeros(n, np.float32)
    )
    return StageContent.build(CATALOG, scorer, stage, rules)  # type: ignore[arg-type]


def _events(*pairs: tuple[str, EventType]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([ROW[i] for i, _ in pairs], np.int64),
        np.array([e.code for _, e in pairs], np.int8),
    )


def test_unread_content_of_the_stage_in_the_visitors_categories_first() -> None:
    items, codes = _events(("kettle", EventType.PRODUCT_VIEW), ("read-tea", EventType.CONTENT_VIEW))
    sc = _content(Stage.CONSIDERATION, DEFAULT_SERVING)
    got = rank_content(CATALOG, sc, Stage.CONSIDERATION, 5, items, codes, np.zeros(2, np.float32))
    # equal factor scores: + 2 in the visitor's categories (kitchen; tea, whose guide they read), + 0.5 for
    # content specific to the stage
    assert [(r.item_id, r.score) for r in got] == [
        ("guide-kitchen", 2.5),
        ("all-kitchen", 2.0),
        ("guide-garden", 0.5),
    ]
    assert all(r.source is Source.CONTENT for r in got)
    assert got[0].reason == "helps you compare options about kitchen"
    assert rank_content(CATALOG, sc, Stage.CONSIDERATION, 0, items, codes, np.zeros(2, np.float32)) == []


def test_the_bonuses_are_the_models_serving_rules() -> None:
    items, codes = _events(("kettle", EventType.PRODUCT_VIEW))
    rules = ServingRules(content_category_bonus=0.25, content_stage_bonus=1.0)
    got = rank_content(
        CATALOG,
        _content(Stage.CONSIDERATION, rules),
        Stage.CONSIDERATION,
        5,
        items,
        codes,
        np.zeros(2, np.float32),
    )
    assert [(r.item_id, r.score) for r in got][:2] == [("guide-kitchen", 1.25), ("guide-garden", 1.0)]


def test_the_factor_model_orders_content_within_equal_bonuses() -> None:
    vectors = np.zeros((len(ITEMS), 2), np.float32)
    vectors[ROW["guide-garden"]] = [1.0, 0.0]
    vectors[ROW["guide-kitchen"]] = [-1.0, 0.0]
    sc = _content(Stage.CONSIDERATION, ServingRules(content_category_bonus=0.0), vectors)
    empty = np.zeros(0, np.int64), np.zeros(0, np.int8)
    got = rank_content(CATALOG, sc, Stage.CONSIDERATION, 4, *empty, np.array([1.0, 0.0], np.float32))
    # factor scores 1, 0, 0, -1 standardised (deviation 1/sqrt(2)), + 0.5 for content specific to the stage
    assert [r.item_id for r in got] == ["guide-garden", "read-tea", "all-kitchen", "guide-kitchen"]
    assert [r.score for r in got] == pytest.approx([1.914214, 0.5, 0.0, -0.914214], abs=1e-5)


def test_nothing_when_everything_was_read() -> None:
    items, codes = _events(("decide", EventType.CONTENT_VIEW))
    sc = _content(Stage.DECISION, DEFAULT_SERVING)
    assert [
        r.item_id for r in rank_content(CATALOG, sc, Stage.DECISION, 3, *_events(), np.zeros(2, np.float32))
    ] == [
        "decide",
        "all-kitchen",
    ]
    got = rank_content(CATALOG, sc, Stage.DECISION, 3, items, codes, np.zeros(2, np.float32))
    assert [r.item_id for r in got] == ["all-kitchen"]
