"""Scoring with a fitted stage-aware model: shared by offline evaluation and the online service.

``StageScorer.score`` turns profiles + stages + user feature rows into blended scores over every item;
``top_k`` does the masked partial sort. Everything is batched over visitors and vectorised over items.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from models.blend import N_FEATURES, blend, feature_arrays
from models.factors import FactorModel
from models.profiles import Profiles
from models.sources import ItemTables


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """int32 [u, k] indices of the highest scores per row, best first; -1 where fewer than k allowed.

    scores float32 [u, n]; allowed bool [u, n] or [n] (False = never recommend).
    """
    s = scores.astype(np.float32, copy=True)
    if allowed is not None:
        s[~np.broadcast_to(allowed, s.shape)] = -np.inf
    n = s.shape[1]
    kk = min(k, n)
    part = np.argpartition(-s, kk - 1, axis=1)[:, :kk] if kk < n else np.tile(np.arange(n), (len(s), 1))
    vals = np.take_along_axis(s, part, axis=1)
    order = np.argsort(-vals, axis=1, kind="stable")
    idx = np.take_along_axis(part, order, axis=1).astype(np.int32)
    idx[~np.isfinite(np.take_along_axis(vals, order, axis=1))] = -1
    if kk < k:
        idx = np.pad(idx, ((0, 0), (0, k - kk)), constant_values=-1)
    return idx


@dataclass
class StageScorer:
    """A fitted model ready to score.

    factors       feature-level LightFM parameters
    tables        item-level source statistics
    blend_weights float32 [n_stages, n_features]
    """

    factors: FactorModel
    tables: ItemTables
    blend_weights: np.ndarray
    item_bias: np.ndarray = field(init=False)
    item_repr: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        if self.blend_weights.shape[1] != N_FEATURES:
            raise ValueError(
                f"blend weights have {self.blend_weights.shape[1]} features, expected {N_FEATURES}"
            )
        # precomputed once per model load: scoring a visitor is then one GEMV
        self.item_bias, self.item_repr = self.factors.item_representations()

    @property
    def n_items(self) -> int:
        return int(self.item_repr.shape[0])

    def factor_scores(self, user_repr: np.ndarray) -> np.ndarray:
        """float32 [u, n_items] = user_repr [u, d] @ item_repr.T + item_bias."""
        return user_repr @ self.item_repr.T + self.item_bias[None, :]

    def score(
        self,
        profiles: Profiles,
        stages: np.ndarray,
        user_features: sp.csr_matrix,
        extra_repr: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Blended scores for ``u`` visitors.

        stages int8 [u] Stage.index; user_features csr [u, n_user_features]; extra_repr float32 [u, d] added
        to the user representation (e.g. the mean embedding of items viewed in the live session).
        Returns (float32 [u, n_items] score, int8 [u, n_items] index of the dominant feature).
        """
        rep = self.factors.user_representations(user_features)
        if extra_repr is not None:
            rep = rep + extra_repr
        fs = self.factor_scores(rep)
        w = self.blend_weights[stages.astype(np.int64)]
        return blend(w, feature_arrays(self.tables, profiles, fs), profiles.n_visitors, self.n_items)
