"""Scoring with a fitted stage-aware model: shared by offline evaluation and the online service.

``StageScorer.score`` turns profiles + stages + user feature rows into blended scores over every item;
``top_k`` does the masked partial sort. Everything is batched over visitors and vectorised over items.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from models.blend import (
    LIGHTFM,
    LIGHTFM_NEW,
    N_FEATURES,
    POPULARITY,
    POPULARITY_NEW,
    TRENDING,
    blend,
    crowd_scores,
    feature_arrays,
)
from models.factors import ZSCORE_CLIP, FactorModel
from models.live_profile import Entry
from models.profiles import Profiles
from models.serving_rules import DEFAULT_SERVING, ServingRules
from models.sources import ItemTables

#: one visitor's user features: (columns int64 [f], weights float32 [f])
UserRow = tuple[np.ndarray, np.ndarray]


def top_k(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """int32 [u, k] indices of the highest scores per row, best first; -1 where fewer than k allowed.

    scores float32 [u, n]; allowed bool [u, n] or [n] (False = never recommend).
    """
    if scores.shape[0] == 1 and (allowed is None or allowed.ndim == 1 or allowed.shape[0] == 1):
        return top_k_one(scores[0], k, None if allowed is None else allowed.reshape(-1))[None, :]
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


def top_k_one(scores: np.ndarray, k: int, allowed: np.ndarray | None = None) -> np.ndarray:
    """``top_k`` for one row (the request path): scores float32 [n], allowed bool [n] -> int32 [k]."""
    n = len(scores)
    neg = np.negative(scores, dtype=np.float32)
    if allowed is not None:
        neg[~allowed] = np.inf
    kk = min(k, n)
    part = np.argpartition(neg, kk - 1)[:kk] if kk < n else np.arange(n)
    vals = neg[part]
    order = np.argsort(vals, kind="stable")
    idx = part[order].astype(np.int32)
    idx[~np.isfinite(vals[order])] = -1
    if kk < k:
        idx = np.concatenate([idx, np.full(k - kk, -1, np.int32)])
    return idx


@dataclass
class StageScorer:
    """A fitted model ready to score.

    factors       feature-level LightFM parameters
    tables        item-level source statistics
    blend_weights float32 [n_stages, n_features]
    rules         the blend features' recency windows (the model's ``ServingRules``)
    """

    factors: FactorModel
    tables: ItemTables
    blend_weights: np.ndarray
    rules: ServingRules = DEFAULT_SERVING
    item_bias: np.ndarray = field(init=False)
    item_repr: np.ndarray = field(init=False)
    popularity: np.ndarray = field(init=False)
    trending: np.ndarray = field(init=False)
    crowd: np.ndarray = field(init=False)
    moments: tuple[np.ndarray, np.ndarray] = field(init=False)

    def __post_init__(self) -> None:
        if self.blend_weights.shape[1] != N_FEATURES:
            raise ValueError(
                f"blend weights have {self.blend_weights.shape[1]} features, expected {N_FEATURES}"
            )
        # precomputed once per model load: scoring a visitor is then one GEMV
        self.item_bias, self.item_repr = self.factors.item_representations()
        # the crowd part of every stage's score is the same for every visitor: float32 [n_stages, n_items]
        self.popularity, self.trending = crowd_scores(self.tables)
        w = self.blend_weights
        self.crowd = (w[:, POPULARITY, None] * self.popularity + w[:, TRENDING, None] * self.trending).astype(
            np.float32
        )
        # first and second moments of [item_repr, item_bias] (float64 [d+1], [d+1, d+1]): the mean and the
        # standard deviation of one visitor's factor scores over all items then cost O(d^2), not two passes
        a = np.hstack([self.item_repr, self.item_bias[:, None]]).astype(np.float64)
        self.moments = (a.mean(axis=0), a.T @ a / max(len(a), 1))
        # the basket-neighbours pool by item, built here (model load, off the request path), not on the
        # first request that needs it
        _ = self.tables.visitor_basket_index

    @property
    def n_items(self) -> int:
        return int(self.item_repr.shape[0])

    def with_new_items(self, features: sp.csr_matrix) -> StageScorer:
        """A scorer over the items plus m new ones described by ``features`` (csr [m, n_item_features],
        e.g. ``features.feature_rows(...).rows``: no identity feature), appended as rows ``n_items``
        onwards. Their representations come from the feature embeddings, their table rows are empty
        (``ItemTables.with_new_items``), so they are scored by their factor score alone until a model
        learns them from events. This scorer is unchanged: build the new one off the request path and
        swap it in whole."""
        return StageScorer(
            self.factors.with_item_rows(features),
            self.tables.with_new_items(features.shape[0]),
            self.blend_weights,
            self.rules,
        )

    def factor_scores(self, user_repr: np.ndarray) -> np.ndarray:
        """float32 [u, n_items] = user_repr [u, d] @ item_repr.T + item_bias."""
        return user_repr @ self.item_repr.T + self.item_bias[None, :]

    def score(
        self,
        profiles: Profiles,
        stages: np.ndarray,
        user_features: sp.csr_matrix,
        extra_repr: np.ndarray | None = None,
        own_rows: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Blended scores for ``u`` visitors.

        stages int8 [u] Stage.index; user_features csr [u, n_user_features]; extra_repr float32 [u, d] added
        to the user representation (e.g. the mean embedding of items viewed in the live session); own_rows
        int64 [u] each visitor's row among the model's visitors (-1: none; ``blend.sparse_features``).
        Returns (float32 [u, n_items] score, int8 [u, n_items] index of the dominant feature).
        """
        rep = self.factors.user_representations(user_features)
        if extra_repr is not None:
            rep = rep + extra_repr
        fs = self.factor_scores(rep)
        w = self.blend_weights[stages.astype(np.int64)]
        return blend(
            w,
            feature_arrays(self.tables, profiles, fs, self.rules, own_rows),
            profiles.n_visitors,
            self.n_items,
        )

    def raw_scores(self, user_repr: np.ndarray, user_row: UserRow) -> np.ndarray:  # noqa: ARG002
        """float32 [n_items] factor scores of one visitor: one GEMV over the precomputed item
        representations. (``user_row`` is unused here; the benchmark's naive twin needs it.)"""
        raw = self.item_repr @ user_repr
        raw += self.item_bias
        return raw

    def visitor_repr(self, user_row: UserRow, extra_repr: np.ndarray | None = None) -> np.ndarray:
        """float32 [d]: one visitor's representation from their user features (columns int64 [f], weights
        float32 [f], as ``features.user_feature_row`` gives them), plus ``extra_repr`` float32 [d] or
        [1, d] when given (as in ``score``)."""
        cols, vals = user_row
        # a weighted sum of a few embedding rows (cheaper than a sparse product)
        rep = vals @ self.factors.user_emb[cols] if len(cols) else np.zeros(self.factors.user_emb.shape[1])
        if extra_repr is not None:
            rep = rep + np.asarray(extra_repr, np.float32).reshape(-1)
        return np.asarray(rep, np.float32)

    def score_items(
        self,
        items: np.ndarray | None,
        rep: np.ndarray,
        user_row: UserRow,
        stage: int,
        features: list[Entry],
        new: bool,
        raw: np.ndarray | None = None,
    ) -> ItemScores:
        """One visitor's blended scores (as ``score`` gives them) for ``items`` only.

        items int64 [c] sorted distinct catalog rows, or None for every item; rep float32 [d] from
        ``visitor_repr`` (of ``user_row``); features the visitor's sparse features
        (``LiveProfile.features``); new: the visitor has no history; raw float32 [c]: the items' factor
        scores when the caller has them already. The factor scores are standardised with the mean and
        deviation over *all* items (from the precomputed moments), so a candidate's score does not depend
        on the candidate set.
        """
        if items is None:
            raw = self.raw_scores(rep, user_row)
            score = self.crowd[stage].copy()
            items = np.arange(self.n_items, dtype=np.int64)
        else:
            if raw is None:
                raw = self.item_repr[items] @ rep
                raw += self.item_bias[items]
            score = self.crowd[stage][items]
        v = np.append(rep.astype(np.float64), 1.0)
        mean, second = self.moments
        mu = float(mean @ v)
        sd = max(float(np.sqrt(max(v @ second @ v - mu * mu, 0.0))), 1e-6)
        z = raw - np.float32(mu)
        z *= np.float32(1.0 / sd)
        np.clip(z, -ZSCORE_CLIP, ZSCORE_CLIP, out=z)
        w = self.blend_weights[stage]
        if new:
            score += w[POPULARITY_NEW] * self.popularity[items]
            score += w[LIGHTFM_NEW] * z
        else:
            score += w[LIGHTFM] * z
        sparse = _SparseContributions.empty()
        if features:  # every sparse feature at once: one search, one scatter-add
            idx = np.concatenate([f[1] for f in features])
            contrib = np.concatenate([w[j] * vals for j, _, vals in features])
            column = np.repeat(np.array([j for j, _, _ in features]), [len(f[1]) for f in features])
            pos, hit = positions_in(items, idx)
            sparse = _SparseContributions(pos[hit], contrib[hit], column[hit])
            score += np.bincount(sparse.position, weights=sparse.value, minlength=len(items)).astype(
                np.float32
            )
        return ItemScores(items, score, z, new, sparse, w, self)


def positions_in(sorted_items: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [m] position of each of ``idx`` in ``sorted_items``, bool [m] whether it is there): the
    binary search every candidate-set lookup of the request path goes through."""
    if len(sorted_items) == 0:
        return np.zeros(len(idx), np.int64), np.zeros(len(idx), bool)
    pos = np.minimum(np.searchsorted(sorted_items, idx), len(sorted_items) - 1)
    return pos, sorted_items[pos] == idx


@dataclass(frozen=True)
class _SparseContributions:
    """The sparse features' share of the scores: entry e adds ``value[e]`` (weight x feature value) to the
    item at ``position[e]`` (int64, into ``ItemScores.items``) through feature column ``column[e]``."""

    position: np.ndarray
    value: np.ndarray
    column: np.ndarray

    @classmethod
    def empty(cls) -> _SparseContributions:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64))


@dataclass(frozen=True)
class ItemScores:
    """One visitor's blended scores over a set of items and what is needed to explain any of them.

    items int64 [c] sorted catalog rows; score float32 [c]; z float32 [c] the standardised factor scores;
    sparse the sparse features' contributions; weights float32 [n_features] of the stage.
    """

    items: np.ndarray
    score: np.ndarray
    z: np.ndarray
    new: bool
    sparse: _SparseContributions
    weights: np.ndarray
    scorer: StageScorer

    def dominant_feature(self, positions: np.ndarray) -> np.ndarray:
        """int64 [k]: for each of ``positions`` (int [k] into ``items``), the feature that added most to its
        score, as ``blend.blend`` reports it: only a feature that raised the score (so one with a value
        for the item) can be the one, and an item no feature raised is the factor model's pick (LIGHTFM).
        A feature the visitor has no value for ("bought before" without a purchase, "trending" without
        a trend) never explains an item."""
        w, k = self.weights, len(positions)
        rows = self.items[positions]
        pop, trending = self.scorer.popularity[rows], self.scorer.trending[rows]
        contrib = np.zeros((k, N_FEATURES), np.float32)
        if self.new:
            contrib[:, POPULARITY_NEW] = w[POPULARITY_NEW] * pop
            contrib[:, LIGHTFM_NEW] = w[LIGHTFM_NEW] * self.z[positions]
        else:
            contrib[:, LIGHTFM] = w[LIGHTFM] * self.z[positions]
        contrib[:, POPULARITY] = w[POPULARITY] * pop
        contrib[:, TRENDING] = w[TRENDING] * trending
        entries = self.sparse
        if k and len(entries.position):
            # the sparse entries that land on the asked items (each item has at most one per feature)
            order = np.argsort(positions)
            at, hit = positions_in(np.asarray(positions)[order], entries.position)
            contrib[order[at[hit]], entries.column[hit]] = entries.value[hit]
        contrib[contrib <= 0] = -np.inf
        return np.where(np.isfinite(contrib).any(axis=1), contrib.argmax(axis=1), LIGHTFM)
