"""The non-personalised answer, for a visitor whose state is unavailable: the crowd's favourites."""

from __future__ import annotations

import numpy as np

from models.catalog import CatalogColumns
from models.domain import Source, Stage
from models.reasons import reason_for
from models.request import RecommendedItem
from models.scoring import top_k
from models.serving_rules import ServingRules
from models.sources import ItemTables


def crowd_score(tables: ItemTables, rules: ServingRules) -> np.ndarray:
    """float32 [n_items] in [0, 1]: log popularity plus ``fallback_trending_weight`` x log trending score,
    scaled by the maximum."""
    pop = np.log1p(tables.popularity) + rules.fallback_trending_weight * np.log1p(tables.trending)
    return (pop / max(float(pop.max()), 1e-6)).astype(np.float32)


def popular_items(
    catalog: CatalogColumns,
    tables: ItemTables,
    score: np.ndarray,
    allowed: np.ndarray,
    k: int,
    stage: Stage,
    rules: ServingRules,
    chosen: np.ndarray | None = None,
    now: float | None = None,
) -> list[RecommendedItem]:
    """Up to ``k`` allowed items (bool [n_items]) by ``score`` (``crowd_score``), best first, or the
    ``chosen`` catalog rows (int [m], in order) when the caller picked them (merchandising rules); an
    item is "trending" when its trending score reaches ``trending_share`` of the highest one, else
    "popular". A trending reason is dated by the model's data (``tables.as_of``), "this week" only while
    that is current at ``now`` (without ``now``: always by date)."""
    idx = top_k(score[None, :], k, allowed)[0] if chosen is None else chosen
    trending = tables.trending
    cut = rules.trending_share * trending.max() if len(trending) else 0.0
    out = []
    for i in idx[idx >= 0]:
        src = Source.TRENDING if trending[i] > 0 and trending[i] >= cut else Source.POPULAR
        out.append(
            RecommendedItem(
                catalog.items[int(i)].item_id,
                round(float(score[i]), 6),
                src,
                reason_for(src, stage, data_until=tables.as_of, now=now),
            )
        )
    return out
