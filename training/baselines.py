"""Strong baselines, each an offline ``Ranker`` over the same candidate items as the stage-aware model
(products that occur in the training events)."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from models.dataset import EventLog
from models.domain import EventType
from models.profiles import Profiles, profiles_from_log
from models.scoring import top_k
from models.sources import ItemTables, buy_again_scores, fit_item_tables, similar_scores
from models.tifu import TIFU_DEFAULTS, TifuParams, basket_keys, predict, row_normalised, user_vectors
from models.weights import EventWeights, positive_codes
from training.factorization import FactorParams, interaction_matrices, new_model, train_epochs
from training.stage_model import product_mask

_BATCH_BUDGET = 30_000_000


class _TableRanker:
    """Shared machinery: fit item tables at the end of training, score visitors in batches."""

    name = "base"

    def __init__(self, weights: EventWeights, positive: frozenset[EventType]) -> None:
        self.weights, self.positive = weights, positive
        self.train: EventLog | None = None
        self.tables: ItemTables | None = None

    def fit(self, train: EventLog) -> None:
        self.train = train
        self.tables = fit_item_tables(train, float(train.ts.max()) + 1.0, self.weights, self.positive)

    def scores(self, tables: ItemTables, profiles: Profiles) -> np.ndarray:
        raise NotImplementedError

    def batch_scores(self, visitors: np.ndarray, tables: ItemTables, profiles: Profiles) -> np.ndarray:
        """float32 [u, n_items] for ``visitors`` (int32 [u]) whose ``profiles`` are given; by default
        ``scores``, which needs the profiles only."""
        del visitors
        return self.scores(tables, profiles)

    def recommend(self, visitors: np.ndarray, now: float, k: int, exclude_seen: bool) -> np.ndarray:
        if self.train is None or self.tables is None:
            raise RuntimeError("fit() first")
        allowed = product_mask(self.train) & self.tables.known
        bs = max(1, _BATCH_BUDGET // max(1, self.train.n_items * 3))
        out = []
        for lo in range(0, len(visitors), bs):
            vb = visitors[lo : lo + bs]
            prof = profiles_from_log(self.train, vb, now, self.weights)
            s = self.batch_scores(vb, self.tables, prof)
            ok = np.broadcast_to(allowed, s.shape)
            if exclude_seen:
                ok = ok & ~(prof.seen().toarray() > 0)
            out.append(top_k(s, k, ok))
        return np.concatenate(out) if out else np.zeros((0, k), np.int32)


def _broadcast(v: np.ndarray, u: int) -> np.ndarray:
    return np.broadcast_to(v.astype(np.float32), (u, len(v)))


class PopularityRanker(_TableRanker):
    """Most visitors with a positive event, over the whole training period."""

    name = "popularity"

    def scores(self, tables: ItemTables, profiles: Profiles) -> np.ndarray:
        return _broadcast(tables.popularity, profiles.n_visitors)


class TrendingRanker(_TableRanker):
    """Positive events in the last two weeks before the split, decayed by age; popularity breaks ties."""

    name = "trending"

    def scores(self, tables: ItemTables, profiles: Profiles) -> np.ndarray:
        pop = tables.popularity / (tables.popularity.max() + 1.0)
        return _broadcast(tables.trending + 1e-3 * pop, profiles.n_visitors)


class BuyAgainRanker(_TableRanker):
    """The visitor's own past purchases by count, ties by popularity, filled with popularity."""

    name = "buy_again"

    def scores(self, tables: ItemTables, profiles: Profiles) -> np.ndarray:
        own = buy_again_scores(tables, profiles)
        # owned items score >= 1; popularity filler stays below 1
        filler = tables.popularity / (tables.popularity.max() + 1.0)
        return np.where(own > 0, own + 1.0, filler[None, :]).astype(np.float32)


class ItemKnnRanker(_TableRanker):
    """Item-based kNN: cosine neighbours of the items the visitor interacted with; popularity fills."""

    name = "item_knn"

    def scores(self, tables: ItemTables, profiles: Profiles) -> np.ndarray:
        s = similar_scores(tables, profiles)
        filler = tables.popularity / (tables.popularity.max() + 1.0)
        return (s + 1e-3 * filler[None, :]).astype(np.float32)


class TifuKnnRanker(_TableRanker):
    """TIFU-KNN (Hu et al., SIGIR 2020; ``models.tifu``) over the visitors' baskets of positive events (the
    evaluation's relevance: purchases on retail data), baskets by session, else by day; the visitors
    without any such basket get popularity, as in ``buy_again``, which also fills lists."""

    name = "tifu_knn"

    def __init__(
        self, weights: EventWeights, positive: frozenset[EventType], params: TifuParams = TIFU_DEFAULTS
    ) -> None:
        super().__init__(weights, positive)
        self.params = params
        self.vectors = sp.csr_matrix((0, 0), dtype=np.float32)
        self.normed = self.vectors

    def fit(self, train: EventLog) -> None:
        super().fit(train)
        pos = np.isin(train.event, positive_codes(self.positive))
        v, ts = train.visitor[pos], train.ts[pos]
        self.vectors = user_vectors(
            v,
            train.item[pos],
            basket_keys(v, train.session[pos], ts),
            ts,
            n_visitors=train.n_visitors,
            n_items=train.n_items,
            params=self.params,
        )
        self.normed = row_normalised(self.vectors)

    def batch_scores(self, visitors: np.ndarray, tables: ItemTables, profiles: Profiles) -> np.ndarray:
        del profiles
        own = predict(self.vectors, visitors, self.params, self.normed).toarray()
        # TIFU scores lie in (0, 1]: shifted to >= 1 above the popularity filler, which stays below 1
        filler = tables.popularity / (tables.popularity.max() + 1.0)
        return np.where(own > 0, own + 1.0, filler[None, :]).astype(np.float32)


class PlainLightFMRanker:
    """LightFM with identity features only (no stage, no context, no blend), same hyperparameters and
    the same interaction weights as the stage-aware model."""

    name = "lightfm"

    def __init__(self, params: FactorParams, weights: EventWeights, *, seed: int, threads: int) -> None:
        self.params, self.weights, self.seed, self.threads = params, weights, seed, threads
        self.train: EventLog | None = None
        self.user_repr = np.zeros((0, 0), np.float32)
        self.item_repr = np.zeros((0, 0), np.float32)
        self.item_bias = np.zeros(0, np.float32)
        self.allowed = np.zeros(0, bool)

    def fit(self, train: EventLog) -> None:
        self.train = train
        x, w = interaction_matrices(
            train.visitor,
            train.item,
            self.weights.of(train.event),
            (train.n_visitors, train.n_items),
            self.params.max_weight,
        )
        model = new_model(self.params, self.seed)
        train_epochs(model, x, w, epochs=self.params.epochs + self.params.warm_epochs, threads=self.threads)
        self.user_repr = np.asarray(model.user_embeddings, np.float32)
        self.item_repr = np.asarray(model.item_embeddings, np.float32)
        self.item_bias = np.asarray(model.item_biases, np.float32)
        known = np.zeros(train.n_items, bool)
        known[np.unique(train.item)] = True
        self.allowed = product_mask(train) & known

    def recommend(self, visitors: np.ndarray, now: float, k: int, exclude_seen: bool) -> np.ndarray:
        if self.train is None:
            raise RuntimeError("fit() first")
        bs = max(1, _BATCH_BUDGET // max(1, self.train.n_items * 3))
        seen_all: sp.csr_matrix | None = None
        if exclude_seen:
            keep = self.train.ts < now
            seen_all = sp.csr_matrix(
                (np.ones(int(keep.sum()), np.float32), (self.train.visitor[keep], self.train.item[keep])),
                shape=(self.train.n_visitors, self.train.n_items),
            )
        out = []
        for lo in range(0, len(visitors), bs):
            vb = visitors[lo : lo + bs]
            s = self.user_repr[vb] @ self.item_repr.T + self.item_bias[None, :]
            ok = np.broadcast_to(self.allowed, s.shape)
            if seen_all is not None:
                ok = ok & ~(seen_all[vb].toarray() > 0)
            out.append(top_k(s, k, ok))
        return np.concatenate(out) if out else np.zeros((0, k), np.int32)

    def score_items(self, visitors: np.ndarray, now: float, items: np.ndarray) -> np.ndarray:  # noqa: ARG002
        """float32 [u, c] scores of ``items`` (int64 [c]) for ``visitors`` (int32 [u]) from the learned
        identity embeddings (an item without training events keeps what initialisation and negative
        sampling gave it)."""
        if self.train is None:
            raise RuntimeError("fit() first")
        s = self.user_repr[visitors] @ self.item_repr[items].T + self.item_bias[items][None, :]
        return np.asarray(s, np.float32)
