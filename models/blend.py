"""Per-stage blending of candidate sources.

Each (visitor, item) gets a small vector of source features (below); the final score is a per-stage
weighted sum. The weights are *fitted*: a sampled listwise softmax loss (each relevant item against
uniformly sampled non-relevant ones) over visitors in a validation window carved from the training data,
one weight vector per journey stage, falling back to the all-stage fit where a stage has too few positives.
"""

from __future__ import annotations

from collections.abc import Iterator

import msgspec
import numpy as np
import scipy.optimize
import scipy.sparse as sp

from models.domain import STAGES, Source
from models.errors import EmptyDatasetError
from models.factors import zscore_rows
from models.profiles import Profiles
from models.serving_rules import ServingRules
from models.sources import (
    ItemTables,
    basket_neighbour_matrix,
    complement_matrix,
    recency,
    row_max_normalise_sparse,
    similar_matrix,
    substitute_matrix,
)

#: (feature name, the source it is reported as). Order = column in the blend weights.
FEATURES: tuple[tuple[str, Source], ...] = (
    ("lightfm", Source.PERSONALIZED),
    ("bought_count", Source.BUY_AGAIN),
    ("bought_recency", Source.BUY_AGAIN),
    ("repeat_propensity", Source.BUY_AGAIN),
    ("touch_recency", Source.RECENTLY_VIEWED),
    ("interest", Source.RECENTLY_VIEWED),
    ("in_cart", Source.IN_CART),
    ("complement", Source.COMPLEMENT),
    ("similar", Source.SIMILAR),
    ("popularity", Source.POPULAR),
    ("trending", Source.TRENDING),
    # popularity for visitors with no history at all: lets each stage weigh the crowd differently for
    # strangers (whose factor score comes from stage and context only) than for known visitors
    ("popularity_new", Source.POPULAR),
    ("lightfm_new", Source.PERSONALIZED),
    # how often the visitor bought the item, recent purchases counting more, relative to their top item
    ("bought_decayed", Source.BUY_AGAIN),
    # a substitute of something the visitor just bought and will not buy again (another item of its
    # category, not bought together with it; ``sources.substitute_matrix``): how far a stage pushes
    # another kettle down right after a kettle is fitted; that it never pushes it up is the one thing
    # assumed (``NON_POSITIVE``): on a small validation window the sign of a rare feature is noise
    ("substitute", Source.SIMILAR),
    # TIFU-KNN's personal item frequency (``Profiles.basket_frequency``: the visitor's purchase days as
    # baskets, recent ones weighing more) and its neighbour part (``sources.basket_neighbour_matrix``:
    # what the most similar training visitors buy), each relative to the visitor's top item
    ("basket_frequency", Source.BUY_AGAIN),
    ("basket_neighbours", Source.PERSONALIZED),
)
FEATURE_NAMES: tuple[str, ...] = tuple(f for f, _ in FEATURES)
FEATURE_SOURCES: tuple[Source, ...] = tuple(s for _, s in FEATURES)
N_FEATURES = len(FEATURES)


class StageBlend(msgspec.Struct, frozen=True):
    """What the blend learned for one stage: weights by feature name, and how much evidence it had."""

    stage: str
    weights: dict[str, float]
    positives: int
    fitted_on: str  # "stage" when this stage had enough pairs, else "all"


class BlendWeights(msgspec.Struct, frozen=True):
    """Blend weights for every stage (``matrix()`` gives float32 [n_stages, n_features]); ``pooled``: the
    one weight vector fitted on every stage's positives together (None in models trained before it was
    kept: ``stage_agnostic_weights``)."""

    stages: list[StageBlend]
    pooled: dict[str, float] | None = None

    def matrix(self) -> np.ndarray:
        """A feature a model was fitted without has weight 0: the model scores as it was fitted."""
        return np.array(
            [[s.weights.get(f, 0.0) for f in FEATURE_NAMES] for s in self.stages], dtype=np.float32
        )


#: the column of each feature, by name (derived from ``FEATURES``, so the order is stated once)
_COLUMN = {name: i for i, name in enumerate(FEATURE_NAMES)}
LIGHTFM, BOUGHT_COUNT, BOUGHT_RECENCY = _COLUMN["lightfm"], _COLUMN["bought_count"], _COLUMN["bought_recency"]
REPEAT, TOUCH_RECENCY, INTEREST = _COLUMN["repeat_propensity"], _COLUMN["touch_recency"], _COLUMN["interest"]
IN_CART, COMPLEMENT, SIMILAR = _COLUMN["in_cart"], _COLUMN["complement"], _COLUMN["similar"]
POPULARITY, TRENDING, POPULARITY_NEW = _COLUMN["popularity"], _COLUMN["trending"], _COLUMN["popularity_new"]
LIGHTFM_NEW, BOUGHT_DECAYED = _COLUMN["lightfm_new"], _COLUMN["bought_decayed"]
SUBSTITUTE = _COLUMN["substitute"]
BASKET_FREQUENCY, BASKET_NEIGHBOURS = _COLUMN["basket_frequency"], _COLUMN["basket_neighbours"]
#: the features ``sparse_features`` gives: zero outside the visitor's own candidates
SPARSE_COLUMNS: tuple[int, ...] = (
    BOUGHT_COUNT,
    BOUGHT_RECENCY,
    REPEAT,
    TOUCH_RECENCY,
    INTEREST,
    IN_CART,
    COMPLEMENT,
    SIMILAR,
    BOUGHT_DECAYED,
    SUBSTITUTE,
    BASKET_FREQUENCY,
    BASKET_NEIGHBOURS,
)
#: features whose fitted weight is kept at or below 0 in every stage
NON_POSITIVE: frozenset[str] = frozenset({"substitute"})
NON_POSITIVE_COLUMNS: frozenset[int] = frozenset(_COLUMN[f] for f in NON_POSITIVE)


def sparse_features(
    tables: ItemTables, profiles: Profiles, rules: ServingRules, own_rows: np.ndarray | None = None
) -> list[tuple[int, sp.csr_matrix]]:
    """(feature column, csr float32 [u, n_items]) for every feature that is zero outside the visitor's own
    items or few neighbours (cheap as sparse rows); none at all when no visitor has touched an item (they
    would be empty). ``rules`` gives the recency windows; ``own_rows`` (int64 [u], -1: none) each
    visitor's row in ``tables.visitor_baskets``, which is never their own neighbour."""
    if profiles.touch_age.nnz == 0 and profiles.cart.nnz == 0:
        return []
    counts = sp.csr_matrix(profiles.purchases, dtype=np.float32)
    bought = counts.copy()
    bought.data = np.log1p(bought.data)
    repeat = counts.copy()
    repeat.data = tables.repeat_rate[repeat.indices].astype(np.float32)
    interest = sp.csr_matrix(profiles.interest, dtype=np.float32, copy=True)
    interest.data = np.log1p(interest.data)
    return [
        (BOUGHT_COUNT, bought),
        (BOUGHT_RECENCY, recency(profiles.purchase_age, rules.bought_recency_days)),
        (REPEAT, repeat),
        (TOUCH_RECENCY, recency(profiles.touch_age, rules.touch_recency_days)),
        (INTEREST, interest),
        (IN_CART, sp.csr_matrix(profiles.cart, dtype=np.float32)),
        (
            COMPLEMENT,
            row_max_normalise_sparse(complement_matrix(tables, profiles, rules.complement_recency_days)),
        ),
        (SIMILAR, row_max_normalise_sparse(similar_matrix(tables, profiles, rules.similar_recency_days))),
        (BOUGHT_DECAYED, row_max_normalise_sparse(profiles.purchase_decay)),
        (SUBSTITUTE, substitute_matrix(tables, profiles, rules.substitute_recency_days)),
        (BASKET_FREQUENCY, row_max_normalise_sparse(profiles.basket_frequency)),
        (
            BASKET_NEIGHBOURS,
            row_max_normalise_sparse(basket_neighbour_matrix(tables, profiles, rules, own_rows)),
        ),
    ]


def crowd_scores(tables: ItemTables) -> tuple[np.ndarray, np.ndarray]:
    """(popularity, trending) float32 [n_items], log-scaled into [0, 1]: the same for every visitor."""
    pop = np.log1p(tables.popularity)
    tr = np.log1p(tables.trending)
    return (
        (pop / max(float(pop.max()), 1e-6)).astype(np.float32),
        (tr / max(float(tr.max()), 1e-6)).astype(np.float32),
    )


def is_new(profiles: Profiles) -> np.ndarray:
    """bool [u]: visitors with no history at all (no item touched)."""
    return np.diff(profiles.touch_age.indptr) == 0


def feature_arrays(
    tables: ItemTables,
    profiles: Profiles,
    lightfm: np.ndarray | None,
    rules: ServingRules,
    own_rows: np.ndarray | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (feature column, float32 [u, n_items]) one feature at a time, to keep memory at O(u * n_items).

    ``lightfm`` is float32 [u, n_items] raw factor scores or None (then that feature is 0); ``rules`` gives
    the sparse features' recency windows; ``own_rows`` as ``sparse_features``.
    """
    u, n = profiles.n_visitors, tables.n_items
    # visitors with no history at all: their factor score comes from stage and context only, so it gets
    # its own weight (POPULARITY_NEW, LIGHTFM_NEW) instead of sharing the known visitors' one
    new = is_new(profiles)[:, None]
    factor = zscore_rows(lightfm) if lightfm is not None else np.zeros((u, n), np.float32)
    yield LIGHTFM, np.where(new, 0.0, factor).astype(np.float32)
    for j, m in sparse_features(tables, profiles, rules, own_rows):
        yield j, m.toarray()
    pop, tr = crowd_scores(tables)
    yield POPULARITY, np.broadcast_to(pop, (u, n))
    yield TRENDING, np.broadcast_to(tr, (u, n))
    yield POPULARITY_NEW, np.where(new, pop[None, :], 0.0).astype(np.float32)
    yield LIGHTFM_NEW, np.where(new, factor, 0.0).astype(np.float32)


def blend(
    weights: np.ndarray, features: Iterator[tuple[int, np.ndarray]], u: int, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted sum of features with per-row weights.

    weights float32 [u, n_features] (each visitor's stage row). Returns (float32 [u, n] scores,
    int8 [u, n] the feature that raised the score most, for the reported source: LIGHTFM where none
    raised it, so a feature with no value for an item, or one that lowered it, never explains it).
    """
    score = np.zeros((u, n), np.float32)
    best = np.zeros((u, n), np.float32)
    which = np.full((u, n), LIGHTFM, np.int8)
    for f, x in features:
        contrib = weights[:, f : f + 1] * x
        score += contrib
        better = contrib > best
        best = np.where(better, contrib, best)
        which[better] = f
    return score, which


class ListSample(msgspec.Struct, frozen=True):
    """Validation lists for fitting the blend: every positive against its visitor's sampled negatives.

    pos        float32 [P, n_features]      features of each (visitor, relevant item)
    owner      int64 [P]                    row of ``neg`` the positive belongs to
    neg        float32 [V, m, n_features]   features of m items sampled from the visitor's allowed,
                                            non-relevant items
    row        int64 [V]                    the visitor's row in the batch it was sampled from
    neg_logw   float32 [V, m] or None       log of how many of the visitor's non-relevant items each
                                            negative stands for (-inf: padding); None: 0 for every one
    """

    pos: np.ndarray
    owner: np.ndarray
    neg: np.ndarray
    row: np.ndarray
    neg_logw: np.ndarray | None = None

    def log_weights(self) -> np.ndarray:
        """float32 [V, m]: ``neg_logw``, zeros when it is None."""
        if self.neg_logw is None:
            return np.zeros(self.neg.shape[:2], np.float32)
        return self.neg_logw

    def subset(self, keep: np.ndarray) -> ListSample:
        """Only the positives where ``keep`` (bool [P]) is True (negatives re-indexed)."""
        rows, owner = np.unique(self.owner[keep], return_inverse=True)
        logw = None if self.neg_logw is None else self.neg_logw[rows]
        return ListSample(self.pos[keep], owner.astype(np.int64), self.neg[rows], self.row[rows], logw)

    @staticmethod
    def concat(parts: list[ListSample]) -> ListSample:
        offsets = np.cumsum([0, *(len(p.neg) for p in parts[:-1])])
        weighted = any(p.neg_logw is not None for p in parts)
        return ListSample(
            np.concatenate([p.pos for p in parts]),
            np.concatenate([p.owner + o for p, o in zip(parts, offsets, strict=True)]),
            np.concatenate([p.neg for p in parts]),
            np.concatenate([p.row for p in parts]),
            np.concatenate([p.log_weights() for p in parts]) if weighted else None,
        )


def sample_lists(
    features: np.ndarray,
    relevant: sp.csr_matrix,
    allowed: np.ndarray,
    rng: np.random.Generator,
    negatives: int = 200,
    personal: np.ndarray | None = None,
) -> ListSample:
    """Positives and sampled negatives of one batch of visitors.

    features  float32 [u, n_items, n_features]
    relevant  csr [u, n_items] (only allowed items)
    allowed   bool [u, n_items]: items that may be shown (negatives come only from these)
    personal  bool [u, n_items] or None: the visitor's own candidates (items some sparse feature gives a
              value); None: negatives uniform over every allowed item, each standing for one
    Visitors without a positive or without an allowed negative are skipped.

    With ``personal``, the negatives are a stratified sample: up to half of them from the visitor's own
    candidates (all of them when they are that few), the rest uniform over the other allowed items, each
    weighted (``neg_logw``) by how many items of its stratum it stands for. The softmax normaliser is
    then an unbiased estimate of the sum over *every* non-relevant item, as without strata, but it sees
    the items that compete with a positive for the top of the list (the visitor's other purchases, their
    neighbours' items) instead of mostly items no feature scores: the fit learns to order the visitor's
    own candidates, which is what the top of a list is made of. Unweighted hard negatives would bias it
    (the fit then learns that whatever put an item near the top is bad).
    """
    u, _, f = features.shape
    pos_rows: list[np.ndarray] = []
    owners: list[np.ndarray] = []
    negs: list[np.ndarray] = []
    logws: list[np.ndarray] = []
    rows: list[int] = []
    for r in range(u):
        pos = relevant.indices[relevant.indptr[r] : relevant.indptr[r + 1]]
        if len(pos) == 0:
            continue
        if personal is None:
            cand = _uniform_negatives(allowed[r], pos, negatives, rng)
            if cand is None:
                continue
            logw = np.zeros(negatives, np.float32)
        else:
            picked = _stratified_negatives(allowed[r], personal[r], pos, negatives, rng)
            if picked is None:
                continue
            cand, logw = picked
        pos_rows.append(features[r, pos])
        owners.append(np.full(len(pos), len(negs), dtype=np.int64))
        negs.append(features[r, cand])
        logws.append(logw)
        rows.append(r)
    if not negs:
        empty = np.zeros(0, np.int64)
        return ListSample(
            np.zeros((0, f), np.float32),
            empty,
            np.zeros((0, negatives, f), np.float32),
            empty,
            None if personal is None else np.zeros((0, negatives), np.float32),
        )
    return ListSample(
        np.concatenate(pos_rows),
        np.concatenate(owners),
        np.stack(negs),
        np.array(rows, dtype=np.int64),
        None if personal is None else np.stack(logws),
    )


def _uniform_negatives(
    allowed: np.ndarray, pos: np.ndarray, negatives: int, rng: np.random.Generator
) -> np.ndarray | None:
    """int [negatives] items drawn uniformly from ``allowed`` (bool [n]) minus ``pos``; None: none left."""
    n = len(allowed)
    cand = rng.integers(0, n, size=2 * negatives)
    cand = cand[allowed[cand] & ~np.isin(cand, pos)][:negatives]
    if len(cand) < negatives:
        pool = np.flatnonzero(allowed)
        pool = pool[~np.isin(pool, pos)]
        if len(pool) == 0:
            return None
        cand = rng.choice(pool, size=negatives, replace=len(pool) < negatives)
    return cand


def _stratified_negatives(
    allowed: np.ndarray, personal: np.ndarray, pos: np.ndarray, negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray] | None:
    """(int [negatives] items, float32 [negatives] log weights) of ``sample_lists``' stratified sample from
    ``allowed`` minus ``pos`` (bool [n], int [p]); -inf weights pad when fewer items exist; None: none."""
    ok = allowed.copy()
    ok[pos] = False
    own, rest = np.flatnonzero(ok & personal), np.flatnonzero(ok & ~personal)
    if len(own) + len(rest) == 0:
        return None
    half = negatives // 2
    n_own = min(len(own), half if len(rest) else negatives)
    n_rest = negatives - n_own if len(rest) else 0
    take_own = own if n_own == len(own) else rng.choice(own, n_own, replace=False)
    take_rest = rng.choice(rest, n_rest, replace=len(rest) < n_rest) if n_rest else np.zeros(0, np.int64)
    items = np.concatenate([take_own, take_rest]).astype(np.int64)
    logw = np.concatenate(
        [
            np.full(len(take_own), np.log(len(own) / len(take_own)) if len(take_own) else 0.0, np.float32),
            np.full(
                len(take_rest), np.log(len(rest) / len(take_rest)) if len(take_rest) else 0.0, np.float32
            ),
        ]
    )
    pad = negatives - len(items)
    if pad:
        items = np.concatenate([items, np.zeros(pad, np.int64)])
        logw = np.concatenate([logw, np.full(pad, -np.inf, np.float32)])
    return items, logw


def _softmax_fit(lists: ListSample, l2: float) -> np.ndarray:
    """Weights minimising the mean over visitors of the mean over their positives of
    -log softmax(positive | positive + its negatives), each negative counted ``neg_logw`` times,
    + l2/2 |w|^2 (a sampled listwise loss: it rewards putting positives at the very top), with the
    weights of ``NON_POSITIVE`` features bounded above by 0."""
    pos = lists.pos.astype(np.float64)
    neg = lists.neg.astype(np.float64)
    logw = lists.log_weights().astype(np.float64)
    owner = lists.owner
    # every visitor weighs the same, however many positives they have (as the metrics average over
    # visitors): otherwise a few wholesalers with hundreds of new items each decide the blend
    per_visitor = np.bincount(owner, minlength=len(neg)).astype(np.float64)
    pw = 1.0 / per_visitor[owner]
    pw /= pw.sum()

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        sp_ = pos @ w  # [P]
        sn = (neg @ w + logw)[owner]  # [P, m]: each negative counts for the items it stands for
        top = np.maximum(sp_, sn.max(axis=1))
        ep = np.exp(sp_ - top)
        en = np.exp(sn - top[:, None])
        z = ep + en.sum(axis=1)
        val = float(pw @ (np.log(z) + top - sp_) + 0.5 * l2 * w @ w)
        a_pos = (ep / z - 1.0) * pw  # d loss / d s_pos
        a_neg = en / z[:, None] * pw[:, None]  # d loss / d s_neg
        per_row = np.zeros((len(neg), neg.shape[1]))
        np.add.at(per_row, owner, a_neg)
        grad = a_pos @ pos + np.einsum("vm,vmf->f", per_row, neg) + l2 * w
        return val, grad

    bounds = [(None, 0.0) if f in NON_POSITIVE else (None, None) for f in FEATURE_NAMES]
    res = scipy.optimize.minimize(loss, np.zeros(pos.shape[1]), jac=True, method="L-BFGS-B", bounds=bounds)
    return np.asarray(res.x, dtype=np.float64)


def fit_blend(
    lists: ListSample, stage_of_pos: np.ndarray, *, min_pos: int = 300, l2: float = 1e-3
) -> BlendWeights:
    """Fit one weight vector per stage (``Stage.index`` of each positive in ``stage_of_pos`` int8 [P]);
    a stage with fewer than ``min_pos`` positives uses the all-stage fit."""
    if len(lists.pos) == 0:
        raise EmptyDatasetError("no validation positives to fit the blend on")
    overall = _softmax_fit(lists, l2)
    out = []
    for s in STAGES:
        m = stage_of_pos == s.index
        n = int(m.sum())
        w, how = (_softmax_fit(lists.subset(m), l2), "stage") if n >= min_pos else (overall, "all")
        out.append(StageBlend(s.value, {f: float(x) for f, x in zip(FEATURE_NAMES, w, strict=True)}, n, how))
    return BlendWeights(out, pooled={f: float(x) for f, x in zip(FEATURE_NAMES, overall, strict=True)})


def stage_agnostic_weights(weights: BlendWeights) -> np.ndarray:
    """float32 [n_stages, n_features]: one blend for every stage, for the "does the stage help?"
    experiment. The pooled fit (the same loss over every stage's validation positives together: what a
    stage-unaware blend would learn) when the model kept it; for an older model, the average of the
    per-stage vectors weighted by each stage's validation positives (the stages a pooled fit would have
    weighed most). The factor model's stage user feature is untouched: only the blend loses the stage."""
    if weights.pooled is not None:
        row = np.array([weights.pooled.get(f, 0.0) for f in FEATURE_NAMES], dtype=np.float64)
    else:
        m = weights.matrix().astype(np.float64)
        n = np.array([s.positives for s in weights.stages], dtype=np.float64)
        row = (n @ m) / n.sum() if n.sum() > 0 else m.mean(axis=0)
    return np.tile(row.astype(np.float32), (len(weights.stages), 1))
