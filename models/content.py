"""Content for the visitor's stage: guides and pages that serve the stage, in the visitor's categories,
ranked by the factor model; content already read is left out."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from models.catalog import CatalogColumns, served_mask
from models.domain import STAGES, EventType, Source, Stage
from models.reasons import reason_for
from models.request import RecommendedItem
from models.scoring import StageScorer, positions_in, top_k, top_k_one
from models.serving_rules import ServingRules

_CONTENT_VIEW = EventType.CONTENT_VIEW.code
_LATEST_EVENTS = 30  # the categories of the visitor's latest events are their interests


@dataclass(frozen=True)
class StageContent:
    """The content items serving one stage, laid out for ranking them per request (a fifth of the content
    on the simulated storefront, where each guide serves one stage).

    rows int64 [m] sorted catalog rows; vectors float32 [m, d] contiguous and bias float32 [m]: their item
    representations; category int32 [m] codes; bonus float32 [m]: ``content_stage_bonus`` where the
    item serves only some stages (content specific to this stage beats content for everyone);
    category_bonus: ``content_category_bonus``, for content in the visitor's categories.
    """

    rows: np.ndarray
    vectors: np.ndarray
    bias: np.ndarray
    category: np.ndarray
    bonus: np.ndarray
    category_bonus: np.float32

    @classmethod
    def build(
        cls, catalog: CatalogColumns, scorer: StageScorer, stage: Stage, rules: ServingRules
    ) -> StageContent:
        c = catalog
        rows = np.flatnonzero(~c.is_product & c.serves[stage.index]).astype(np.int64)
        specific = c.serves[:, rows].sum(axis=0) < len(STAGES)
        return cls(
            rows,
            np.ascontiguousarray(scorer.item_repr[rows], dtype=np.float32),
            scorer.item_bias[rows].astype(np.float32),
            c.category[rows],
            (rules.content_stage_bonus * specific).astype(np.float32),
            np.float32(rules.content_category_bonus),
        )


def stage_content(catalog: CatalogColumns, scorer: StageScorer, rules: ServingRules) -> list[StageContent]:
    """``StageContent`` of every stage, by ``Stage.index``."""
    return [StageContent.build(catalog, scorer, stage, rules) for stage in STAGES]


def rank_content(
    catalog: CatalogColumns,
    sc: StageContent,
    stage: Stage,
    n: int,
    items: np.ndarray,
    codes: np.ndarray,
    rep: np.ndarray,
    now: float | None = None,
) -> list[RecommendedItem]:
    """Up to ``n`` content items serving ``stage`` (``sc``), in the visitor's categories, ranked by the
    factor model; what the live catalog does not serve at ``now`` is left out (``served_mask``).

    items int64 [e], codes int8 [e]: the visitor's events on catalog items in time order
    (``history.event_arrays``); rep float32 [d]: the visitor's representation
    (``StageScorer.visitor_repr``). Score: the factor score standardised over the allowed items, plus
    ``sc.category_bonus`` in the categories of the latest events, plus the item's stage-specific bonus.
    """
    c = catalog
    if n <= 0 or len(sc.rows) == 0:
        return []
    allowed = served_mask(c, now, sc.rows)
    read = items[codes == _CONTENT_VIEW]
    if len(read):  # content already read
        pos, hit = positions_in(sc.rows, read)
        allowed[pos[hit]] = False
    if not allowed.any():
        return []
    fs = sc.vectors @ rep
    fs += sc.bias
    # mean and deviation over the allowed items by two dot products (no masked copies)
    w = allowed.astype(np.float32)
    count = float(w.sum())
    mean = float(fs @ w) / count
    var = max(float((fs * fs) @ w) / count - mean * mean, 0.0)
    fs -= np.float32(mean)
    fs *= np.float32(1.0 / max(np.sqrt(var), 1e-6))
    wanted = np.zeros(len(c.categories) + 1, bool)
    wanted[c.category[items[-_LATEST_EVENTS:]]] = True  # the categories of the latest events
    wanted[c.categories.get("", len(c.categories))] = False  # "no category" is not an interest
    score = fs  # in place: + the bonuses for the visitor's categories and for content specific to the stage
    score += sc.bonus
    np.add(score, sc.category_bonus, out=score, where=wanted[sc.category])
    top = top_k_one(score, n, allowed)
    out = []
    for j in top[top >= 0]:
        item = c.items[int(sc.rows[j])]
        reason = reason_for(Source.CONTENT, stage, anchor_title=item.category)
        out.append(RecommendedItem(item.item_id, round(float(score[j]), 6), Source.CONTENT, reason))
    return out


def fallback_content(
    catalog: CatalogColumns, stage: Stage, n: int, now: float | None = None
) -> list[RecommendedItem]:
    """Up to ``n`` content items serving ``stage`` without the visitor's state: stage-specific content
    first (content serving fewer stages is more specific), score 0; only what the live catalog serves at
    ``now``."""
    if n <= 0:
        return []
    c = catalog
    allowed = ~c.is_product & c.serves[stage.index]
    if c.availability is not None:
        allowed &= served_mask(c, now)
    idx = top_k(c.specificity[None, :], n, allowed)[0]
    return [
        RecommendedItem(
            c.items[int(i)].item_id,
            0.0,
            Source.CONTENT,
            reason_for(Source.CONTENT, stage, anchor_title=c.items[int(i)].category),
        )
        for i in idx[idx >= 0]
    ]
