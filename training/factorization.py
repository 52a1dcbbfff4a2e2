"""Fitting LightFM (training only; serving uses ``models.factors`` arrays and never imports LightFM)."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import numpy as np
import scipy.sparse as sp
from lightfm import LightFM

from models.factors import FactorModel


class FactorParams(msgspec.Struct, frozen=True, kw_only=True):
    """LightFM hyperparameters shared by the stage-aware model and the plain LightFM baseline."""

    no_components: int = 48
    loss: str = "warp"
    learning_rate: float = 0.05
    item_alpha: float = 1e-6
    user_alpha: float = 1e-6
    max_sampled: int = 15
    epochs: int = 16
    # extra epochs over the full training data after the validation-window fit (warm start)
    warm_epochs: int = 4
    max_weight: float = 10.0


def interaction_matrices(
    rows: np.ndarray, items: np.ndarray, weights: np.ndarray, shape: tuple[int, int], max_weight: float
) -> tuple[sp.coo_matrix, sp.coo_matrix]:
    """(interactions, sample_weight) COO float32 of identical sparsity: 1 where the summed weight of a
    (row, item) pair is positive, and that weight (capped) as the sample weight. Non-positive pairs are
    dropped: WARP learns only from positives."""
    m = sp.csr_matrix((weights.astype(np.float32), (rows, items)), shape=shape)
    m.sum_duplicates()
    m.data = np.minimum(m.data, max_weight)
    m.data[m.data < 0] = 0
    m.eliminate_zeros()
    w = m.tocoo()
    x = sp.coo_matrix((np.ones_like(w.data), (w.row, w.col)), shape=shape)
    return x, w


def new_model(params: FactorParams, seed: int) -> LightFM:
    return LightFM(
        no_components=params.no_components,
        loss=params.loss,
        learning_rate=params.learning_rate,
        item_alpha=params.item_alpha,
        user_alpha=params.user_alpha,
        max_sampled=params.max_sampled,
        random_state=np.random.RandomState(seed),
    )


def train_epochs(
    model: LightFM,
    interactions: sp.coo_matrix,
    sample_weight: sp.coo_matrix,
    *,
    epochs: int,
    threads: int,
    user_features: sp.csr_matrix | None = None,
    item_features: sp.csr_matrix | None = None,
    on_epoch: Callable[[], None] | None = None,
) -> LightFM:
    """Run ``epochs`` passes of ``fit_partial`` (continuing from the model's current state)."""
    for _ in range(epochs):
        model.fit_partial(
            interactions,
            user_features=user_features,
            item_features=item_features,
            sample_weight=sample_weight,
            epochs=1,
            num_threads=threads,
        )
        if on_epoch is not None:
            on_epoch()
    return model


def export_factors(model: LightFM, item_features: sp.csr_matrix) -> FactorModel:
    """The arrays serving needs (feature embeddings and biases), as float32."""
    return FactorModel(
        user_emb=np.asarray(model.user_embeddings, dtype=np.float32),
        user_bias=np.asarray(model.user_biases, dtype=np.float32),
        item_emb=np.asarray(model.item_embeddings, dtype=np.float32),
        item_bias=np.asarray(model.item_biases, dtype=np.float32),
        item_features=item_features.tocsr().astype(np.float32),
    )
