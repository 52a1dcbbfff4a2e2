"""Item-to-item: the page's anchor items (the product on screen, the cart) and what relates to them,
similar items and complements of a list of items, and retargeting (abandoned cart, browsed items, then
complements of what the visitor owns)."""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import numpy as np
import scipy.sparse as sp

from models.catalog import CatalogColumns, allowed_mask, filter_mask
from models.domain import EventType, ItemKind, Source, Stage
from models.explain import label_new
from models.live_profile import Entry, gather_rows, max_normalised
from models.reasons import ago, reason_for
from models.request import Filters, RecommendedItem, Relation, VisitorContext
from models.scoring import positions_in, top_k
from models.serving_rules import ServingRules
from models.sources import ItemTables

_BROWSED = (EventType.PRODUCT_VIEW, EventType.COMPARE, EventType.WISHLIST)
#: how many trained items a new item (the live catalog's) is linked to in the similarity table
NEW_ITEM_NEIGHBOURS = 20
#: a new item's neighbours are sought among at most this many trained items of its category and kind:
#: the most popular ones (those visitors touch most, so whose links reach most visitors)
NEW_ITEM_POOL = 2_000
_BLOCK_CELLS = 1 << 22  # cosine cells per block of new items (16 MB of float32)


def anchor_row(m: sp.csr_matrix, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item rows int64, values float32): the anchors' rows of ``m`` summed, scaled to a maximum of 1."""
    return max_normalised(*gather_rows(m, anchors, np.ones(len(anchors), np.float32)))


def page_anchors(catalog: CatalogColumns, ctx: VisitorContext) -> np.ndarray:
    """int64 [a]: the items the page is about: the product on screen, or the cart on cart/checkout pages
    (or whenever the cart holds something)."""
    if ctx.current_item is not None and ctx.current_item in catalog.index:
        return catalog.rows_of([ctx.current_item])
    if ctx.placement in ("cart", "checkout") or ctx.cart:
        return catalog.rows_of(list(ctx.cart))
    return np.zeros(0, dtype=np.int64)


def page_entries(tables: ItemTables, ctx: VisitorContext, anchors: np.ndarray) -> list[Entry]:
    """[] or the (complement, similar) entries, values in [0, 1], of the page's anchor items.

    Similar items count only on a product page (a current item); on cart pages complements do.
    """
    if len(anchors) == 0:
        return []
    comp = anchor_row(tables.complements, anchors)
    sim = (
        anchor_row(tables.similar, anchors)
        if ctx.current_item is not None
        else (np.zeros(0, np.int64), np.zeros(0, np.float32))
    )
    return [(-1, *comp), (-1, *sim)]


def aligned(rows: np.ndarray, entry: Entry) -> np.ndarray:
    """float32 [c]: an entry's values at ``rows`` (int64 [c] sorted), 0 elsewhere."""
    _, idx, vals = entry
    out = np.zeros(len(rows), np.float32)
    pos, hit = positions_in(rows, idx)
    out[pos[hit]] = vals[hit]
    return out


@dataclass(frozen=True)
class RelatedItems:
    """What item-to-item answers read, built once per model load.

    norm_repr       float32 [n_items, d] item representations scaled to unit length
    fallback_score  float32 [n_items] the crowd score in [0, 1] (a tie-break among equally related items)
    rules           the embedding weights and retargeting scores
    new_from        rows from here on are items the model never saw (the live catalog's, represented
                    from their features); None: there are none
    """

    catalog: CatalogColumns
    tables: ItemTables
    norm_repr: np.ndarray
    fallback_score: np.ndarray
    rules: ServingRules
    new_from: int | None = None

    @classmethod
    def build(
        cls,
        catalog: CatalogColumns,
        tables: ItemTables,
        item_repr: np.ndarray,
        fallback_score: np.ndarray,
        rules: ServingRules,
    ) -> RelatedItems:
        norm = item_repr / np.maximum(np.linalg.norm(item_repr, axis=1, keepdims=True), 1e-6)
        return cls(catalog, tables, norm, fallback_score, rules)


def feature_neighbours(
    similar: sp.csr_matrix,
    norm_repr: np.ndarray,
    catalog: CatalogColumns,
    new_from: int,
    popularity: np.ndarray,
    top_n: int = NEW_ITEM_NEIGHBOURS,
    pool_size: int = NEW_ITEM_POOL,
) -> sp.csr_matrix:
    """The similarity table (csr float32 [n, n], rows and columns ``new_from`` onwards empty: items no
    visitor has touched yet) with every new item linked both ways to its ``top_n`` most alike trained
    items of the same category and kind, by the cosine of their representations (``norm_repr`` float32
    [n, d], unit rows; a new item's comes from its features), among the ``pool_size`` most popular
    (``popularity`` float32 [n]) trained items of that category and kind.

    A link weighs cosine x the trained item's strongest co-interest similarity (the median of those when
    it has none), so a new item sits among the trained item's own neighbours rather than above them.
    With these links the visitor's similar-items feature, the page's anchors and item-to-item answers
    reach new items the way they reach trained ones, with nothing added to the request path. Off the
    request path: one blocked GEMM per category.
    """
    n = similar.shape[0]
    if new_from >= n:
        return similar
    counts = np.diff(similar.indptr)
    row_max = np.zeros(n, np.float32)
    filled = counts > 0
    if similar.nnz:
        row_max[filled] = np.maximum.reduceat(similar.data, similar.indptr[:-1][filled])
    typical = float(np.median(row_max[filled])) if filled.any() else 1.0
    scale = np.where(filled, row_max, np.float32(typical)).astype(np.float32)
    # group key: category code and kind; items without a category are linked to nothing
    no_cat = catalog.categories.get("", -1)
    key = catalog.category.astype(np.int64) * 2 + catalog.is_product
    key[catalog.category == no_cat] = -1
    trained_key, new_key = key[:new_from], key[new_from:]
    src: list[np.ndarray] = []
    dst: list[np.ndarray] = []
    val: list[np.ndarray] = []
    for g in np.unique(new_key[new_key >= 0]).tolist():
        pool = np.flatnonzero(trained_key == g)
        if len(pool) == 0:
            continue
        if len(pool) > pool_size:
            pool = np.sort(pool[np.argpartition(-popularity[pool], pool_size - 1)[:pool_size]])
        news = new_from + np.flatnonzero(new_key == g)
        take = min(top_n, len(pool))
        pool_t = np.ascontiguousarray(norm_repr[pool].T)
        block = max(1, _BLOCK_CELLS // len(pool))
        for i in range(0, len(news), block):
            rows = news[i : i + block]
            cos = norm_repr[rows] @ pool_t
            best = np.argpartition(-cos, take - 1, axis=1)[:, :take] if take < len(pool) else None
            if best is None:
                best = np.broadcast_to(np.arange(len(pool)), cos.shape)
            c = np.take_along_axis(cos, best, axis=1)
            ok = c > 0
            nb = pool[best][ok]
            src.append(np.repeat(rows, take).reshape(len(rows), take)[ok])
            dst.append(nb)
            val.append((c[ok] * scale[nb]).astype(np.float32))
    if not src:
        return similar
    a, b, v = np.concatenate(src), np.concatenate(dst), np.concatenate(val)
    links = sp.csr_matrix(
        (np.concatenate([v, v]), (np.concatenate([a, b]), np.concatenate([b, a]))),
        shape=(n, n),
        dtype=np.float32,
    )
    return sp.csr_matrix(similar + links, dtype=np.float32)


def related_items(
    rel: RelatedItems,
    item_ids: list[str],
    k: int,
    filters: Filters,
    which: Relation,
    now: float | None = None,
) -> list[RecommendedItem]:
    """Up to ``k`` items similar to (``which`` "similar") or bought with ("complement") ``item_ids``
    together, best first; the anchors themselves, what the filters refuse and what the live catalog does
    not serve at ``now`` are left out.

    Each item's source and reason say what put it there: bought together with an anchor ("often bought
    with"), alike ("similar to": co-interest, or an embedding cosine of at least ``related_min_cosine``),
    else only the crowd ("popular in <category>"), so filler never claims a co-purchase. Items the model
    never saw have no co-occurrence: as anchors they relate by their features alone (embedding cosine),
    and say so; as answers they are "new in <category>" (``explain.label_new``)."""
    c = rel.catalog
    anchors = c.rows_of(item_ids)
    if len(anchors) == 0:
        return []
    t = rel.tables
    m = t.complements if which == "complement" else t.similar
    s = np.zeros(len(c.items), np.float32)
    near, strength = anchor_row(m, anchors)
    s[near] = strength
    # embedding cosine fills in for items with little co-occurrence history (cold items)
    emb = rel.norm_repr[anchors].mean(axis=0) @ rel.norm_repr.T
    r = rel.rules
    weight = r.similar_embedding_weight if which == "similar" else r.complement_embedding_weight
    score = s + weight * emb.astype(np.float32) + 1e-3 * rel.fallback_score
    allowed = filter_mask(c, filters, filters.kind or ItemKind.PRODUCT, None, now)
    allowed[anchors] = False
    idx = top_k_rows(score, k, allowed).astype(np.int64)
    names = ", ".join(c.title(int(a)) for a in anchors[:3])
    new_from = len(c) if rel.new_from is None else rel.new_from
    by_features = bool((anchors >= new_from).all())  # no history at all: only the features relate them
    like_reason = f"similar to {names} by category, price and tags" if by_features else f"similar to {names}"
    together = s[idx] > 0 if which == "complement" else np.zeros(len(idx), bool)
    alike = ~together & (((s[idx] > 0) & (which == "similar")) | (emb[idx] >= r.related_min_cosine))
    out = []
    for i, bought_with, like in zip(idx.tolist(), together.tolist(), alike.tolist(), strict=True):
        if bought_with:
            source, reason = Source.COMPLEMENT, f"often bought with {names}"
        elif like:
            source, reason = Source.SIMILAR, like_reason
        else:
            category = c.items[i].category
            source, reason = Source.POPULAR, f"popular in {category}" if category else "a popular choice"
        out.append(RecommendedItem(c.items[i].item_id, round(float(score[i]), 6), source, reason))
    return label_new(out, c, new_from)


def top_k_rows(score: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
    """int32 [<= k]: the rows of the ``k`` best allowed scores (float32 [n], bool [n]), best first."""
    idx = top_k(score[None, :], k, allowed)[0]
    return idx[idx >= 0]


def retarget(
    rel: RelatedItems, ctx: VisitorContext, stage: Stage, k: int, filters: Filters, sent: frozenset[str]
) -> list[RecommendedItem]:
    """Abandoned-cart and browsed items, then complements, for email/ad campaigns.

    Deduplicated against purchases (non-repeatable), out-of-stock items and what the campaign already
    sent (``sent``). Shaped by stage: advocates get no abandoned-cart pushes, only complements of what
    they own.
    """
    c = rel.catalog
    f = msgspec.structs.replace(filters, exclude=filters.exclude | sent, include_cart=True)
    allowed = allowed_mask(c, ctx, f, ItemKind.PRODUCT)
    out: list[RecommendedItem] = []
    taken: set[str] = set()

    def add(item_id: str, score: float, source: Source, reason: str) -> None:
        i = c.index.get(item_id)
        if i is None or not allowed[i] or item_id in taken or len(out) >= k:
            return
        taken.add(item_id)
        out.append(RecommendedItem(item_id, round(score, 6), source, reason))

    if stage is not Stage.ADVOCACY:
        for item_id, t in sorted(ctx.cart.items(), key=lambda x: -x[1]):
            add(
                item_id,
                rel.rules.abandoned_cart_score,
                Source.ABANDONED_CART,
                f"left in your cart {ago(ctx.now - t)}",
            )
        views: dict[str, float] = {}
        for e in ctx.events:
            if e.event in _BROWSED:
                views[e.item_id] = max(views.get(e.item_id, 0.0), e.timestamp)
        for item_id, t in sorted(views.items(), key=lambda x: -x[1]):
            add(
                item_id,
                rel.rules.browsed_score,
                Source.BROWSED,
                reason_for(Source.RECENTLY_VIEWED, stage, age_s=ctx.now - t),
            )
    owned = list(ctx.cart) + list(ctx.purchases)
    if owned and len(out) < k:
        for r in related_items(rel, owned, k, filters, "complement", ctx.now):
            add(r.item_id, r.score, r.source, r.reason)
    return out
