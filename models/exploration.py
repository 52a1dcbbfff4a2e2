"""Exploration: slots of a product list kept for the live catalog's new items, which no one has
interacted with yet (``models.serving_rules.Exploration``). The model scores them from their features
alone, so without a share of slots they would wait behind items with a history."""

from __future__ import annotations

import numpy as np

from models.catalog import CatalogColumns
from models.domain import Source, Stage
from models.live_profile import Entry
from models.reasons import new_in
from models.request import RecommendedItem
from models.scoring import StageScorer, UserRow, top_k_one


def explore(
    products: list[RecommendedItem],
    k: int,
    slots: int,
    catalog: CatalogColumns,
    scorer: StageScorer,
    new_from: int,
    allowed: np.ndarray,
    rep: np.ndarray,
    user_row: UserRow,
    stage: Stage,
    features: list[Entry],
    new_visitor: bool,
) -> list[RecommendedItem]:
    """``products`` (best first, at most ``k``) with at least ``slots`` new items: those already in the
    list count; the rest are the best allowed new items by the visitor's score, flagged ``exploration``,
    at the end of the list in place of the lowest-ranked items the model knows.

    allowed bool [n_items - new_from]: which new items (rows ``new_from`` onwards) the filters and the live
    catalog allow; rep float32 [d], user_row, features and new_visitor: the visitor, as ``recommend``
    scores them (``StageScorer.score_items``). Cost: one GEMV over the new items.
    """
    get = catalog.index.get
    rows = [get(r.item_id, -1) for r in products]
    is_new = [r >= new_from for r in rows]
    need = slots - sum(is_new)
    if need <= 0:
        return products
    new_rows = np.arange(new_from, len(catalog), dtype=np.int64)
    ok = allowed.copy()
    taken = np.array([r - new_from for r, n in zip(rows, is_new, strict=True) if n], np.int64)
    ok[taken] = False
    score = scorer.score_items(new_rows, rep, user_row, stage.index, features, new_visitor).score
    pick = top_k_one(score, need, ok)
    pick = pick[pick >= 0]
    if len(pick) == 0:
        return products
    # room: the lowest-ranked known items go (the new items already in the list stay)
    keep_known = k - len(pick) - sum(is_new)
    kept: list[RecommendedItem] = []
    for r, n in zip(products, is_new, strict=True):
        if n or keep_known > 0:
            kept.append(r)
            keep_known -= not n
    for j in pick.tolist():
        row = new_from + j
        item_id, reason = catalog.items[row].item_id, new_in(catalog.category_by_row[row])
        kept.append(RecommendedItem(item_id, round(float(score[j]), 6), Source.NEW, reason, exploration=True))
    return kept
