"""Online recommendations from a loaded artifact and one visitor's live state.

Request path per visitor: journey stage from recent events (pure Python over at most a few hundred
events), a one-row sparse profile, one GEMV over precomputed item representations, a handful of
vectorised feature arrays, masks and one partial sort. ``LightFM.predict`` is never called.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np
import scipy.sparse as sp

from models import artifact
from models.artifact import Manifest, ModelBundle
from models.blend import FEATURE_SOURCES, POPULARITY_NEW
from models.candidates import CandidateIndex, CandidateSettings
from models.domain import (
    PURCHASE_LOG_EVENTS,
    STAGES,
    CatalogItem,
    Channel,
    Event,
    EventType,
    ItemKind,
    Stage,
)
from models.features import user_feature_row
from models.journey import JourneyRules, StageResult, infer_stage
from models.live_profile import Entry, LiveProfile, best_anchors, gather_rows, max_normalised
from models.reasons import ago, reason_for, relation
from models.scoring import StageScorer, UserRow, positions_in, top_k, top_k_one

_CONTEXT_WEIGHT = 1.0  # weight of the page's anchor items (current product, cart) in the blend
_RECENT_FOR_COLD = 10
_PURCHASE = EventType.PURCHASE.code
_CONTENT_VIEW = EventType.CONTENT_VIEW.code
_AGED = frozenset({"buy_again", "recently_viewed"})  # sources whose reason says when
_P = EventType.PURCHASE
# codes of the events a purchase log holds (a set of ints: Enum hashing is Python code, slow per event)
_LOGGED_CODES = frozenset(e.code for e in PURCHASE_LOG_EVENTS)


class VisitorContext(msgspec.Struct, frozen=True, kw_only=True):
    """A visitor's live state plus the request's context.

    events        the visitor's recent events, oldest first
    cart          item_id -> time it was added
    purchases     item_id -> time of its latest purchase (reaching beyond ``events``)
    purchase_log  the visitor's latest purchase and cancel events in arrival order, reaching beyond
                  ``events`` (whose purchases and cancels are its last ones): buy-again counts purchases and
                  their recency over it as the offline profiles do over the whole history
    """

    visitor_id: str
    events: list[Event]
    cart: dict[str, float]
    purchases: dict[str, float]
    now: float
    purchase_log: list[Event] = msgspec.field(default_factory=list)
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


@dataclass(frozen=True)
class _StageContent:
    """The content items serving one stage, laid out for ranking them per request (a fifth of the content
    on the simulated storefront, where each guide serves one stage).

    rows int64 [m] sorted catalog rows; vectors float32 [m, d] contiguous and bias float32 [m]: their item
    representations; category int32 [m] codes; bonus float32 [m]: 0.5 where the item serves only some
    stages (content specific to this stage beats content for everyone).
    """

    rows: np.ndarray
    vectors: np.ndarray
    bias: np.ndarray
    category: np.ndarray
    bonus: np.ndarray

    @classmethod
    def build(cls, rec: Recommender, stage: Stage) -> _StageContent:
        c, sc = rec.catalog, rec.scorer
        content = ~c.is_product
        rows = np.flatnonzero(content & c.serves[stage.index]).astype(np.int64)
        specific = c.serves[:, rows].sum(axis=0) < len(STAGES)
        return cls(
            rows,
            np.ascontiguousarray(sc.item_repr[rows], dtype=np.float32),
            sc.item_bias[rows].astype(np.float32),
            c.category[rows],
            (0.5 * specific).astype(np.float32),
        )


def _older_purchases(ctx: VisitorContext) -> list[Event]:
    """The visitor's purchases and cancels from before ``ctx.events``, oldest first.

    The purchase log's last entries are the purchases and cancels among the recent events (both are in
    arrival order), so the log without that many entries is what came before them. A purchased item that
    neither the log nor the events hold (kept from before the store had a log) counts once, at the time of
    its latest purchase.
    """
    log = ctx.purchase_log
    in_events = sum(1 for e in ctx.events if e.event.code in _LOGGED_CODES)
    older = log[: max(len(log) - in_events, 0)]
    if not ctx.purchases:
        return older
    known = {e.item_id for e in log} | {e.item_id for e in ctx.events if e.event is _P}
    kept = [
        Event(visitor_id=ctx.visitor_id, item_id=i, event=_P, timestamp=t)
        for i, t in ctx.purchases.items()
        if i not in known
    ]
    return [*kept, *older]


def _owned_items(ctx: VisitorContext) -> list[str]:
    """Item ids the visitor owns: more purchases than cancels in the purchase log, plus purchased items
    the log does not reach. (The store's ``purchases`` map forgets an item at a cancel even when an
    earlier purchase of it stands: "bought twice, cancelled once" still owns one.)"""
    if not ctx.purchase_log:
        return list(ctx.purchases)
    net: dict[str, int] = {}
    for e in ctx.purchase_log:
        net[e.item_id] = net.get(e.item_id, 0) + (1 if e.event is _P else -1)
    return [i for i, n in net.items() if n > 0] + [i for i in ctx.purchases if i not in net]


def _anchor_row(m: sp.csr_matrix, anchors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(item rows int64, values float32): the anchors' rows of ``m`` summed, scaled to a maximum of 1."""
    return max_normalised(*gather_rows(m, anchors, np.ones(len(anchors), np.float32)))


def _hide(mask: np.ndarray, rows: np.ndarray | None, items: np.ndarray) -> None:
    """Set ``mask`` False at catalog rows ``items``: mask is over every item (rows None) or over ``rows``
    (int64 sorted), where the few items are found by binary search."""
    if rows is None:
        mask[items] = False
    else:
        pos, hit = positions_in(rows, items)
        mask[pos[hit]] = False


class Recommender:
    """A loaded, verified model ready to serve."""

    def __init__(self, bundle: ModelBundle, candidates: CandidateSettings | None = None) -> None:
        """Large catalogs score a candidate set per request, small ones every item (``models.candidates``)."""
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.version: str = bundle.manifest.version
        self.rules: JourneyRules = bundle.manifest.rules
        self.scorer = StageScorer(bundle.factors, bundle.tables, bundle.blend_weights)
        self.catalog = _Catalog.build(bundle.catalog)
        self.user_index = bundle.user_vocab.index()
        self.n_user_features = len(bundle.user_vocab.names)
        # category by catalog row: a visitor's few categories are read through their event rows
        self._category_by_row = [c.category for c in bundle.catalog]
        self._event_weights = self.manifest.weights.vector()
        t = bundle.tables
        pop = np.log1p(t.popularity) + 0.5 * np.log1p(t.trending)
        self._fallback_score = (pop / max(float(pop.max()), 1e-6)).astype(np.float32)
        self._stage_content = [_StageContent.build(self, stage) for stage in STAGES]
        self._products_in_stock = self.catalog.is_product & self.catalog.in_stock
        self._norm_repr = self.scorer.item_repr / np.maximum(
            np.linalg.norm(self.scorer.item_repr, axis=1, keepdims=True), 1e-6
        )
        sc = self.scorer
        self.candidate_settings = cs = candidates or CandidateSettings()
        self.candidates: CandidateIndex | None = None
        if len(bundle.catalog) > cs.exhaustive_max_items:
            # per (new or known visitor, stage): the best in-stock products by their crowd score
            new_crowd = sc.crowd + sc.blend_weights[:, POPULARITY_NEW, None] * sc.popularity
            base = np.concatenate([sc.crowd, new_crowd])
            base = np.where(self._products_in_stock[None, :], base, -np.inf).astype(np.float32)
            vectors = np.hstack([sc.item_repr, sc.item_bias[:, None]])
            self.candidates = CandidateIndex.build(vectors, top_k(base, cs.crowd_items).astype(np.int64), cs)

    @classmethod
    def load(cls, directory: Path, candidates: CandidateSettings | None = None) -> Recommender:
        return cls(artifact.load(Path(directory)), candidates)

    # -- helpers ---------------------------------------------------------------------------------
    def has_item(self, item_id: str) -> bool:
        return item_id in self.catalog.index

    def _ids(self, item_ids: Sequence[str]) -> np.ndarray:
        """int64 [m]: the catalog rows of ``item_ids`` that are in the catalog (one lookup each)."""
        get = self.catalog.index.get
        rows = [get(i, -1) for i in item_ids]
        return np.array([r for r in rows if r >= 0], dtype=np.int64)

    def event_rows(self, events: Sequence[Event]) -> list[int]:
        """The catalog row of each event's item (-1: not in the catalog).

        The one pass over the big id -> row dict a request makes: on a 100k-item catalog each lookup misses
        the CPU caches (about a microsecond), so the stage signals and the event arrays share these rows.
        """
        get = self.catalog.index.get
        return [get(e.item_id, -1) for e in events]

    def stage_of(self, ctx: VisitorContext, rows: Sequence[int] | None = None) -> StageResult:
        """The visitor's stage; ``rows`` are ``event_rows(ctx.events)`` when the caller has them."""
        if ctx.stage_override is not None:
            return StageResult(ctx.stage_override, 1.0, ["stage set by the caller"])
        if rows is None:
            rows = self.event_rows(ctx.events)
        cat = self._category_by_row
        # the categories of this visitor's items only: a small dict the signals look up per event
        category_of = {e.item_id: cat[r] for e, r in zip(ctx.events, rows, strict=True) if r >= 0 and cat[r]}
        return infer_stage(ctx.events, ctx.now, self.rules, category_of)

    def _filter_mask(self, f: Filters, kind: ItemKind, rows: np.ndarray | None = None) -> np.ndarray:
        """bool [n_items], or [c] for ``rows`` (int64 [c] sorted catalog rows): what the filters allow."""
        c = self.catalog

        def col(a: np.ndarray) -> np.ndarray:
            return a if rows is None else a[rows]

        if kind is ItemKind.PRODUCT and f.in_stock_only:
            m = col(self._products_in_stock).copy()  # the common case, precomputed
        else:
            m = col(c.is_product).copy() if kind is ItemKind.PRODUCT else ~col(c.is_product)
            if f.in_stock_only:
                m &= col(c.in_stock)
        if f.category is not None:
            code = c.categories.get(f.category.lower())
            m &= col(c.category) == code if code is not None else False
        if f.min_price is not None:
            m &= col(c.price) >= f.min_price
        if f.max_price is not None:
            m &= col(c.price) <= f.max_price
        if f.exclude:
            _hide(m, rows, self._ids(sorted(f.exclude)))
        return m

    def _owned(self, ctx: VisitorContext, f: Filters) -> np.ndarray:
        """int64 [m]: items to hide: bought (non-repeatable), in the cart, or on screen."""
        hide = [np.zeros(0, np.int64)]
        if not f.include_purchased:
            bought = self._ids(_owned_items(ctx))
            hide.append(bought[~self.catalog.repeatable[bought]])
        if not f.include_cart:
            hide.append(self._ids(list(ctx.cart)))
        if ctx.current_item is not None:
            hide.append(self._ids([ctx.current_item]))
        return np.concatenate(hide)

    def _allowed(
        self, ctx: VisitorContext, f: Filters, kind: ItemKind, rows: np.ndarray | None = None
    ) -> np.ndarray:
        """bool [n_items] (or [c] for ``rows``): items the filters allow, minus what the visitor owns or
        sees on screen."""
        m = self._filter_mask(f, kind, rows)
        _hide(m, rows, self._owned(ctx, f))
        return m

    def _anchors(self, ctx: VisitorContext) -> np.ndarray:
        """Items the page is about: the product on screen, or the cart on cart/checkout pages."""
        if ctx.current_item is not None and ctx.current_item in self.catalog.index:
            return self._ids([ctx.current_item])
        if ctx.placement in ("cart", "checkout") or ctx.cart:
            return self._ids(list(ctx.cart))
        return np.zeros(0, dtype=np.int64)

    # -- recommendations -------------------------------------------------------------------------
    def _event_arrays(
        self, ctx: VisitorContext, rows: Sequence[int], older: Sequence[Event]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(items int64, codes int8, ts float64) [n]: the visitor's events on catalog items up to now, in
        time order, plus ``older``: the purchases and cancels from before the recent-events window
        (``_older_purchases``). rows: ``event_rows(ctx.events)``."""
        get, now = self.catalog.index.get, ctx.now
        items: list[int] = []
        codes: list[int] = []
        ts: list[float] = []
        for e in older:
            row = get(e.item_id)
            if row is not None and e.timestamp <= now:
                items.append(row)
                codes.append(e.event.code)
                ts.append(e.timestamp)
        for e, row in zip(ctx.events, rows, strict=True):
            if row >= 0 and e.timestamp <= now:
                items.append(row)
                codes.append(e.event.code)
                ts.append(e.timestamp)
        t_arr = np.array(ts, dtype=np.float64)
        order = np.argsort(t_arr, kind="stable")
        return np.array(items, dtype=np.int64)[order], np.array(codes, dtype=np.int8)[order], t_arr[order]

    def _user_features(self, ctx: VisitorContext, stage: Stage, known: bool) -> UserRow:
        tokens = [
            t
            for t in (
                f"country:{ctx.country.lower()}" if ctx.country else None,
                f"channel:{ctx.channel.value}" if ctx.channel else None,
            )
            if t
        ]
        return user_feature_row(self.user_index, ctx.visitor_id if known else None, stage, tokens)

    def _candidates(
        self, rep: np.ndarray, stage: Stage, new: bool, extra: list[Entry]
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(item rows int64 [c] sorted, their factor scores float32 [c]) to score, or None to score every
        item (small catalogs): the best clusters for the visitor, the stage's crowd favourites, and the
        strongest items of each ``extra`` entry (the visitor's sparse features, the page's anchors)."""
        if self.candidates is None:
            return None
        key = int(new) * len(STAGES) + stage.index
        query = np.append(rep, np.float32(1.0))
        cap = self.candidate_settings.feature_items
        # a visitor with a long history has thousands of weakly similar items: the strongest ones join
        strongest = [
            idx if len(idx) <= cap else idx[np.argpartition(-vals, cap)[:cap]] for _, idx, vals in extra
        ]
        return self.candidates.select(query, key, strongest)

    def recommend(self, ctx: VisitorContext, k: int, filters: Filters, n_content: int = 3) -> Recommendations:
        event_rows = self.event_rows(ctx.events)
        stage = self.stage_of(ctx, event_rows)
        older = _older_purchases(ctx)
        items, codes, ts = self._event_arrays(ctx, event_rows, older)
        live = LiveProfile.from_arrays(items, codes, ts, ctx.now, self._event_weights)
        live = live.with_cart(self._ids(list(ctx.cart)))
        features = live.features(self.scorer.tables)
        known = f"visitor:{ctx.visitor_id}" in self.user_index
        uf = self._user_features(ctx, stage.stage, known)
        extra = None
        if not known and len(items):
            # a visitor the model never saw: their latest items stand in for the identity embedding
            extra = self.scorer.item_repr[items[::-1][:_RECENT_FOR_COLD]].mean(axis=0)
        rep = self.scorer.visitor_repr(uf, extra)
        anchors = self._anchors(ctx)
        boost = self._anchor_boost(ctx, anchors)
        picked = self._candidates(rep, stage.stage, live.is_new, [*features, *boost])
        rows = picked[0] if picked is not None else np.arange(len(self.catalog.items), dtype=np.int64)
        allowed = self._allowed(ctx, filters, ItemKind.PRODUCT, rows)
        if picked is not None and int(allowed.sum()) < k:
            # the filters leave too few candidates: score the whole catalog instead
            picked, rows = None, np.arange(len(self.catalog.items), dtype=np.int64)
            allowed = self._allowed(ctx, filters, ItemKind.PRODUCT, rows)
        scored = self.scorer.score_items(
            None if picked is None else picked[0],
            rep,
            uf,
            stage.stage.index,
            features,
            live.is_new,
            raw=None if picked is None else picked[1],
        )
        score = scored.score
        comp, sim = (self._aligned(rows, e) for e in boost) if boost else (None, None)
        if comp is not None and sim is not None:
            score = score + _CONTEXT_WEIGHT * np.maximum(comp, sim)
        pos = top_k_one(score, k, allowed)
        pos = pos[pos >= 0].astype(np.int64)
        idx = rows[pos]
        sources = [FEATURE_SOURCES[f] for f in scored.dominant_feature(pos)]
        anchor_of: dict[str, np.ndarray] = {}
        if comp is not None and sim is not None:
            for r, p in enumerate(pos):
                if max(comp[p], sim[p]) > 0.2:  # the page's anchors explain this item best
                    sources[r] = "similar" if sim[p] > comp[p] else "complement"
            anchor_of = {"complement": anchors, "similar": anchors}
        products = self._items(idx, score[pos], sources, ctx, stage.stage, anchor_of, event_rows, older)
        content = self._content(stage.stage, n_content, items, codes, rep)
        return Recommendations(stage, products, content, self.version, fallback=False)

    @staticmethod
    def _aligned(rows: np.ndarray, entry: Entry) -> np.ndarray:
        """float32 [c]: an entry's values at ``rows`` (int64 [c] sorted), 0 elsewhere."""
        _, idx, vals = entry
        out = np.zeros(len(rows), np.float32)
        pos, hit = positions_in(rows, idx)
        out[pos[hit]] = vals[hit]
        return out

    def _anchor_boost(self, ctx: VisitorContext, anchors: np.ndarray) -> list[Entry]:
        """[] or the (complement, similar) entries, values in [0, 1], of the page's anchor items.

        Similar items count only on a product page (a current item); on cart pages complements do.
        """
        if len(anchors) == 0:
            return []
        t = self.scorer.tables
        comp = _anchor_row(t.complements, anchors)
        sim = (
            _anchor_row(t.similar, anchors)
            if ctx.current_item is not None
            else (np.zeros(0, np.int64), np.zeros(0, np.float32))
        )
        return [(-1, *comp), (-1, *sim)]

    def _items(
        self,
        idx: np.ndarray,
        scores: np.ndarray,
        sources: list[str],
        ctx: VisitorContext,
        stage: Stage,
        anchor_of: dict[str, np.ndarray],
        event_rows: Sequence[int],
        older: Sequence[Event],
    ) -> list[RecommendedItem]:
        """The chosen items (int [k] catalog rows, their float32 [k] scores) with their reasons.

        event_rows: ``event_rows(ctx.events)``, for anchors from the visitor's latest events; older: the
        purchases and cancels from before them (``_older_purchases``), for "bought 3 times".

        The anchor that explains a complement/similar item is looked up for all such items at once.
        """
        anchor_title = [""] * len(idx)
        anchor_relation = [""] * len(idx)
        ever_bought: set[str] | None = None  # item ids, gathered at the first anchor that needs them
        for source, m in (
            ("complement", self.scorer.tables.complements),
            ("similar", self.scorer.tables.similar),
        ):
            rows = [r for r, s in enumerate(sources) if s == source]
            if not rows:
                continue
            anchors = anchor_of.get(source)
            if anchors is None or len(anchors) == 0:
                recent = np.array([r for r in event_rows[-20:] if r >= 0], np.int64)
                anchors = np.unique(np.concatenate([self._ids([*ctx.cart, *ctx.purchases]), recent]))
            if len(anchors) == 0:
                continue
            for r, a in zip(rows, best_anchors(m, anchors, idx[rows]), strict=True):
                if a >= 0:  # else the reason stays generic: no anchor relates to the item
                    best = self.catalog.items[int(anchors[a])]
                    anchor_title[r] = best.title or best.item_id
                    if ever_bought is None:
                        ever_bought = set(ctx.purchases) | {
                            e.item_id for e in (*ctx.purchase_log, *ctx.events) if e.event is _P
                        }
                    anchor_relation[r] = relation(
                        on_page=best.item_id == ctx.current_item,
                        in_cart=best.item_id in ctx.cart,
                        bought=best.item_id in ever_bought,
                    )
        bought: Counter[str] = Counter()
        last_seen: dict[str, float] = {}
        if _AGED.intersection(
            sources
        ):  # only buy-again and recently-viewed reasons need the visitor's events
            # "bought 3 times": over the purchase log when there is one (it reaches beyond the events)
            history = [*older, *ctx.events]
            bought.update(e.item_id for e in history if e.event is EventType.PURCHASE)
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
                source,
                stage,
                anchor_title=anchor_title[r],
                anchor_relation=anchor_relation[r],
                age_s=age,
                count=bought.get(item.item_id, 0),
            )
            out.append(RecommendedItem(item.item_id, round(float(scores[r]), 6), source, reason))
        return out

    def _content(
        self, stage: Stage, n: int, items: np.ndarray, codes: np.ndarray, rep: np.ndarray
    ) -> list[RecommendedItem]:
        """Content serving the stage, in the visitor's categories, ranked by the factor model.

        items int64 [e], codes int8 [e]: the visitor's events on catalog items in time order
        (``_event_arrays``); rep float32 [d]: the visitor's representation (``StageScorer.visitor_repr``).
        """
        c = self.catalog
        sc = self._stage_content[stage.index]
        if n <= 0 or len(sc.rows) == 0:
            return []
        allowed = np.ones(len(sc.rows), bool)
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
        wanted[c.category[items[-30:]]] = True  # the categories of the latest events
        wanted[c.categories.get("", len(c.categories))] = False  # "no category" is not an interest
        score = fs  # in place: + 2 in the visitor's categories, + 0.5 when specific to the stage
        score += sc.bonus
        np.add(score, np.float32(2.0), out=score, where=wanted[sc.category])
        top = top_k_one(score, n, allowed)
        out = []
        for j in top[top >= 0]:
            item = c.items[int(sc.rows[j])]
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
        s = np.zeros(len(self.catalog.items), np.float32)
        near, strength = _anchor_row(m, anchors)
        s[near] = strength
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
