"""A published model (``models.artifact.ModelBundle``) as an offline ``Ranker`` over another log's ids.

``journeyrec retrain`` scores the live model on the same held-out days as a candidate fitted on the events
before them. The live model was fitted on its own log, so its item-indexed arrays are re-indexed to the
evaluation log's catalog by item id: an item the live model never had is represented from its features
(no identity feature), as the service represents it, has empty table rows, is not ``known`` and so is never
recommended in the evaluation; visitors are matched by id through the model's user vocabulary (a
visitor it never saw gets no identity feature, as in the service).
"""

from __future__ import annotations

from dataclasses import replace

import msgspec
import numpy as np
import scipy.sparse as sp

from models.artifact import ModelBundle
from models.dataset import EventLog
from models.factors import FactorModel
from models.features import represent_items
from models.scoring import StageScorer
from models.sources import ItemTables
from training.stage_model import FittedStageModel, StageAwareRanker, StageModelConfig, visitor_context_tokens


def config_of(bundle: ModelBundle, fallback: StageModelConfig) -> StageModelConfig:
    """The live model's training configuration (its manifest's parameters), with the journey rules, event
    weights and serving rules it was published with; ``fallback`` when the parameters do not convert."""
    m = bundle.manifest
    try:
        cfg = msgspec.convert(m.parameters, StageModelConfig)
    except msgspec.ValidationError:
        cfg = fallback
    return msgspec.structs.replace(cfg, rules=m.rules, weights=m.weights, serving=m.serving)


def reindexed(bundle: ModelBundle, log: EventLog) -> tuple[FactorModel, ItemTables]:
    """The bundle's item features and item tables in ``log``'s catalog order (module docstring)."""
    pos = {c.item_id: i for i, c in enumerate(bundle.catalog)}
    idx = np.array([pos.get(c.item_id, -1) for c in log.catalog], np.int64)
    ok = idx >= 0
    n_model = len(bundle.catalog)
    pick = sp.csr_matrix(
        (np.ones(int(ok.sum()), np.float32), (np.flatnonzero(ok), idx[ok])), shape=(len(idx), n_model)
    )
    safe = np.maximum(idx, 0)

    def take(a: np.ndarray, fill: float | bool | int) -> np.ndarray:
        out = np.asarray(a)[safe] if n_model else np.full(len(idx), fill, np.asarray(a).dtype)
        out[~ok] = fill
        return out

    def take_opt(a: np.ndarray | None, fill: float | bool | int) -> np.ndarray | None:
        return None if a is None else take(a, fill)

    f = bundle.factors
    new = np.flatnonzero(~ok)
    # as the service represents items the model never had: from their features, no identity feature
    rows = represent_items(f, bundle.item_vocab, bundle.price_edges, [log.catalog[i] for i in new]).features
    place = sp.csr_matrix(
        (np.ones(len(new), np.float32), (new, np.arange(len(new)))), shape=(len(idx), len(new))
    )
    factors = FactorModel(
        user_emb=f.user_emb,
        user_bias=f.user_bias,
        item_emb=f.item_emb,
        item_bias=f.item_bias,
        item_features=(pick @ f.item_features + place @ rows.rows).tocsr().astype(np.float32),
    )
    t = bundle.tables
    tables = replace(
        t,
        popularity=take(t.popularity, 0.0),
        trending=take(t.trending, 0.0),
        repeat_rate=take(t.repeat_rate, 0.0),
        complements=(pick @ t.complements @ pick.T).tocsr().astype(np.float32),
        similar=(pick @ t.similar @ pick.T).tocsr().astype(np.float32),
        known=take(t.known, False),
        category=take_opt(t.category, -1),
        repeatable=take_opt(t.repeatable, False),
        # the pool keeps the model's visitors as its rows (``PublishedRanker.pool_rows`` finds them)
        visitor_baskets=None
        if t.visitor_baskets is None
        else (t.visitor_baskets @ pick.T).tocsr().astype(np.float32),
    )
    return factors, tables


class PublishedRanker(StageAwareRanker):
    """The live model as a ``Ranker``: ``fit`` learns nothing, it only re-indexes the model to ``train``'s
    ids; ``recommend`` is the stage-aware model's (``StageAwareRanker.recommend``)."""

    def __init__(self, bundle: ModelBundle, cfg: StageModelConfig, name: str = "live") -> None:
        super().__init__(config_of(bundle, cfg))
        self.bundle = bundle
        self.name = name
        self._pool_row = np.zeros(0, np.int64)

    def fit(self, train: EventLog) -> None:
        b = self.bundle
        factors, tables = reindexed(b, train)
        self.train = train
        self.fitted = FittedStageModel(
            scorer=StageScorer(factors, tables, b.blend_weights, b.manifest.serving),
            item_vocab=b.item_vocab,
            user_vocab=b.user_vocab,
            price_edges=b.price_edges,
            blend=b.manifest.blend,
            config=self.cfg,
            trained_until=b.manifest.trained_until,
            context=visitor_context_tokens(train),
        )
        # each of the log's visitors' row in the model's basket pool: the model's visitors come first in
        # its user vocabulary, in the pool's order (-1: a visitor the model never saw)
        index = b.user_vocab.index()
        n_pool = b.manifest.n_visitors
        rows = np.array([index.get(f"visitor:{v}", -1) for v in train.visitor_ids], np.int64)
        self._pool_row = np.where(rows < n_pool, rows, -1)

    def pool_rows(self, visitors: np.ndarray) -> np.ndarray:
        return self._pool_row[np.asarray(visitors, np.int64)]
