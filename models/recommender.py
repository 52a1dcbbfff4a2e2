"""Online recommendations from a loaded artifact and one visitor's live state.

``Recommender`` is the front the service calls; each step of a request is a module of its own:

    history     ``models.history``   the visitor's events on catalog items, with older purchases
    stage       ``models.journey``   where the visitor is in the journey
    profile     ``models.live_profile``, ``models.features``: sparse features, the visitor's representation
    candidates  ``models.candidates`` the items worth scoring (every item on small catalogs)
    score       ``models.scoring``   one GEMV over precomputed item representations, plus the page's
                                     anchors (``models.related``)
    mask        ``models.catalog``   what the filters allow, minus what the visitor owns or sees
    top-k       ``models.scoring``   one partial sort; under merchandising rules ``models.rules``
                                     (boost, bury, pin, hide, per-category caps) instead
    explain     ``models.explain``   the source and the reason of each chosen item
    content     ``models.content``   content serving the stage

The stage is plain Python over at most a few hundred events; the rest is a handful of vectorised arrays.
``LightFM.predict`` is never called.

The live catalog (``models.overlay``) is applied off the request path by ``with_overlay``, which returns a
new front serving the same model with the shop's current catalog.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import msgspec
import numpy as np

from models import artifact
from models.artifact import Manifest, ModelBundle
from models.blend import NON_POSITIVE_COLUMNS, POPULARITY_NEW, SUBSTITUTE
from models.candidates import CandidateIndex, CandidateSettings
from models.catalog import Availability, CatalogColumns, allowed_mask
from models.content import fallback_content, rank_content, stage_content
from models.domain import STAGES, CatalogItem, Event, ItemKind, Stage
from models.explain import explain, item_sources, label_new
from models.exploration import explore
from models.fallback import crowd_score, popular_items
from models.features import represent_items, user_feature_row
from models.history import event_arrays, older_purchases
from models.journey import JourneyRules, StageResult, infer_stage
from models.live_profile import Entry, LiveProfile
from models.overlay import EMPTY_OVERLAY, CatalogOverlay, LiveItem
from models.related import (
    RelatedItems,
    aligned,
    feature_neighbours,
    page_anchors,
    page_entries,
    related_items,
    retarget,
)
from models.request import Filters, Recommendations, RecommendedItem, RuleEffect, VisitorContext
from models.rules import CompiledRules, RuleSet, apply_rules, compile_rules
from models.scoring import StageScorer, UserRow, top_k, top_k_one
from models.serving_rules import Exploration, ServingRules


class Recommender:
    """A loaded, verified model ready to serve."""

    def __init__(self, bundle: ModelBundle, candidates: CandidateSettings | None = None) -> None:
        """Large catalogs score a candidate set per request, small ones every item (``models.candidates``)."""
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.version: str = bundle.manifest.version
        self.rules: JourneyRules = bundle.manifest.rules
        self.serving: ServingRules = bundle.manifest.serving
        self.scorer = sc = StageScorer(bundle.factors, bundle.tables, bundle.blend_weights, self.serving)
        self.catalog = CatalogColumns.build(bundle.catalog)
        self.user_index = bundle.user_vocab.index()
        self.n_user_features = len(bundle.user_vocab.names)
        self._event_weights = self.manifest.weights.vector()
        self._fallback_score = crowd_score(bundle.tables, self.serving)
        self._stage_content = stage_content(self.catalog, sc, self.serving)
        self.related = RelatedItems.build(
            self.catalog, bundle.tables, sc.item_repr, self._fallback_score, self.serving
        )
        self._every_row = np.arange(len(self.catalog), dtype=np.int64)
        self._every_row.setflags(write=False)
        self.candidate_settings = cs = candidates or CandidateSettings()
        self.candidates: CandidateIndex | None = None
        if len(bundle.catalog) > cs.exhaustive_max_items:
            # per (new or known visitor, stage): the best in-stock products by their crowd score
            new_crowd = sc.crowd + sc.blend_weights[:, POPULARITY_NEW, None] * sc.popularity
            base = np.concatenate([sc.crowd, new_crowd])
            base = np.where(self.catalog.products_in_stock[None, :], base, -np.inf).astype(np.float32)
            vectors = np.hstack([sc.item_repr, sc.item_bias[:, None]])
            self.candidates = CandidateIndex.build(vectors, top_k(base, cs.crowd_items).astype(np.int64), cs)
        # the merchandising rules served by default (``install_rules``), compiled for this catalog
        self.merchandising: CompiledRules | None = None
        # the live catalog (``with_overlay``): the model as loaded, the overlay served, the first row of the
        # items the model never saw (none here), and the slots kept for them
        self.base: Recommender = self
        self.overlay: CatalogOverlay = EMPTY_OVERLAY
        self.new_from: int = len(self.catalog)
        self.exploration: Exploration | None = None
        self._item_vocab_index: dict[str, int] | None = None
        self._category_code: dict[str, int] | None = None  # ``sources.category_codes``' map, when needed
        # the arrays the live catalog's new items last needed (``_apply``), by what they depend on
        self._new_item_arrays: tuple[object, _NewItems] | None = None

    @classmethod
    def load(cls, directory: Path, candidates: CandidateSettings | None = None) -> Recommender:
        return cls(artifact.load(Path(directory)), candidates)

    def compile_rules(self, ruleset: RuleSet) -> CompiledRules:
        """``ruleset`` compiled against this model's catalog, to pass to ``recommend`` (a preview)."""
        return compile_rules(ruleset, self.catalog)

    def install_rules(self, ruleset: RuleSet | None) -> CompiledRules | None:
        """Serve ``ruleset`` (None: no rules) from the next request on; a new model or a new rule version
        installs its rule set again. Returns the compiled rules (their ``unresolved`` pins to report)."""
        compiled = None if ruleset is None else self.compile_rules(ruleset)
        self.merchandising = compiled  # one reference swap: a request reads it once
        return compiled

    def with_overlay(self, overlay: CatalogOverlay, exploration: Exploration | None = None) -> Recommender:
        """A new front serving the same model with the live catalog ``overlay``; this one is unchanged.
        Built from the model as loaded every time (``base``), so a newer overlay replaces an older one and
        nothing accumulates. Pure and off the request path: the service builds it and swaps it in.

        - Items the model knows take the live fields (stock, price, category, kind, title, tags, stages,
          repeatable) in the catalog columns: filters, categories and reasons follow them. Their learned
          representation is kept: it is fitted to their events (its identity part carries most of it), and
          the next retrain learns the new features from the exported catalog; so patches share every
          model array.
        - Items it never saw are appended (rows ``new_from`` onwards) and represented from their features
          through the model's feature embeddings (``features.represent_items``: no identity, rows
          normalised as in training); they join scoring, the candidate index and item-to-item answers by
          embedding cosine, and are answered as ``Source.NEW`` "new in <category>". Retired ones are left
          out.
        - Hidden and retired items are never served, and items with ``available_from``/``expires_at`` only
          inside that window at the request's time (``catalog.Availability``), by every path.
        - ``exploration``: the share of each stage's product slots kept for the new items (None: off).
        - The merchandising rules installed on this front are compiled for the live catalog.
        """
        base = self.base
        out = copy.copy(base)
        out.overlay = overlay
        out.exploration = exploration
        if overlay.items:
            out._apply(overlay)
        # the rules this front serves, compiled for the live catalog here rather than on a request
        merch = self.merchandising
        if merch is not None and merch.catalog is not out.catalog:
            merch = compile_rules(merch.ruleset, out.catalog)
        out.merchandising = merch
        return out

    def with_crowd_score(self, score: np.ndarray) -> Recommender:
        """A front whose non-personalised answer (``fallback``) ranks by ``score`` (float32 [n_items] over
        this front's catalog, e.g. ``scorer.trending``: a trending-only list); this one is unchanged."""
        out = copy.copy(self)
        out._fallback_score = score
        return out

    def _apply(self, overlay: CatalogOverlay) -> None:
        """Set this copy of ``base`` up to serve ``overlay`` (``with_overlay``)."""
        base, out = self.base, self
        bc = base.catalog
        trained_rows: list[int] = []
        trained: list[CatalogItem] = []
        new: list[CatalogItem] = []
        live = []  # (row, entry) of every item the overlay keeps in the catalog
        for item_id, entry in overlay.items.items():
            if entry.item.item_id != item_id:
                raise ValueError(f"overlay entry {item_id!r} holds item {entry.item.item_id!r}")
            row = bc.index.get(item_id)
            if row is not None:
                trained_rows.append(row)
                trained.append(entry.item)
            elif entry.retired:
                continue  # never served, and the model never knew it: nothing to keep
            else:
                row = len(bc) + len(new)
                new.append(entry.item)
            live.append((row, entry))
        # What the new items need (their representations, links, scorer, index) depends on them and on the
        # category and kind of the trained items they link to, not on stock, price or visibility: a change
        # of those (the common write) reuses the arrays the previous overlay built.
        moved = tuple(
            (r, c.category, c.kind)
            for r, c in zip(trained_rows, trained, strict=True)
            if c.category != bc.items[r].category or c.kind is not bc.items[r].kind
        )
        key = (tuple(new), moved) if new else None
        cached = base._new_item_arrays
        made: _NewItems | None
        if new and cached is not None and cached[0] == key:
            made = cached[1]
        else:
            made = base._build_new_items(new, trained_rows, trained) if new else None
            if made is not None:
                base._new_item_arrays = (key, made)
        catalog = made.catalog if made is not None else bc
        catalog = catalog.with_live(
            np.array(trained_rows, np.int64), trained, _availability(len(catalog), live)
        )
        out.catalog = catalog
        out.new_from = len(bc)
        out._every_row = np.arange(len(catalog), dtype=np.int64)
        out._every_row.setflags(write=False)
        if made is not None:
            out.scorer, out._fallback_score, norm_repr = made.scorer, made.fallback_score, made.norm_repr
            if made.candidates is not None:
                out.candidates = made.candidates
        else:
            norm_repr = base.related.norm_repr
        out.related = RelatedItems(
            catalog, out.scorer.tables, norm_repr, out._fallback_score, base.serving, out.new_from
        )
        out._stage_content = stage_content(catalog, out.scorer, base.serving)

    def _build_new_items(
        self, new: list[CatalogItem], trained_rows: list[int], trained: list[CatalogItem]
    ) -> _NewItems:
        """The arrays the live catalog's ``new`` items need, on this (base) front: the catalog extended with
        them (the trained items' live category and kind applied, which their links read), their
        representations from features, the similarity table with each linked to alike trained items, the
        scorer, the crowd scores and the candidate index."""
        bc, b = self.catalog, self.bundle
        extended = bc.extend(new)
        catalog = extended.with_live(np.array(trained_rows, np.int64), trained, None)  # categories, kinds
        if self._item_vocab_index is None:
            self._item_vocab_index = b.item_vocab.index()
        rep = represent_items(b.factors, b.item_vocab, b.price_edges, new, self._item_vocab_index)
        norm = rep.embedding / np.maximum(np.linalg.norm(rep.embedding, axis=1, keepdims=True), 1e-6)
        norm_repr = np.concatenate([self.related.norm_repr, norm.astype(np.float32)])
        # as ``StageScorer.with_new_items``, with the new items linked to alike trained ones and in their
        # categories (a new kettle is a substitute of a kettle just bought)
        bs = self.scorer
        tables = bs.tables.with_new_items(len(new))
        links = feature_neighbours(tables.similar, norm_repr, catalog, len(bc), tables.popularity)
        tables = replace(
            tables,
            similar=links,
            category=self._new_categories(tables.category, new),
            repeatable=None
            if tables.repeatable is None
            else np.concatenate([tables.repeatable[: len(bc)], [c.repeatable for c in new]]).astype(bool),
        )
        sc = StageScorer(bs.factors.with_item_rows(rep.features.rows), tables, bs.blend_weights, bs.rules)
        candidates = (
            None
            if self.candidates is None
            else self.candidates.with_new_items(np.hstack([rep.embedding, rep.bias[:, None]]))
        )
        return _NewItems(extended, sc, crowd_score(sc.tables, self.serving), norm_repr, candidates)

    def _new_categories(self, codes: np.ndarray | None, new: list[CatalogItem]) -> np.ndarray | None:
        """``ItemTables.category`` (int32 [n + m], the m new items -1) with the new items coded as
        ``sources.category_codes`` codes the model's catalog; a category the model never saw gets the next
        code. None when the model has no categories."""
        if codes is None:
            return None
        if self._category_code is None:
            names = sorted({c.category for c in self.catalog.items if c.category})
            self._category_code = {n: i for i, n in enumerate(names)}
        code = dict(self._category_code)
        tail = [code.setdefault(c.category, len(code)) if c.category else -1 for c in new]
        return np.concatenate([codes[: len(codes) - len(new)], np.array(tail, np.int32)])

    def has_item(self, item_id: str) -> bool:
        return item_id in self.catalog.index

    def from_features(self, item_id: str) -> bool:
        """Whether ``item_id`` is served from its features alone: the live catalog added it and the model
        never saw it (False for trained items and for ids not in the catalog)."""
        return self.catalog.index.get(item_id, -1) >= self.new_from

    def event_rows(self, events: Sequence[Event]) -> list[int]:
        """The catalog row of each event's item (-1: not in the catalog): ``CatalogColumns.event_rows``."""
        return self.catalog.event_rows(events)

    # -- the request path ------------------------------------------------------------------------
    def stage_of(self, ctx: VisitorContext, rows: Sequence[int] | None = None) -> StageResult:
        """The visitor's stage; ``rows`` are ``event_rows(ctx.events)`` when the caller has them."""
        if ctx.stage_override is not None:
            return StageResult(ctx.stage_override, 1.0, ["stage set by the caller"])
        if rows is None:
            rows = self.catalog.event_rows(ctx.events)
        cat = self.catalog.category_by_row
        # the categories of this visitor's items only: a small dict the signals look up per event
        category_of = {e.item_id: cat[r] for e, r in zip(ctx.events, rows, strict=True) if r >= 0 and cat[r]}
        return infer_stage(ctx.events, ctx.now, self.rules, category_of)

    def _visitor(self, ctx: VisitorContext, stage: Stage, items: np.ndarray) -> tuple[UserRow, np.ndarray]:
        """(user feature row, representation float32 [d]) of the visitor at ``stage``; items int64 [e]: their
        events' catalog rows in time order (a visitor the model never saw is represented by their latest
        items in place of the identity embedding)."""
        known = f"visitor:{ctx.visitor_id}" in self.user_index
        tokens = [
            t
            for t in (
                f"country:{ctx.country.lower()}" if ctx.country else None,
                f"channel:{ctx.channel.value}" if ctx.channel else None,
            )
            if t
        ]
        uf = user_feature_row(self.user_index, ctx.visitor_id if known else None, stage, tokens)
        extra = None
        if not known and len(items):
            extra = self.scorer.item_repr[items[::-1][: self.serving.recent_for_cold]].mean(axis=0)
        return uf, self.scorer.visitor_repr(uf, extra)

    def _candidates(
        self, rep: np.ndarray, stage: Stage, new: bool, extra: list[Entry], pinned: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(item rows int64 [c] sorted, their factor scores float32 [c]) to score, or None to score every
        item (small catalogs): the best clusters for the visitor, the stage's crowd favourites, the
        strongest items of each ``extra`` entry (the visitor's sparse features, the page's anchors), and
        the ``pinned`` rows (int64, merchandising pins: placed whether or not the visitor would get them)."""
        if self.candidates is None:
            return None
        key = int(new) * len(STAGES) + stage.index
        query = np.append(rep, np.float32(1.0))
        cap = self.candidate_settings.feature_items
        # a visitor with a long history has thousands of weakly similar items: the strongest ones join;
        # a feature whose fitted weight is never positive (substitutes of a purchase) cannot lift an item
        # into the list, so its items (a whole category) are not candidates for it
        strongest = [
            idx if len(idx) <= cap else idx[np.argpartition(-vals, cap)[:cap]]
            for f, idx, vals in extra
            if f not in NON_POSITIVE_COLUMNS
        ]
        if pinned is not None:
            strongest.append(pinned)
        return self.candidates.select(query, key, strongest)

    def recommend(
        self,
        ctx: VisitorContext,
        k: int,
        filters: Filters,
        n_content: int = 3,
        rules: CompiledRules | None = None,
    ) -> Recommendations:
        """Up to ``k`` products and ``n_content`` content items for the visitor, with their stage.

        rules: the merchandising rules to apply (``compile_rules``), else the installed ones
        (``install_rules``), if any; they act on the scored products before the top k, and the products'
        scores are then those after boosts and buries (``models.rules``).
        """
        c, sc = self.catalog, self.scorer
        merch = self._merchandising(rules)
        # history
        event_rows = c.event_rows(ctx.events)
        older = older_purchases(ctx)
        items, codes, ts = event_arrays(ctx, event_rows, older, c.index)
        # stage
        stage = self.stage_of(ctx, event_rows)
        # profile: the visitor's sparse features, representation and the page's anchor items
        live = LiveProfile.from_arrays(
            items, codes, ts, ctx.now, self._event_weights, self.serving.basket_params
        )
        live = live.with_cart(c.rows_of(list(ctx.cart)))
        # without the substitute feature: a whole category per recent one-off purchase, taken for the
        # rows that are scored once they are known (``LiveProfile.substitutes_at``); the visitor's own
        # row of the basket-neighbours pool (the vocabulary lists the model's visitors first, in the
        # pool's order) is never their neighbour
        own_row = self.user_index.get(f"visitor:{ctx.visitor_id}", -1)
        features = live.features(sc.tables, self.serving, substitutes=False, own_row=own_row)
        uf, rep = self._visitor(ctx, stage.stage, items)
        anchors = page_anchors(c, ctx)
        page = page_entries(sc.tables, ctx, anchors)
        # candidates
        pinned = None if merch is None else merch.pinned_rows(stage.stage, ctx.placement, ctx.now)
        picked = self._candidates(rep, stage.stage, live.is_new, [*features, *page], pinned)
        rows = picked[0] if picked is not None else self._every_row
        # mask: the filters, and in retention the substitutes of a fresh one-off purchase
        allowed, sub = self._allowed(ctx, filters, live, stage.stage, rows)
        if picked is not None and int(allowed.sum()) < k:
            # the filters leave too few candidates: score the whole catalog instead
            picked, rows = None, self._every_row
            allowed, sub = self._allowed(ctx, filters, live, stage.stage, rows)
        # score
        if sub is not None:
            features = [*features, sub]
        scored = sc.score_items(
            None if picked is None else picked[0],
            rep,
            uf,
            stage.stage.index,
            features,
            live.is_new,
            raw=None if picked is None else picked[1],
        )
        score = scored.score
        near = (aligned(rows, page[0]), aligned(rows, page[1])) if page else None
        if near is not None:
            score = score + self.serving.context_weight * np.maximum(near[0], near[1])
        # top-k
        if merch is None:
            pos = top_k_one(score, k, allowed)
            pos = pos[pos >= 0].astype(np.int64)
        else:
            outcome = apply_rules(merch, rows, score, allowed, stage.stage, ctx.placement, ctx.now, k)
            pos, score = outcome.positions, outcome.score
        idx = rows[pos]
        # explain
        sources = item_sources(scored, pos, near, self.serving.anchor_threshold)
        products = explain(
            c,
            sc.tables,
            idx,
            score[pos],
            sources,
            ctx,
            stage.stage,
            anchors if near is not None else None,
            event_rows,
            older,
        )
        # content
        content = rank_content(
            c, self._stage_content[stage.stage.index], stage.stage, n_content, items, codes, rep, ctx.now
        )
        if merch is not None:
            products = _with_effects(products, outcome.effects)
        if self.new_from < len(c):  # the live catalog's new items: "new in kettles", exploration slots
            products = self._new_items(products, ctx, k, filters, merch, stage.stage, rep, uf, features, live)
        if merch is None:
            return Recommendations(stage, products, content, self.version, fallback=False)
        return Recommendations(stage, products, content, self.version, False, merch.version, outcome.fallback)

    def _allowed(
        self, ctx: VisitorContext, filters: Filters, live: LiveProfile, stage: Stage, rows: np.ndarray
    ) -> tuple[np.ndarray, Entry | None]:
        """(bool [c] which of ``rows`` (int64 [c] sorted) may be served, the substitute feature at them or
        None): the filters' mask (``catalog.allowed_mask``) and, at the retention stage, not the items
        whose substitute value reaches ``ServingRules.substitute_cutoff`` (after a kettle, no other kettle:
        its complements, replenishment and content instead; ``sources.substitutes_kept_out`` offline)."""
        allowed = allowed_mask(self.catalog, ctx, filters, ItemKind.PRODUCT, rows)
        sub = live.substitutes_at(self.scorer.tables, self.serving, rows)
        if sub is not None and stage is Stage.RETENTION:
            _, idx, vals = sub
            allowed[np.searchsorted(rows, idx[vals >= np.float32(self.serving.substitute_cutoff)])] = False
        return allowed, sub

    def _new_items(
        self,
        products: list[RecommendedItem],
        ctx: VisitorContext,
        k: int,
        filters: Filters,
        merch: CompiledRules | None,
        stage: Stage,
        rep: np.ndarray,
        uf: UserRow,
        features: list[Entry],
        live: LiveProfile,
    ) -> list[RecommendedItem]:
        """``products`` with the live catalog's new items labelled "new in <category>" and, when
        exploration is on, its share of slots (``models.exploration``); what the filters, the live
        catalog or a hide rule keep out is never explored."""
        c = self.catalog
        products = label_new(products, c, self.new_from)
        slots = self.exploration.slots(stage, k) if self.exploration is not None else 0
        if not slots:
            return products
        new_rows = self._every_row[self.new_from :]
        allowed, sub = self._allowed(ctx, filters, live, stage, new_rows)
        hidden = None if merch is None else merch.active(stage, ctx.placement, ctx.now).hidden
        if hidden is not None:
            allowed &= ~hidden[self.new_from :]
        sc = self.scorer
        features = [f for f in features if f[0] != SUBSTITUTE] + ([] if sub is None else [sub])
        return explore(
            products, k, slots, c, sc, self.new_from, allowed, rep, uf, stage, features, live.is_new
        )

    def _merchandising(self, rules: CompiledRules | None) -> CompiledRules | None:
        """``rules``, else the installed rules; compiled again when compiled for another catalog (their
        masks would not fit this one)."""
        merch = self.merchandising if rules is None else rules
        if merch is not None and merch.catalog is not self.catalog:
            merch = compile_rules(merch.ruleset, self.catalog)
            if rules is None:  # the installed rules: once, not on every request
                self.merchandising = merch
        return merch

    def fallback(
        self,
        ctx: VisitorContext,
        k: int,
        filters: Filters,
        n_content: int = 3,
        rules: CompiledRules | None = None,
    ) -> Recommendations:
        """Non-personalised answer (popular and trending), used when the visitor's state is unavailable;
        ``rules`` as for ``recommend``."""
        stage = (
            self.stage_of(ctx)
            if ctx.events or ctx.stage_override
            else StageResult(Stage.AWARENESS, 0.0, ["visitor state unavailable: showing popular items"])
        )
        allowed = allowed_mask(self.catalog, ctx, filters, ItemKind.PRODUCT)
        content = fallback_content(self.catalog, stage.stage, n_content, ctx.now)
        merch = self._merchandising(rules)
        score, tables = self._fallback_score, self.scorer.tables
        if merch is None:
            products = popular_items(
                self.catalog, tables, score, allowed, k, stage.stage, self.serving, now=ctx.now
            )
            products = label_new(products, self.catalog, self.new_from)
            return Recommendations(stage, products, content, self.version, fallback=True)
        rows = self._every_row
        outcome = apply_rules(merch, rows, score, allowed, stage.stage, ctx.placement, ctx.now, k)
        products = popular_items(
            self.catalog,
            tables,
            outcome.score,
            allowed,
            k,
            stage.stage,
            self.serving,
            chosen=outcome.positions,
            now=ctx.now,
        )
        products = label_new(_with_effects(products, outcome.effects), self.catalog, self.new_from)
        return Recommendations(stage, products, content, self.version, True, merch.version, outcome.fallback)

    # -- item-to-item ----------------------------------------------------------------------------
    def similar(
        self, item_ids: list[str], k: int, filters: Filters, now: float | None = None
    ) -> list[RecommendedItem]:
        """Items like ``item_ids``; ``now``: the request's time (POSIX seconds) for the live catalog's
        availability windows, the wall clock when None."""
        return related_items(self.related, item_ids, k, filters, "similar", _now(now))

    def complements(
        self, item_ids: list[str], k: int, filters: Filters, now: float | None = None
    ) -> list[RecommendedItem]:
        """Items bought with ``item_ids``; ``now`` as for ``similar``."""
        return related_items(self.related, item_ids, k, filters, "complement", _now(now))

    def retargeting(
        self, ctx: VisitorContext, k: int, filters: Filters, sent: frozenset[str]
    ) -> list[RecommendedItem]:
        """Abandoned-cart and browsed items, then complements, for email/ad campaigns
        (``models.related.retarget``)."""
        return retarget(self.related, ctx, self.stage_of(ctx).stage, k, filters, sent)


def _with_effects(
    items: list[RecommendedItem], effects: list[tuple[RuleEffect, ...]]
) -> list[RecommendedItem]:
    """``items`` with the rules that changed each one (``RuleOutcome.effects``, aligned)."""
    return [msgspec.structs.replace(p, rules=e) if e else p for p, e in zip(items, effects, strict=True)]


def _now(now: float | None) -> float:
    """The request's time: the caller's, else the wall clock (item-to-item requests carry no visitor)."""
    return time.time() if now is None else now


@dataclass(frozen=True)
class _NewItems:
    """What the live catalog's new items add to a model (``Recommender._build_new_items``): the catalog
    extended with them (model fields; the live ones are applied per overlay), the scorer, crowd scores,
    unit item representations (float32 [n + m, d]) and candidate index over every item."""

    catalog: CatalogColumns
    scorer: StageScorer
    fallback_score: np.ndarray
    norm_repr: np.ndarray
    candidates: CandidateIndex | None


def _availability(n: int, live: list[tuple[int, LiveItem]]) -> Availability | None:
    """The live catalog's ``Availability`` over ``n`` rows from its (row, entry) pairs, or None when it
    keeps nothing from serving."""
    off = [r for r, e in live if e.hidden or e.retired]
    timed = sorted(
        ((r, e) for r, e in live if e.available_from is not None or e.expires_at is not None),
        key=lambda x: x[0],
    )
    if not off and not timed:
        return None
    servable = np.ones(n, bool)
    servable[np.array(off, np.int64)] = False
    return Availability(
        servable,
        np.array([r for r, _ in timed], np.int64),
        np.array([-np.inf if e.available_from is None else e.available_from for _, e in timed], np.float64),
        np.array([np.inf if e.expires_at is None else e.expires_at for _, e in timed], np.float64),
    )
