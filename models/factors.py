"""Serving maths of the hybrid factorisation model, as plain arrays (no LightFM at serving time).

LightFM scores ``user_repr · item_repr + item_bias (+ user_bias)``, where a representation is the
feature-weighted sum of feature embeddings. We keep the feature embeddings and precompute item
representations once, so scoring one visitor against every item is one GEMV.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp


@dataclass(frozen=True)
class FactorModel:
    """Feature-level parameters.

    user_emb   float32 [n_user_features, d]     user_bias  float32 [n_user_features]
    item_emb   float32 [n_item_features, d]     item_bias  float32 [n_item_features]
    item_features  csr float32 [n_items, n_item_features]
    """

    user_emb: np.ndarray
    user_bias: np.ndarray
    item_emb: np.ndarray
    item_bias: np.ndarray
    item_features: sp.csr_matrix

    def item_representations(self) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [n_items] biases, float32 C-contiguous [n_items, d] embeddings)."""
        emb = np.ascontiguousarray(self.item_features @ self.item_emb, dtype=np.float32)
        bias = np.asarray(self.item_features @ self.item_bias, dtype=np.float32).ravel()
        return bias, emb

    def represent(self, features: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
        """(float32 [m] biases, float32 C-contiguous [m, d] embeddings) of item feature rows csr [m,
        n_item_features] (e.g. ``features.feature_rows``): what ``item_representations`` gives an item
        with that row."""
        emb = np.ascontiguousarray(features @ self.item_emb, dtype=np.float32)
        bias = np.asarray(features @ self.item_bias, dtype=np.float32).ravel()
        return bias, emb

    def with_item_rows(self, features: sp.csr_matrix) -> FactorModel:
        """The same parameters with ``features`` (csr [m, n_item_features]) appended as m new item rows."""
        if features.shape[1] != self.item_features.shape[1]:
            raise ValueError(
                f"item feature rows have {features.shape[1]} columns, the model {self.item_features.shape[1]}"
            )
        stacked = sp.vstack([self.item_features, features.astype(np.float32)], format="csr")
        return replace(self, item_features=stacked)

    def with_replaced_item_rows(self, items: np.ndarray, features: sp.csr_matrix) -> FactorModel:
        """The same parameters with the feature rows of ``items`` (int64 [m] distinct item rows) replaced by
        ``features`` (csr [m, n_item_features]), e.g. a trained item's row without its identity feature."""
        n = self.item_features.shape[0]
        keep = np.ones(n, np.float32)
        keep[items] = 0.0
        scatter = sp.csr_matrix(
            (np.ones(len(items), np.float32), (np.asarray(items, np.int64), np.arange(len(items)))),
            shape=(n, len(items)),
        )
        rows = sp.diags(keep, format="csr") @ self.item_features + scatter @ features.astype(np.float32)
        rows = sp.csr_matrix(rows, dtype=np.float32)
        rows.eliminate_zeros()
        return replace(self, item_features=rows)

    def user_representations(self, user_features: sp.csr_matrix) -> np.ndarray:
        """float32 [u, d] from csr [u, n_user_features]."""
        return np.asarray(user_features @ self.user_emb, dtype=np.float32)


ZSCORE_CLIP = 3.0


def zscore_rows(scores: np.ndarray, clip: float = ZSCORE_CLIP) -> np.ndarray:
    """float32 [u, n]: each row standardised (so blend weights do not depend on the embedding scale) and
    clipped to [-clip, clip]: factor scores have long tails, and a few extreme items must not outweigh
    every other source once multiplied by a blend weight."""
    mu = scores.mean(axis=1, keepdims=True)
    sd = scores.std(axis=1, keepdims=True)
    return np.clip((scores - mu) / np.maximum(sd, 1e-6), -clip, clip).astype(np.float32)
