"""Top-k ranking metrics with binary relevance, vectorised over visitors.

Conventions (the evaluation protocol of ``journeyrec evaluate``):
precision@k = hits / k; recall@k = hits / |relevant|; hit_rate@k = 1 if any hit;
ndcg@k = DCG / ideal DCG where the ideal ranks min(|relevant|, k) hits first, gain 1 / log2(rank + 1);
map@k = mean over hits of precision at the hit's rank, divided by min(|relevant|, k);
coverage = distinct recommended items / candidate items.
"""

from __future__ import annotations

import msgspec
import numpy as np
import scipy.sparse as sp

METRICS: tuple[str, ...] = ("precision", "recall", "ndcg", "hit_rate", "map")


class MetricSummary(msgspec.Struct, frozen=True):
    """Means over ``users`` visitors, plus catalog coverage of their lists.

    ci95: metric name -> (lo, hi), the paired bootstrap's 95% interval of the mean (``models.bootstrap``;
    empty when not computed).
    """

    users: int
    precision: float
    recall: float
    ndcg: float
    hit_rate: float
    map: float
    coverage: float
    ci95: dict[str, tuple[float, float]] = {}


def hit_matrix(recs: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """bool[u, k]: whether ``recs[r, j]`` is relevant for row r. recs int[u, k] with -1 padding;
    relevant csr [u, n_items] (non-zero = relevant)."""
    u, k = recs.shape
    if u == 0 or k == 0:
        return np.zeros((u, k), dtype=bool)
    rel = relevant.tocsr()
    rows = np.repeat(np.arange(u), k)
    cols = recs.ravel().astype(np.int64)
    valid = cols >= 0
    out = np.zeros(u * k, dtype=bool)
    if valid.any():
        out[valid] = np.asarray(rel[rows[valid], cols[valid]]).ravel() != 0
    return out.reshape(u, k)


def per_user(recs: np.ndarray, relevant: sp.csr_matrix) -> dict[str, np.ndarray]:
    """Each metric of ``METRICS`` per row: float64[u]. Rows with no relevant item get 0 everywhere."""
    u, k = recs.shape
    hits = hit_matrix(recs, relevant)
    n_rel = np.diff(relevant.tocsr().indptr).astype(np.float64)
    n_hits = hits.sum(axis=1).astype(np.float64)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = (hits * discount).sum(axis=1)
    ideal_n = np.minimum(n_rel, k).astype(np.int64)
    ideal = np.concatenate([[0.0], np.cumsum(discount)])[ideal_n]
    prec_at = np.cumsum(hits, axis=1) / np.arange(1, k + 1)
    ap = (prec_at * hits).sum(axis=1)
    safe = np.maximum(ideal_n, 1)
    return {
        "precision": n_hits / max(k, 1),
        "recall": np.divide(n_hits, n_rel, out=np.zeros(u), where=n_rel > 0),
        "ndcg": np.divide(dcg, ideal, out=np.zeros(u), where=ideal > 0),
        "hit_rate": (n_hits > 0).astype(np.float64),
        "map": np.where(ideal_n > 0, ap / safe, 0.0),
    }


def summarise(
    values: dict[str, np.ndarray], recs: np.ndarray, rows: np.ndarray, n_candidates: int
) -> MetricSummary:
    """Means of ``values`` (from ``per_user``) over ``rows`` (int[m] or bool[u]), and the coverage of
    their lists."""
    sel = recs[rows]
    distinct = np.unique(sel[sel >= 0]).size
    m = int(sel.shape[0])
    means = {name: float(values[name][rows].mean()) if m else 0.0 for name in METRICS}
    return MetricSummary(
        users=m,
        precision=means["precision"],
        recall=means["recall"],
        ndcg=means["ndcg"],
        hit_rate=means["hit_rate"],
        map=means["map"],
        coverage=distinct / max(n_candidates, 1),
    )
