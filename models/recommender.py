"""Online recommendations from a loaded artifact and one visitor's live state.

Request path per visitor: journey stage from recent events (pure Python over at most a few hundred
events), a one-row sparse profile, one GEMV over precomputed item representations, a handful of
vectorised feature arrays, masks and one partial sort. ``LightFM.predict`` is never called.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import scipy.sparse as sp

from models import artifact
from models.artifact import Manifest, ModelBundle
from models.blend import FEATURE_SOURCES
from models.domain import STAGES, CatalogItem, Channel, Event, EventType, ItemKind, Stage
from models.features import user_feature_rows
from models.journey import JourneyRules, StageResult, infer_stage
from models.profiles import profile_from_events
from models.reasons import ago, reason_for
from models.scoring import StageScorer, top_k
from models.sources import row_max_normalise_sparse

_CONTEXT_WEIGHT = 1.0  # weight of the page's anchor items (current product, cart) in the blend
_RECENT_FOR_COLD = 10


class VisitorContext(msgspec.Struct, frozen=True, kw_only=True):
    """A visitor's live state plus the request's context."""

    visitor_id: str
    events: list[Event]
    cart: dict[str, float]
    purchases: dict[str, float]
    now: float
    channel: Channel | None = None
    country: str | None = None
    current_item: str | None = None
    placement: str = "home"
    stage_override: Stage | None = None


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = True
    kind: ItemKind | None = None
    exclude: frozenset[str] = frozenset()
    include_purchased: bool = False
    include_cart: bool = False


class RecommendedItem(msgspec.Struct, frozen=True):
    item_id: str
    score: float
    source: str
    reason: str


class Recommendations(msgspec.Struct, frozen=True):
    stage: StageResult
    products: list[RecommendedItem]
    content: list[RecommendedItem]
    model_version: str
    fallback: bool


@dataclass(frozen=True)
class _Catalog:
    """Catalog columns for vectorised filtering (all length n_items)."""

    items: list[CatalogItem]
    index: dict[str, int]
    is_product: np.ndarray
    in_stock: np.ndarray
    repeatable: np.ndarray
    price: np.ndarray
    category: np.ndarray  # int32 code into ``categories``
    categories: dict[str, int]
    serves: np.ndarray  # bool [n_stages, n_items]: content serving that stage (untagged serves all)

    @classmethod
    def build(cls, items: list[CatalogItem]) -> _Catalog:
        cats: dict[str, int] = {}
        code = np.array([cats.setdefault(c.category.lower(), len(cats)) for c in items], dtype=np.int32)
        serves = np.array(
            [[(not c.stages) or (s in c.stages) for c in items] for s in STAGES], dtype=bool
        ).reshape(len(STAGES), len(items))
        return cls(
            items=items,
            index={c.item_id: i for i, c in enumerate(items)},
            is_product=np.array([c.kind is ItemKind.PRODUCT for c in items], dtype=bool),
            in_stock=np.array([c.in_stock for c in items], dtype=bool),
            repeatable=np.array([c.repeatable for c in items], dtype=bool),
            price=np.array([np.nan if c.price is None else c.price for c in items], dtype=np.float64),
            category=code,
            categories=cats,
            serves=serves,
        )


def _dense(row: sp.csr_matrix, n: int) -> np.ndarray:
    """float32 [n] from a csr [1, n] row."""
    out = np.zeros(n, np.float32)
    out[row.indices] = row.data
    return out


class Recommender:
    """A loaded, verified model ready to serve."""

    def __init__(self, bundle: ModelBundle) -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.version: str = bundle.manifest.version
        self.rules: JourneyRules = bundle.manifest.rules
        self.scorer = StageScorer(bundle.factors, bundle.tables, bundle.blend_weights)
        self.catalog = _Catalog.build(bundle.catalog)
        self.user_index = bundle.user_vocab.index()
        self.n_user_features = len(bundle.user_vocab.names)
        self.category_of = {c.item_id: c.category for c in bundle.catalog if c.category}
        t = bundle.tables
        pop = np.log1p(t.popularity) + 0.5 * np.log1p(t.trending)
        self._fallback_score = (pop / max(float(pop.max()), 1e-6)).astype(np.float32)
        self._content_idx = np.flatnonzero(~self.catalog.is_product)
        # per stage, over the content items: serves the stage / serves it and not every stage (bool [5, c])
        serves = self.catalog.serves[:, self._content_idx]
        self._content_serves = serves
        self._content_specific = serves & (serves.sum(axis=0) < len(STAGES))[None, :]
        self._products_in_stock = self.catalog.is_product & self.catalog.in_stock
        self._norm_repr = self.scorer.item_repr / np.maximum(
            np.linalg.norm(self.scorer.item_repr, axis=1, keepdims=True), 1e-6
        )

    @classmethod
    def load(cls, directory: Path) -> Recommender:
        return cls(artifact.load(Path(directory)))

    # -- helpers ---------------------------------------------------------------------------------
    def has_item(self, item_id: str) -> bool:
        return item_id in self.catalog.index

    def _ids(self, item_ids: Sequence[str]) -> np.ndarray:
        return np.array([self.catalog.index[i] for i in item_ids if i in self.catalog.index], dtype=np.int64)

    def stage_of(self, ctx: VisitorContext) -> StageResult:
        if ctx.stage_override is not None:
            return StageResult(ctx.stage_override, 1.0, ["stage set by the caller"])
        return infer_stage(ctx.events, ctx.now, self.rules, self.category_of)

    def _filter_mask(self, f: Filters, kind: ItemKind) -> np.ndarray:
        c = self.catalog
        if kind is ItemKind.PRODUCT and f.in_stock_only:
            m = self._products_in_stock.copy()  # the common case, precomputed
        else:
            m = c.is_product.copy() if kind is ItemKind.PRODUCT else ~c.is_product
            if f.in_stock_only:
                m &= c.in_stock
        if f.category is not None:
            code = c.categories.get(f.category.lower())
            m &= c.category == code if code is not None else False
        if f.min_price is not None:
            m &= c.price >= f.min_price
        if f.max_price is not None:
            m &= c.price <= f.max_price
        if f.exclude:
            m[self._ids(sorted(f.exclude))] = False
        return m

    def _owned(self, ctx: VisitorContext, f: Filters) -> np.ndarray:
        """int64 [m]: items to hide: bought (non-repeatable), in the cart, or on screen."""
        hide = [np.zeros(0, np.int64)]
        if not f.include_purchased:
            bought = self._ids(list(ctx.purchases))
            hide.append(bought[~self.catalog.repeatable[bought]])
        if not f.include_cart:
            hide.append(self._ids(list(ctx.cart)))
        if ctx.current_item is not None:
            hide.append(self._ids([ctx.current_item]))
        return np.concatenate(hide)

    def _allowed(self, ctx: VisitorContext, f: Filters, kind: ItemKind) -> np.ndarray:
        """bool [n_items]: items the filters allow, minus what the visitor owns or sees on screen."""
        m = self._filter_mask(f, kind)
        m[self._owned(ctx, f)] = False
        return m

    def _events_with_purchases(self, ctx: VisitorContext) -> list[Event]:
        """Recent events plus purchases older than the recent-events window (the store keeps those apart)."""
        seen = {e.item_id for e in ctx.events if e.event is EventType.PURCHASE}
        extra = [
            Event(visitor_id=ctx.visitor_id, item_id=i, event=EventType.PURCHASE, timestamp=t)
            for i, t in ctx.purchases.items()
            if i not in seen
        ]
        return sorted([*extra, *ctx.events], key=lambda e: e.timestamp)

    def _anchors(self, ctx: VisitorContext) -> np.ndarray:
        """Items the page is about: the product on screen, or the cart on cart/checkout pages."""
        if ctx.current_item is not None and ctx.current_item in self.catalog.index:
            return self._ids([ctx.current_item])
        if ctx.placement in ("cart", "checkout") or ctx.cart:
            return self._ids(list(ctx.cart))
        return np.zeros(0, dtype=np.int64)

    # -- recommendations -------------------------------------------------------------------------
    def recommend(self, ctx: VisitorContext, k: int, filters: Filters, n_content: int = 3) -> Recommendations:
        stage = self.stage_of(ctx)
        events = self._events_with_purchases(ctx)
        n = len(self.catalog.items)
        prof = profile_from_events(events, self.catalog.index, n, ctx.now, self.manifest.weights)
        # the store's cart is authoritative (it survives the recent-events cap)
        cart_ids = self._ids(list(ctx.cart))
        prof = dataclasses.replace(
            prof,
            cart=sp.csr_matrix(
                (np.ones(len(cart_ids), np.float32), (np.zeros(len(cart_ids), int), cart_ids)), shape=(1, n)
            ),
        )
        known = f"visitor:{ctx.visitor_id}" in self.user_index
        tokens = [
            t
            for t in (
                f"country:{ctx.country.lower()}" if ctx.country else None,
                f"channel:{ctx.channel.value}" if ctx.channel else None,
            )
            if t
        ]
        uf = user_feature_rows(
            self.user_index,
            [ctx.visitor_id if known else None],
            [stage.stage],
            [tokens],
            self.n_user_features,
        )
        extra = None
        if not known:
            recent = self._ids([e.item_id for e in reversed(events)][:_RECENT_FOR_COLD])
            if len(recent):
                extra = self.scorer.item_repr[recent].mean(axis=0, keepdims=True)
        one = self.scorer.score_one(prof, stage.stage.index, uf, extra)
        anchors = self._anchors(ctx)
        boost = self._anchor_boost(ctx, anchors)
        score = one.score if boost is None else one.score + _CONTEXT_WEIGHT * np.maximum(boost[0], boost[1])
        allowed = self._allowed(ctx, filters, ItemKind.PRODUCT)
        idx = top_k(score[None, :], k, allowed)[0]
        idx = idx[idx >= 0].astype(np.int64)
        sources = [FEATURE_SOURCES[f] for f in one.dominant_feature(idx)]
        anchor_of: dict[str, np.ndarray] = {}
        if boost is not None:
            comp, sim = boost
            for r, i in enumerate(idx):
                if max(comp[i], sim[i]) > 0.2:  # the page's anchors explain this item best
                    sources[r] = "similar" if sim[i] > comp[i] else "complement"
            anchor_of = {"complement": anchors, "similar": anchors}
        products = self._items(idx, score, sources, ctx, stage.stage, anchor_of)
        content = self._content(stage.stage, n_content, events, one.raw)
        return Recommendations(stage, products, content, self.version, fallback=False)

    def _anchor_boost(self, ctx: VisitorContext, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """(complement, similar) float32 [n_items] each in [0, 1] for the page's anchor items, or None.

        Similar items count only on a product page (a current item); on cart pages complements do.
        """
        if len(anchors) == 0:
            return None
        n = len(self.catalog.items)
        t = self.scorer.tables
        comp = _dense(self._anchor_row(t.complements, anchors), n)
        sim = (
            _dense(self._anchor_row(t.similar, anchors), n)
            if ctx.current_item is not None
            else np.zeros(n, np.float32)
        )
        return comp, sim

    @staticmethod
    def _anchor_row(m: sp.csr_matrix, anchors: np.ndarray) -> sp.csr_matrix:
        """csr [1, n_items]: the anchors' rows of ``m`` summed, scaled to a maximum of 1."""
        rows = m[anchors]
        summed = rows if len(anchors) == 1 else sp.csr_matrix(np.ones((1, len(anchors)), np.float32)) @ rows
        return row_max_normalise_sparse(summed)

    def _items(
        self,
        idx: np.ndarray,
        scores: np.ndarray,
        sources: list[str],
        ctx: VisitorContext,
        stage: Stage,
        anchor_of: dict[str, np.ndarray],
    ) -> list[RecommendedItem]:
        """The chosen items (int [k] catalog rows, their float32 [n_items] scores) with their reasons.

        The anchor that explains a complement/similar item is looked up for all such items at once.
        """
        anchor_title = [""] * len(idx)
        for source, m in (
            ("complement", self.scorer.tables.complements),
            ("similar", self.scorer.tables.similar),
        ):
            rows = [r for r, s in enumerate(sources) if s == source]
            if not rows:
                continue
            anchors = anchor_of.get(source)
            if anchors is None or len(anchors) == 0:
                recent = [e.item_id for e in ctx.events][-20:]
                anchors = np.unique(self._ids([*ctx.cart, *ctx.purchases, *recent]))
            if len(anchors) == 0:
                continue
            block = m[anchors][:, idx[rows]].toarray()  # [anchors, rows]
            for r, a in zip(rows, anchors[block.argmax(axis=0)], strict=True):
                best = self.catalog.items[int(a)]
                anchor_title[r] = best.title or best.item_id
        bought = Counter(e.item_id for e in ctx.events if e.event is EventType.PURCHASE)
        last_seen = {e.item_id: e.timestamp for e in ctx.events}  # events are oldest first
        out = []
        for r, (i, source) in enumerate(zip(idx, sources, strict=True)):
            item = self.catalog.items[int(i)]
            age: float | None = None
            if source == "buy_again" and item.item_id in ctx.purchases:
                age = ctx.now - ctx.purchases[item.item_id]
            elif source == "recently_viewed" and item.item_id in last_seen:
                age = ctx.now - last_seen[item.item_id]
            reason = reason_for(
                source, stage, anchor_title=anchor_title[r], age_s=age, count=bought.get(item.item_id, 0)
            )
            out.append(RecommendedItem(item.item_id, round(float(scores[i]), 6), source, reason))
        return out

    def _content(self, stage: Stage, n: int, events: list[Event], raw: np.ndarray) -> list[RecommendedItem]:
        """Content serving the stage, in the visitor's categories, ranked by the factor model.

        raw float32 [n_items]: the visitor's factor scores (already computed for the products).
        """
        c = self.catalog
        if n <= 0 or len(self._content_idx) == 0:
            return []
        ci = self._content_idx
        allowed = self._content_serves[stage.index].copy()
        seen = {self.catalog.index[e.item_id] for e in events if e.event is EventType.CONTENT_VIEW}
        if seen:
            allowed &= ~np.isin(ci, np.fromiter(seen, dtype=np.int64))
        if not allowed.any():
            return []
        fs = raw[ci]
        fs = (fs - fs[allowed].mean()) / max(float(fs[allowed].std()), 1e-6)
        cats = [self.category_of.get(e.item_id, "").lower() for e in events[-30:]]
        wanted = np.array(sorted({c.categories[x] for x in cats if x in c.categories}), dtype=np.int32)
        score = fs + 2.0 * np.isin(c.category[ci], wanted) + 0.5 * self._content_specific[stage.index]
        top = top_k(score[None, :].astype(np.float32), n, allowed)[0]
        out = []
        for j in top[top >= 0]:
            item = c.items[int(ci[j])]
            reason = reason_for("content", stage, anchor_title=item.category)
            out.append(RecommendedItem(item.item_id, round(float(score[j]), 6), "content", reason))
        return out

    def fallback(self, ctx: VisitorContext, k: int, filters: Filters, n_content: int = 3) -> Recommendations:
        """Non-personalised answer (popular and trending), used when the visitor's state is unavailable."""
        stage = (
            self.stage_of(ctx)
            if ctx.events or ctx.stage_override
            else StageResult(Stage.AWARENESS, 0.0, ["visitor state unavailable: showing popular items"])
        )
        allowed = self._allowed(ctx, filters, ItemKind.PRODUCT)
        idx = top_k(self._fallback_score[None, :], k, allowed)[0]
        t = self.scorer.tables
        products = []
        for i in idx[idx >= 0]:
            src = "trending" if t.trending[i] > 0 and t.trending[i] >= 0.1 * t.trending.max() else "popular"
            item_id = self.catalog.items[int(i)].item_id
            score = round(float(self._fallback_score[i]), 6)
            products.append(RecommendedItem(item_id, score, src, reason_for(src, stage.stage)))
        callowed = ~self.catalog.is_product & self.catalog.serves[stage.stage.index]
        # stage-specific content first (content serving fewer stages is more specific)
        specificity = -self.catalog.serves.sum(axis=0).astype(np.float32)
        cidx = top_k(specificity[None, :], n_content, callowed)[0] if n_content > 0 else np.zeros(0, np.int32)
        content = [
            RecommendedItem(
                self.catalog.items[int(i)].item_id,
                0.0,
                "content",
                reason_for("content", stage.stage, anchor_title=self.catalog.items[int(i)].category),
            )
            for i in cidx[cidx >= 0]
        ]
        return Recommendations(stage, products, content, self.version, fallback=True)

    # -- item-to-item ----------------------------------------------------------------------------
    def _related(self, item_ids: list[str], k: int, filters: Filters, which: str) -> list[RecommendedItem]:
        anchors = self._ids(item_ids)
        if len(anchors) == 0:
            return []
        t = self.scorer.tables
        m = t.complements if which == "complement" else t.similar
        s = _dense(self._anchor_row(m, anchors), len(self.catalog.items))
        # embedding cosine fills in for items with little co-occurrence history (cold items)
        emb = self._norm_repr[anchors].mean(axis=0) @ self._norm_repr.T
        score = (
            s + (0.3 if which == "similar" else 0.05) * emb.astype(np.float32) + 1e-3 * self._fallback_score
        )
        allowed = self._filter_mask(filters, filters.kind or ItemKind.PRODUCT)
        allowed[anchors] = False
        idx = top_k(score[None, :], k, allowed)[0]
        names = ", ".join(
            (self.catalog.items[int(a)].title or self.catalog.items[int(a)].item_id) for a in anchors[:3]
        )
        reason = f"often bought with {names}" if which == "complement" else f"similar to {names}"
        return [
            RecommendedItem(self.catalog.items[int(i)].item_id, round(float(score[i]), 6), which, reason)
            for i in idx[idx >= 0]
        ]

    def similar(self, item_ids: list[str], k: int, filters: Filters) -> list[RecommendedItem]:
        return self._related(item_ids, k, filters, "similar")

    def complements(self, item_ids: list[str], k: int, filters: Filters) -> list[RecommendedItem]:
        return self._related(item_ids, k, filters, "complement")

    # -- retargeting -----------------------------------------------------------------------------
    def retargeting(
        self, ctx: VisitorContext, k: int, filters: Filters, sent: frozenset[str]
    ) -> list[RecommendedItem]:
        """Abandoned-cart and browsed items, then complements, for email/ad campaigns.

        Deduplicated against purchases (non-repeatable), out-of-stock items and what the campaign already
        sent. Shaped by stage: advocates get no abandoned-cart pushes, only complements of what they own.
        """
        stage = self.stage_of(ctx).stage
        f = msgspec.structs.replace(filters, exclude=filters.exclude | sent, include_cart=True)
        allowed = self._allowed(ctx, f, ItemKind.PRODUCT)
        out: list[RecommendedItem] = []
        taken: set[str] = set()

        def add(item_id: str, score: float, source: str, reason: str) -> None:
            i = self.catalog.index.get(item_id)
            if i is None or not allowed[i] or item_id in taken or len(out) >= k:
                return
            taken.add(item_id)
            out.append(RecommendedItem(item_id, round(score, 6), source, reason))

        if stage is not Stage.ADVOCACY:
            for item_id, t in sorted(ctx.cart.items(), key=lambda x: -x[1]):
                add(item_id, 3.0, "abandoned_cart", f"left in your cart {ago(ctx.now - t)}")
            views: dict[str, float] = {}
            for e in ctx.events:
                if e.event in (EventType.PRODUCT_VIEW, EventType.COMPARE, EventType.WISHLIST):
                    views[e.item_id] = max(views.get(e.item_id, 0.0), e.timestamp)
            for item_id, t in sorted(views.items(), key=lambda x: -x[1]):
                add(item_id, 2.0, "browsed", reason_for("recently_viewed", stage, age_s=ctx.now - t))
        owned = list(ctx.cart) + list(ctx.purchases)
        if owned and len(out) < k:
            for r in self.complements(owned, k, filters):
                add(r.item_id, r.score, "complement", r.reason)
        return out
