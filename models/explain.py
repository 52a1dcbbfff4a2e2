"""Why each chosen item is shown: the source that explains it (the feature that contributed most to its
score, or the page's anchors when they relate to it strongly) and a sentence naming that source, the
anchor item it relates to and how the visitor met that item."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import msgspec
import numpy as np

from models.blend import FEATURE_SOURCES
from models.catalog import CatalogColumns
from models.domain import Event, EventType, Source, Stage
from models.history import ever_bought
from models.live_profile import best_anchors
from models.reasons import new_in, reason_for, relation
from models.request import RecommendedItem, VisitorContext
from models.scoring import ItemScores
from models.sources import ItemTables

_AGED = frozenset({Source.BUY_AGAIN, Source.RECENTLY_VIEWED})  # sources whose reason says when
_RECENT_ANCHORS = 20  # without page anchors, the visitor's latest events (and cart, purchases) are anchors


def item_sources(
    scored: ItemScores,
    positions: np.ndarray,
    page: tuple[np.ndarray, np.ndarray] | None,
    threshold: float,
) -> list[Source]:
    """The source of each chosen item (``positions`` int64 [k] into ``scored.items``): the feature that
    contributed most to its score; "similar" or "complement" where the page's anchors relate to the item
    by more than ``threshold`` (``ServingRules.anchor_threshold``). ``page``: their (complement,
    similar) values float32 [c] aligned with ``scored.items``, or None without anchors."""
    sources = [FEATURE_SOURCES[f] for f in scored.dominant_feature(positions)]
    if page is not None:
        comp, sim = page
        for r, p in enumerate(positions):
            if max(comp[p], sim[p]) > threshold:  # the page's anchors explain this item best
                sources[r] = Source.SIMILAR if sim[p] > comp[p] else Source.COMPLEMENT
    return sources


def explain(
    catalog: CatalogColumns,
    tables: ItemTables,
    idx: np.ndarray,
    scores: np.ndarray,
    sources: list[Source],
    ctx: VisitorContext,
    stage: Stage,
    page_anchors: np.ndarray | None,
    event_rows: Sequence[int],
    older: Sequence[Event],
) -> list[RecommendedItem]:
    """The chosen items (int [k] catalog rows, their float32 [k] scores, their ``sources``) with their
    reasons.

    page_anchors: int64 [a] the page's anchor items when they decided sources (``item_sources``), else
    None: complement and similar items are then explained by the visitor's cart, purchases and latest
    events. event_rows: the catalog row of each of ``ctx.events``; older: the purchases and cancels from
    before them (``history.older_purchases``), for "bought 3 times".

    The anchor that explains a complement/similar item is looked up for all such items at once.
    """
    anchor_title = [""] * len(idx)
    anchor_relation = [""] * len(idx)
    bought_ever: set[str] | None = None  # item ids, gathered at the first anchor that needs them
    for source, m in ((Source.COMPLEMENT, tables.complements), (Source.SIMILAR, tables.similar)):
        rows = [r for r, s in enumerate(sources) if s is source]
        if not rows:
            continue
        anchors = page_anchors
        if anchors is None or len(anchors) == 0:
            recent = np.array([r for r in event_rows[-_RECENT_ANCHORS:] if r >= 0], np.int64)
            anchors = np.unique(np.concatenate([catalog.rows_of([*ctx.cart, *ctx.purchases]), recent]))
        if len(anchors) == 0:
            continue
        for r, a in zip(rows, best_anchors(m, anchors, idx[rows]), strict=True):
            if a >= 0:  # else the reason stays generic: no anchor relates to the item
                best = catalog.items[int(anchors[a])]
                anchor_title[r] = best.title or best.item_id
                if bought_ever is None:
                    bought_ever = ever_bought(ctx)
                anchor_relation[r] = relation(
                    on_page=best.item_id == ctx.current_item,
                    in_cart=best.item_id in ctx.cart,
                    bought=best.item_id in bought_ever,
                )
    bought: Counter[str] = Counter()
    last_seen: dict[str, float] = {}
    if _AGED.intersection(sources):  # only buy-again and recently-viewed reasons need the visitor's events
        # "bought 3 times": over the purchase log when there is one (it reaches beyond the events)
        bought.update(e.item_id for e in (*older, *ctx.events) if e.event is EventType.PURCHASE)
        last_seen = {e.item_id: e.timestamp for e in ctx.events}  # events are oldest first
    out = []
    for r, (i, source) in enumerate(zip(idx, sources, strict=True)):
        item = catalog.items[int(i)]
        age: float | None = None
        if source is Source.BUY_AGAIN and item.item_id in ctx.purchases:
            age = ctx.now - ctx.purchases[item.item_id]
        elif source is Source.RECENTLY_VIEWED and item.item_id in last_seen:
            age = ctx.now - last_seen[item.item_id]
        reason = reason_for(
            source,
            stage,
            anchor_title=anchor_title[r],
            anchor_relation=anchor_relation[r],
            age_s=age,
            count=bought.get(item.item_id, 0),
            data_until=tables.as_of,
            now=ctx.now,
        )
        out.append(RecommendedItem(item.item_id, round(float(scores[r]), 6), source, reason))
    return out


#: the sources the model's scores decide; an item the model never saw owes them nothing it learned
_MODEL_SOURCES = frozenset(
    {Source.PERSONALIZED, Source.POPULAR, Source.TRENDING, Source.SIMILAR, Source.COMPLEMENT}
)


def label_new(items: list[RecommendedItem], catalog: CatalogColumns, new_from: int) -> list[RecommendedItem]:
    """``items`` with those the model never saw (catalog rows ``new_from`` onwards, added by the live
    catalog) and chosen by the model's scores labelled ``Source.NEW``, "new in <category>": they have no
    history to be popular, trending or bought with anything. What the visitor did with them (in the
    cart, viewed, bought) keeps its source. One dict lookup per answered item."""
    if new_from >= len(catalog):
        return items
    get = catalog.index.get
    out = []
    for r in items:
        row = get(r.item_id, -1)
        if row >= new_from and r.source in _MODEL_SOURCES:
            reason = new_in(catalog.category_by_row[row])
            out.append(msgspec.structs.replace(r, source=Source.NEW, reason=reason))
        else:
            out.append(r)
    return out
