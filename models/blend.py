"""Per-stage blending of candidate sources.

Each (visitor, item) gets a small vector of source features (below); the final score is a per-stage
weighted sum. The weights are *fitted*: a pairwise logistic (BPR-style) loss over (relevant, non-relevant)
item pairs of visitors in a validation window carved from the training data, one weight vector per journey
stage, falling back to the all-stage fit where a stage has too few pairs.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import numpy as np
import scipy.optimize
import scipy.sparse as sp

from models.domain import STAGES
from models.factors import zscore_rows
from models.profiles import Profiles
from models.sources import ItemTables, complement_scores, dense_recency, row_max_normalise, similar_scores

#: (feature name, the source it is reported as). Order = column in the blend weights.
FEATURES: tuple[tuple[str, str], ...] = (
    ("lightfm", "personalized"),
    ("bought_count", "buy_again"),
    ("bought_recency", "buy_again"),
    ("repeat_propensity", "buy_again"),
    ("touch_recency", "recently_viewed"),
    ("interest", "recently_viewed"),
    ("in_cart", "in_cart"),
    ("complement", "complement"),
    ("similar", "similar"),
    ("popularity", "popular"),
    ("trending", "trending"),
    # popularity for visitors with no history at all: lets each stage weigh the crowd differently for
    # strangers (whose factor score comes from stage and context only) than for known visitors
    ("popularity_new", "popular"),
    ("lightfm_new", "personalized"),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f for f, _ in FEATURES)
FEATURE_SOURCES: tuple[str, ...] = tuple(s for _, s in FEATURES)
N_FEATURES = len(FEATURES)


class StageBlend(msgspec.Struct, frozen=True):
    """What the blend learned for one stage: weights by feature name, and how much evidence it had."""

    stage: str
    weights: dict[str, float]
    pairs: int
    fitted_on: str  # "stage" when this stage had enough pairs, else "all"


class BlendWeights(msgspec.Struct, frozen=True):
    """Blend weights for every stage (``matrix()`` gives float32 [n_stages, n_features])."""

    stages: list[StageBlend]

    def matrix(self) -> np.ndarray:
        return np.array([[s.weights[f] for f in FEATURE_NAMES] for s in self.stages], dtype=np.float32)


def feature_arrays(
    tables: ItemTables, profiles: Profiles, lightfm: np.ndarray | None
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (feature column, float32 [u, n_items]) one feature at a time, to keep memory at O(u * n_items).

    ``lightfm`` is float32 [u, n_items] raw factor scores or None (then that feature is 0).
    """
    u, n = profiles.n_visitors, tables.n_items
    # visitors with no history at all: their factor score comes from stage and context only, so it gets
    # its own weight (features 11 and 12) instead of sharing the known visitors' one
    new = (np.diff(profiles.touch_age.indptr) == 0)[:, None]
    factor = zscore_rows(lightfm) if lightfm is not None else np.zeros((u, n), np.float32)
    yield 0, np.where(new, 0.0, factor).astype(np.float32)
    counts = np.asarray(profiles.purchases.todense(), dtype=np.float32)
    yield 1, np.log1p(counts)
    yield 2, dense_recency(profiles.purchase_age, 30.0)
    yield 3, (counts > 0) * tables.repeat_rate[None, :]
    yield 4, dense_recency(profiles.touch_age, 7.0)
    yield 5, np.log1p(np.asarray(profiles.interest.todense(), dtype=np.float32))
    yield 6, np.asarray(profiles.cart.todense(), dtype=np.float32)
    yield 7, row_max_normalise(complement_scores(tables, profiles))
    yield 8, row_max_normalise(similar_scores(tables, profiles))
    pop = np.log1p(tables.popularity)
    pop = pop / max(float(pop.max()), 1e-6)
    yield 9, np.broadcast_to(pop, (u, n))
    tr = np.log1p(tables.trending)
    yield 10, np.broadcast_to(tr / max(float(tr.max()), 1e-6), (u, n))
    yield 11, np.where(new, pop[None, :], 0.0).astype(np.float32)
    yield 12, np.where(new, factor, 0.0).astype(np.float32)


def blend(
    weights: np.ndarray, features: Iterator[tuple[int, np.ndarray]], u: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of features with per-row weights.

    weights float32 [u, n_features] (each visitor's stage row). Returns (float32 [u, n] scores,
    int8 [u, n] the feature that contributed most, for the reported source).
    """
    score = np.zeros((u, n), np.float32)
    best = np.full((u, n), -np.inf, np.float32)
    which = np.zeros((u, n), np.int8)
    for f, x in features:
        contrib = weights[:, f : f + 1] * x
        score += contrib
        better = contrib > best
        best = np.where(better, contrib, best)
        which[better] = f
    return score, which


def _pairwise_fit(diff: np.ndarray, l2: float) -> np.ndarray:
    """Weights minimising mean log(1 + exp(-diff·w)) + l2/2 |w|². diff float64 [pairs, n_features]."""

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        m = diff @ w
        # log(1+exp(-m)) computed stably
        val = np.logaddexp(0.0, -m).mean() + 0.5 * l2 * w @ w
        sig = np.exp(-np.logaddexp(0.0, m))  # sigmoid(-m)
        grad = -(diff * sig[:, None]).mean(axis=0) + l2 * w
        return float(val), grad

    res = scipy.optimize.minimize(loss, np.zeros(diff.shape[1]), jac=True, method="L-BFGS-B")
    return np.asarray(res.x, dtype=np.float64)


def sample_pairs(
    features: np.ndarray,
    relevant: sp.csr_matrix,
    allowed: np.ndarray,
    rng: np.random.Generator,
    negatives: int = 8,
    pool: int = 50,
    hard_rows: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature differences of (relevant, non-relevant) item pairs.

    features  float32 [u, n_items, n_features] for one batch of visitors
    relevant  csr [u, n_items] (only allowed items)
    allowed   bool [u, n_items]: items that may be shown (negatives come only from these)
    hard_rows bool [u] (default all): rows whose negatives are drawn half from the ``pool`` items a uniform
              blend ranks highest (hard) and half at random; other rows draw all negatives at random.
              Visitors without history should not use hard negatives: their "hard" items are simply the
              most popular ones, and the fit would learn that popularity is bad.
    Returns (float64 [pairs, n_features] diff, int64 [pairs] row of each pair).
    """
    u, n, _ = features.shape
    pool = min(pool, n - 1)
    prior = np.where(allowed, features.sum(axis=2), -np.inf)
    top = np.argpartition(-prior, pool, axis=1)[:, :pool]
    if hard_rows is not None:
        top = np.where(hard_rows[:, None], top, rng.integers(0, n, size=(u, pool)))
    diffs: list[np.ndarray] = []
    owner: list[np.ndarray] = []
    for r in range(u):
        pos = relevant.indices[relevant.indptr[r] : relevant.indptr[r + 1]]
        if len(pos) == 0:
            continue
        cand = np.concatenate([top[r], rng.integers(0, n, size=pool)])
        cand = cand[allowed[r, cand] & ~np.isin(cand, pos)]
        if len(cand) == 0:
            continue
        p = np.repeat(pos, negatives)
        q = rng.choice(cand, size=len(p))
        diffs.append(features[r, p].astype(np.float64) - features[r, q])
        owner.append(np.full(len(p), r))
    if not diffs:
        return np.zeros((0, features.shape[2])), np.zeros(0, np.int64)
    return np.concatenate(diffs), np.concatenate(owner)


def fit_blend(
    diff: np.ndarray, stage_of_pair: np.ndarray, *, min_pairs: int = 300, l2: float = 1e-3
) -> BlendWeights:
    """Fit one weight vector per stage (Stage.index in ``stage_of_pair`` int8 [pairs]) from pair diffs."""
    if len(diff) == 0:
        raise ValueError("no validation pairs to fit the blend on")
    overall = _pairwise_fit(diff, l2)
    out = []
    for s in STAGES:
        m = stage_of_pair == s.index
        n = int(m.sum())
        w, how = (_pairwise_fit(diff[m], l2), "stage") if n >= min_pairs else (overall, "all")
        out.append(StageBlend(s.value, {f: float(x) for f, x in zip(FEATURE_NAMES, w, strict=True)}, n, how))
    return BlendWeights(out)
