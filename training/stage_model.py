"""Fitting the stage-aware model: LightFM hybrid over (visitor, stage) rows + item tables + fitted blend."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import msgspec
import numpy as np
import scipy.sparse as sp

from models.blend import (
    FEATURE_SOURCES,
    N_FEATURES,
    SPARSE_COLUMNS,
    BlendWeights,
    ListSample,
    feature_arrays,
    fit_blend,
    sample_lists,
)
from models.catalog import CatalogColumns
from models.dataset import CHANNELS, EventLog
from models.domain import EVENT_TYPES, PURCHASE_LOG_EVENTS, STAGES, Event, EventType, ItemKind, Stage
from models.errors import EmptyDatasetError
from models.explain import explain
from models.features import (
    Vocabulary,
    build_item_vocabulary,
    build_user_vocabulary,
    item_feature_matrix,
    price_band_edges,
    represent_items,
    user_feature_rows,
)
from models.history import older_purchases
from models.journey import DEFAULT_RULES, JourneyRules, stages_at, stages_before_events
from models.profiles import profiles_from_log
from models.request import RecommendedItem, VisitorContext
from models.scoring import StageScorer, top_k
from models.serving_rules import DEFAULT_SERVING, ServingRules
from models.sources import ItemTables, fit_item_tables, substitutes_kept_out
from models.weights import DEFAULT_POSITIVE, EventWeights, positive_codes
from training.factorization import (
    FactorParams,
    export_factors,
    interaction_matrices,
    new_model,
    train_epochs,
)

N_STAGES = len(STAGES)


class StageModelConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Everything that shapes a stage-aware model. Defaults are the documented ones."""

    factors: FactorParams = msgspec.field(default_factory=FactorParams)
    weights: EventWeights = msgspec.field(default_factory=EventWeights)
    positive: frozenset[EventType] = DEFAULT_POSITIVE
    rules: JourneyRules = DEFAULT_RULES
    # the blend features' windows and the request path's constants, published with the model
    serving: ServingRules = DEFAULT_SERVING
    # "time": the last `validation_fraction` of the training period; "holdout": a random
    # `validation_fraction` of each visitor's positive events (for data without a meaningful clock order)
    validation: str = "time"
    validation_fraction: float = 0.15
    max_validation_visitors: int = 6000
    exclude_seen: bool = False
    neighbours: int = 100
    seed: int = 1
    threads: int = 2


def product_mask(log: EventLog) -> np.ndarray:
    """bool[n_items]: catalog entries that are products (content is ranked separately)."""
    return np.array([c.kind is ItemKind.PRODUCT for c in log.catalog], dtype=bool)


def visitor_context_tokens(log: EventLog) -> list[list[str]]:
    """Per visitor: their static features plus their most frequent channel, as feature tokens."""
    toks = [list(f) for f in log.visitor_features]
    has = log.channel >= 0
    if has.any():
        counts = np.bincount(
            log.visitor[has].astype(np.int64) * len(CHANNELS) + log.channel[has],
            minlength=log.n_visitors * len(CHANNELS),
        ).reshape(log.n_visitors, len(CHANNELS))
        top = counts.argmax(axis=1)
        for v in np.flatnonzero(counts.max(axis=1) > 0):
            toks[v].append(f"channel:{CHANNELS[top[v]].value}")
    return toks


@dataclass
class FittedStageModel:
    """A fitted model plus what is needed to score new visitors and to write an artifact."""

    scorer: StageScorer
    item_vocab: Vocabulary
    user_vocab: Vocabulary
    price_edges: np.ndarray
    blend: BlendWeights
    config: StageModelConfig
    trained_until: float
    context: list[list[str]]


class _Fitter:
    def __init__(self, log: EventLog, cfg: StageModelConfig, progress: Callable[[str], None]) -> None:
        self.log, self.cfg, self.progress = log, cfg, progress
        self.context = visitor_context_tokens(log)
        self.price_edges = price_band_edges(
            np.array([c.price or np.nan for c in log.catalog], dtype=np.float64)
        )
        self.item_vocab = build_item_vocabulary(log.catalog, self.price_edges)
        self.item_features = item_feature_matrix(log.catalog, self.item_vocab, self.price_edges)
        self.user_vocab = build_user_vocabulary(log.visitor_ids, self.context)
        self.user_index = self.user_vocab.index()
        # one LightFM user row per (visitor, stage): the same visitor is represented differently by stage
        rows_v = np.repeat(np.arange(log.n_visitors), N_STAGES)
        rows_s = np.tile(np.arange(N_STAGES), log.n_visitors)
        self.user_features = user_feature_rows(
            self.user_index,
            [log.visitor_ids[v] for v in rows_v],
            [STAGES[s] for s in rows_s],
            [self.context[v] for v in rows_v],
            len(self.user_vocab.names),
        )
        self.model = new_model(cfg.factors, cfg.seed)

    def interactions(self, part: EventLog) -> tuple[sp.coo_matrix, sp.coo_matrix]:
        stage, _ = stages_before_events(part, self.cfg.rules)
        rows = part.visitor.astype(np.int64) * N_STAGES + stage
        w = self.cfg.weights.of(part.event)
        shape = (self.log.n_visitors * N_STAGES, self.log.n_items)
        return interaction_matrices(rows, part.item, w, shape, self.cfg.factors.max_weight)

    def train(self, part: EventLog, epochs: int) -> None:
        x, w = self.interactions(part)
        train_epochs(
            self.model,
            x,
            w,
            epochs=epochs,
            threads=self.cfg.threads,
            user_features=self.user_features,
            item_features=self.item_features,
        )

    def scorer(self, tables: ItemTables, blend_w: np.ndarray) -> StageScorer:
        return StageScorer(export_factors(self.model, self.item_features), tables, blend_w, self.cfg.serving)


def user_rows_for(
    fitted_vocab_index: dict[str, int],
    n_user_features: int,
    log: EventLog,
    visitors: np.ndarray,
    stages: np.ndarray,
    context: list[list[str]],
    known: np.ndarray,
) -> sp.csr_matrix:
    """User feature rows for ``visitors`` (int32[u]) at ``stages`` (int8[u]); visitors without training
    events (``known`` False) get no identity feature."""
    return user_feature_rows(
        fitted_vocab_index,
        [log.visitor_ids[v] if known[v] else None for v in visitors],
        [STAGES[s] for s in stages],
        [context[v] for v in visitors],
        n_user_features,
    )


def visitor_context(log: EventLog, visitor: int, now: float, recent: int = 100) -> VisitorContext:
    """A visitor's state at ``now`` as the service would hold it, from their events in ``log`` before
    ``now``: the latest ``recent`` events, the cart (items added and neither removed nor bought since),
    each item's latest purchase and the purchase log (purchases and cancels)."""
    rows = np.flatnonzero((log.visitor == visitor) & (log.ts < now))
    rows = rows[np.argsort(log.ts[rows], kind="stable")]
    events = [
        Event(
            visitor_id=log.visitor_ids[visitor],
            item_id=log.catalog[int(log.item[i])].item_id,
            event=EVENT_TYPES[int(log.event[i])],
            timestamp=float(log.ts[i]),
        )
        for i in rows
    ]
    cart: dict[str, float] = {}
    purchases: dict[str, float] = {}
    for e in events:
        if e.event is EventType.ADD_TO_CART:
            cart[e.item_id] = e.timestamp
        elif e.event in (EventType.REMOVE_FROM_CART, EventType.PURCHASE):
            cart.pop(e.item_id, None)
        if e.event is EventType.PURCHASE:
            purchases[e.item_id] = e.timestamp
    return VisitorContext(
        visitor_id=log.visitor_ids[visitor],
        events=events[-recent:],
        cart=cart,
        purchases=purchases,
        now=now,
        purchase_log=[e for e in events if e.event in PURCHASE_LOG_EVENTS],
    )


def _batch_size(n_items: int, features: int = N_FEATURES, budget: int = 40_000_000) -> int:
    return max(1, budget // max(1, n_items * features))


def _validation_split(
    log: EventLog, cfg: StageModelConfig, rng: np.random.Generator
) -> tuple[EventLog, EventLog, float]:
    """(pre, validation, validation time) carved from the training log only."""
    end = float(log.ts.max()) + 1.0
    if cfg.validation == "holdout":
        pos = np.isin(log.event, positive_codes(cfg.positive))
        held = pos & (rng.random(log.n_events) < cfg.validation_fraction)
        return log.take(~held), log.take(held), end
    if cfg.validation != "time":
        raise ValueError(f"validation must be 'time' or 'holdout', got {cfg.validation!r}")
    start = float(log.ts.min())
    at = end - cfg.validation_fraction * (end - start)
    return log.take(log.ts < at), log.take(log.ts >= at), at


def fit_stage_model(
    log: EventLog, cfg: StageModelConfig, progress: Callable[[str], None] | None = None
) -> FittedStageModel:
    """Fit the stage-aware model on ``log`` (all of it is training data).

    1. carve a validation window from ``log``; fit LightFM and the item tables on the part before it;
    2. fit the per-stage blend on validation visitors' (relevant, non-relevant) pairs;
    3. continue LightFM over the whole log (``warm_epochs``) and refit the tables on all of it.
    """
    say = progress or (lambda _m: None)
    rng = np.random.default_rng(cfg.seed)
    f = _Fitter(log, cfg, say)
    pre, val, at = _validation_split(log, cfg, rng)
    say(f"factorisation on {pre.n_events:,} events before the validation window")
    f.train(pre, cfg.factors.epochs)
    tables = _with_baskets(
        fit_item_tables(pre, at, cfg.weights, cfg.positive, neighbours=cfg.neighbours), pre, at, cfg
    )
    blend_w = _fit_blend(f, pre, val, at, tables, cfg, rng, say)
    say(f"warm start over all {log.n_events:,} events")
    f.train(log, cfg.factors.warm_epochs)
    end = float(log.ts.max()) + 1.0
    tables = _with_baskets(
        fit_item_tables(log, end, cfg.weights, cfg.positive, neighbours=cfg.neighbours), log, end, cfg
    )
    return FittedStageModel(
        scorer=f.scorer(tables, blend_w.matrix()),
        item_vocab=f.item_vocab,
        user_vocab=f.user_vocab,
        price_edges=f.price_edges,
        blend=blend_w,
        config=cfg,
        trained_until=end,
        context=f.context,
    )


def _with_baskets(tables: ItemTables, log: EventLog, now: float, cfg: StageModelConfig) -> ItemTables:
    """``tables`` with every visitor's ``basket_frequency`` at ``now`` (from ``log``'s purchases before it)
    as the basket-neighbours pool, rows by visitor index (the user vocabulary's order)."""
    pool = profiles_from_log(log, np.arange(log.n_visitors), now, cfg.weights, cfg.serving.basket_params)
    return replace(tables, visitor_baskets=pool.basket_frequency)


def _fit_blend(
    f: _Fitter,
    pre: EventLog,
    val: EventLog,
    at: float,
    tables: ItemTables,
    cfg: StageModelConfig,
    rng: np.random.Generator,
    say: Callable[[str], None],
) -> BlendWeights:
    log = f.log
    pos = (
        np.isin(val.event, positive_codes(cfg.positive))
        & tables.known[val.item]
        & product_mask(log)[val.item]
    )
    visitors = np.unique(val.visitor[pos])
    if len(visitors) > cfg.max_validation_visitors:
        visitors = np.sort(rng.choice(visitors, cfg.max_validation_visitors, replace=False))
    if len(visitors) == 0:
        since = dt.datetime.fromtimestamp(at, dt.UTC).isoformat(timespec="seconds")
        frac = f"{cfg.validation_fraction:.0%}"
        where = (
            f"the validation window (the last {frac} of the training period, from {since})"
            if cfg.validation == "time"
            else f"the held-out {frac} of positive events"
        )
        positives = ", ".join(sorted(e.value for e in cfg.positive))
        raise EmptyDatasetError(
            f"too little data to fit the blend: {where} has no visitor with a positive event "
            f"({positives}) on a product seen before it; train on a longer history"
        )
    say(f"fitting the blend on {len(visitors):,} validation visitors")
    row_of = np.full(log.n_visitors, -1, np.int64)
    row_of[visitors] = np.arange(len(visitors))
    keep = pos & (row_of[val.visitor] >= 0)
    relevant = sp.csr_matrix(
        (np.ones(int(keep.sum()), np.float32), (row_of[val.visitor[keep]], val.item[keep])),
        shape=(len(visitors), log.n_items),
    )
    relevant.data[:] = 1.0
    stage_all, _ = stages_at(pre, at, cfg.rules)
    known_v = np.zeros(log.n_visitors, bool)
    known_v[np.unique(pre.visitor)] = True
    scorer = f.scorer(tables, np.zeros((N_STAGES, N_FEATURES), np.float32))
    allowed = product_mask(log) & tables.known
    parts: list[ListSample] = []
    stages: list[np.ndarray] = []
    bs = _batch_size(log.n_items)
    for lo in range(0, len(visitors), bs):
        vb = visitors[lo : lo + bs]
        prof = profiles_from_log(pre, vb, at, cfg.weights, cfg.serving.basket_params)
        st = stage_all[vb]
        uf = user_rows_for(f.user_index, len(f.user_vocab.names), log, vb, st, f.context, known_v)
        fs = scorer.factor_scores(scorer.factors.user_representations(uf))
        feats = np.zeros((len(vb), log.n_items, N_FEATURES), np.float32)
        for j, x in feature_arrays(tables, prof, fs, cfg.serving, vb.astype(np.int64)):
            feats[:, :, j] = x
        ok = np.broadcast_to(allowed, (len(vb), log.n_items)).copy()
        if cfg.exclude_seen:
            ok &= ~(prof.seen().toarray() > 0)
        # what retention will never serve is neither a positive nor a negative of its fit
        ok &= ~substitutes_kept_out(tables, prof, st == Stage.RETENTION.index, cfg.serving).toarray()
        rel = relevant[lo : lo + bs].multiply(ok).tocsr()
        rel.eliminate_zeros()
        # the visitor's own candidates: negatives are drawn from them and from the rest separately
        personal = (feats[:, :, list(SPARSE_COLUMNS)] != 0).any(axis=2)
        part = sample_lists(feats, rel, ok, rng, personal=personal)
        parts.append(part)
        stages.append(st[part.row[part.owner]])  # the stage of the visitor behind each positive
    return fit_blend(ListSample.concat(parts), np.concatenate(stages).astype(np.int8))


class StageAwareRanker:
    """The stage-aware model as an offline ``Ranker``."""

    name = "stage_aware"

    def __init__(self, cfg: StageModelConfig, progress: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.progress = progress
        self.fitted: FittedStageModel | None = None
        self.train: EventLog | None = None

    def fit(self, train: EventLog) -> None:
        self.train = train
        self.fitted = fit_stage_model(train, self.cfg, self.progress)

    def _scored(
        self, visitors: np.ndarray, now: float, exclude_seen: bool
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """Per batch of ``visitors``: (float32 [b, n_items] blended scores, int8 [b, n_items] dominant
        feature, bool [b, n_items] what may be recommended, int8 [b] stage at ``now``)."""
        if self.fitted is None or self.train is None:
            raise RuntimeError("fit() first")
        log, fm = self.train, self.fitted
        stage_all, _ = stages_at(log, now, self.cfg.rules)
        known_v = np.zeros(log.n_visitors, bool)
        known_v[np.unique(log.visitor)] = True
        allowed = product_mask(log) & fm.scorer.tables.known
        vocab_index = fm.user_vocab.index()
        bs = _batch_size(log.n_items, features=3)
        for lo in range(0, len(visitors), bs):
            vb = visitors[lo : lo + bs]
            prof = profiles_from_log(log, vb, now, self.cfg.weights, self.cfg.serving.basket_params)
            st = stage_all[vb]
            uf = user_rows_for(vocab_index, len(fm.user_vocab.names), log, vb, st, fm.context, known_v)
            scores, dominant = fm.scorer.score(prof, st, uf, own_rows=self.pool_rows(vb))
            # as the service: retention never serves the substitutes of a fresh one-off purchase
            kept_out = substitutes_kept_out(
                fm.scorer.tables, prof, st == Stage.RETENTION.index, fm.scorer.rules
            )
            ok = np.broadcast_to(allowed, scores.shape) & ~kept_out.toarray()
            if exclude_seen:
                ok = ok & ~(prof.seen().toarray() > 0)
            yield scores, dominant, ok, st

    def pool_rows(self, visitors: np.ndarray) -> np.ndarray:
        """int64 [u]: each of ``visitors``' (int [u] indices of the training log) row in the model's basket
        pool (``ItemTables.visitor_baskets``), never their own neighbour: the pool's rows are the training
        log's visitors."""
        return np.asarray(visitors, np.int64)

    def recommend(self, visitors: np.ndarray, now: float, k: int, exclude_seen: bool) -> np.ndarray:
        out = [top_k(scores, k, ok) for scores, _, ok, _ in self._scored(visitors, now, exclude_seen)]
        return np.concatenate(out) if out else np.zeros((0, k), np.int32)

    def fitted_blend(self) -> BlendWeights:
        """The blend weights per stage that ``fit`` learned."""
        if self.fitted is None:
            raise RuntimeError("fit() first")
        return self.fitted.blend

    def explain_lists(
        self, visitors: np.ndarray, now: float, k: int, exclude_seen: bool
    ) -> list[list[RecommendedItem]]:
        """The top ``k`` of ``recommend`` for each of ``visitors`` (int32 [u]) with each item's score,
        source (the blend feature that added most to its score) and reason, explained as the service
        explains a list (``models.explain``) from the visitor's training events up to ``now``."""
        if self.fitted is None or self.train is None:
            raise RuntimeError("fit() first")
        log, fm = self.train, self.fitted
        catalog = CatalogColumns.build(log.catalog)
        out: list[list[RecommendedItem]] = []
        done = 0
        for scores, dominant, ok, st in self._scored(visitors, now, exclude_seen):
            top = top_k(scores, k, ok)
            for r in range(len(top)):
                idx = top[r][top[r] >= 0].astype(np.int64)
                sources = [FEATURE_SOURCES[f] for f in dominant[r, idx]]
                ctx = visitor_context(log, int(visitors[done + r]), now)
                stage = STAGES[int(st[r])]
                rows = catalog.event_rows(ctx.events)
                older = older_purchases(ctx)
                items = explain(
                    catalog, fm.scorer.tables, idx, scores[r, idx], sources, ctx, stage, None, rows, older
                )
                out.append(items)
            done += len(top)
        return out

    def score_items(self, visitors: np.ndarray, now: float, items: np.ndarray) -> np.ndarray:
        """float32 [u, c] factor scores of ``items`` (int64 [c]) for ``visitors`` (int32 [u]), the items
        represented from their features alone (``features.represent_items``: no identity feature), as
        the service represents an item the model never learned. (Among items without training events
        every other blend feature is zero, so this score orders them as the blend does.)"""
        if self.fitted is None or self.train is None:
            raise RuntimeError("fit() first")
        log, fm = self.train, self.fitted
        rep = represent_items(
            fm.scorer.factors, fm.item_vocab, fm.price_edges, [log.catalog[i] for i in items]
        )
        stage_all, _ = stages_at(log, now, self.cfg.rules)
        known_v = np.zeros(log.n_visitors, bool)
        known_v[np.unique(log.visitor)] = True
        vocab_index = fm.user_vocab.index()
        uf = user_rows_for(
            vocab_index, len(fm.user_vocab.names), log, visitors, stage_all[visitors], fm.context, known_v
        )
        user = fm.scorer.factors.user_representations(uf)
        return np.asarray(user @ rep.embedding.T + rep.bias[None, :], np.float32)


__all__ = ["FittedStageModel", "Stage", "StageAwareRanker", "StageModelConfig", "fit_stage_model"]
