"""``training.published.PublishedRanker``: a published model ranks as the model it was fitted as, in any
log's id space (items matched by id; an item the model never had is never recommended)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgspec
import numpy as np

from models import artifact
from models.domain import CatalogItem, ItemKind
from tests.storefront import simulate_storefront
from training.pipeline import config_for
from training.published import PublishedRanker
from training.stage_model import StageAwareRanker

K = 5


def _ids(log_catalog: list[CatalogItem], top: np.ndarray) -> list[set[str]]:
    # sets: equal scores are ordered by item index, which the reversed catalog reverses
    return [{log_catalog[i].item_id for i in row if i >= 0} for row in top]


def test_published_model_ranks_as_fitted_and_by_item_id(models_dir: Path) -> None:
    log = simulate_storefront(seed=7)  # the log tests/conftest.py's model was fitted on
    cfg = config_for(None, seed=7, threads=1)
    cfg = msgspec.structs.replace(
        cfg, factors=msgspec.structs.replace(cfg.factors, no_components=8, epochs=5, warm_epochs=1)
    )
    visitors = np.arange(log.n_visitors, dtype=np.int32)
    now = float(log.ts.max()) + 1.0
    fitted = StageAwareRanker(cfg)
    fitted.fit(log)
    published = PublishedRanker(artifact.load(models_dir), cfg)
    published.fit(log)
    expected = fitted.recommend(visitors, now, K, exclude_seen=False)
    got = published.recommend(visitors, now, K, exclude_seen=False)
    np.testing.assert_array_equal(got, expected)

    # the same events over the catalog in reverse order: the same lists, item by item id
    new_pos = np.arange(log.n_items)[::-1]
    reverse = replace(log, catalog=log.catalog[::-1], item=new_pos[log.item].astype(log.item.dtype))
    moved = PublishedRanker(artifact.load(models_dir), cfg)
    moved.fit(reverse)
    top = moved.recommend(visitors, now, K, exclude_seen=False)
    assert _ids(reverse.catalog, top) == _ids(log.catalog, expected)

    # with an item the model never had: never recommended
    extra = CatalogItem(item_id="p-new", kind=ItemKind.PRODUCT, title="New", category="kitchen", price=1.0)
    grown = replace(log, catalog=[*log.catalog, extra])
    with_new = PublishedRanker(artifact.load(models_dir), cfg)
    with_new.fit(grown)
    top = with_new.recommend(visitors, now, K, exclude_seen=False)
    assert (top >= 0).all()
    assert log.n_items not in top


def test_published_model_finds_each_visitors_own_basket_row_by_id(models_dir: Path) -> None:
    """The basket-neighbours source excludes each visitor's own pool row, which a published model finds by
    visitor id in any log's id space: the same visitors numbered in reverse, or one the model never saw."""
    log = simulate_storefront(seed=7)  # the log tests/conftest.py's model was fitted on
    cfg = config_for(None, seed=7, threads=1)
    visitors = np.arange(log.n_visitors, dtype=np.int32)
    published = PublishedRanker(artifact.load(models_dir), cfg)
    published.fit(log)
    assert published.pool_rows(visitors).tolist() == visitors.tolist()
    new_pos = np.arange(log.n_visitors + 1)[::-1]
    reverse = replace(
        log,
        visitor_ids=["stranger", *log.visitor_ids[::-1]],
        visitor_features=[[], *log.visitor_features[::-1]],
        visitor=new_pos[log.visitor].astype(log.visitor.dtype),
    )
    moved = PublishedRanker(artifact.load(models_dir), cfg)
    moved.fit(reverse)
    assert moved.pool_rows(new_pos[:-1]).tolist() == visitors.tolist()
    assert moved.pool_rows(np.array([0])).tolist() == [-1]
