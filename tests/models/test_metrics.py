"""Vectorised ranking metrics against naive, textbook reference implementations."""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from models.metrics import per_user, summarise


def naive(recs: list[int], relevant: set[int], k: int) -> dict[str, float]:
    recs = list(recs[:k])
    hits = [1 if (r >= 0 and r in relevant) else 0 for r in recs]
    if not relevant:
        return dict.fromkeys(("precision", "recall", "ndcg", "hit_rate", "map"), 0.0)
    dcg = sum(h / math.log2(i + 2) for i, h in enumerate(hits))
    idcg = sum(1 / math.log2(i + 2) for i in range(min(len(relevant), k)))
    ap, seen = 0.0, 0
    for i, h in enumerate(hits):
        if h:
            seen += 1
            ap += seen / (i + 1)
    return {
        "precision": sum(hits) / k,
        "recall": sum(hits) / len(relevant),
        "ndcg": dcg / idcg,
        "hit_rate": float(any(hits)),
        "map": ap / min(len(relevant), k),
    }


def test_known_answer() -> None:
    recs = np.array([[3, 1, 7, -1]], dtype=np.int32)
    rel = sp.csr_matrix(np.array([[0, 1, 0, 0, 0, 0, 0, 1, 1, 0]], dtype=np.float32))
    m = per_user(recs, rel)
    assert m["precision"][0] == 0.5
    assert np.isclose(m["recall"][0], 2 / 3)
    dcg = 1 / math.log2(3) + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3) + 1 / math.log2(4)
    assert np.isclose(m["ndcg"][0], dcg / idcg)
    assert np.isclose(m["map"][0], (1 / 2 + 2 / 3) / 3)
    assert m["hit_rate"][0] == 1.0


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 8),
    st.lists(
        st.tuples(
            st.lists(st.integers(-1, 15), min_size=8, max_size=8, unique=True),
            st.sets(st.integers(0, 15), max_size=10),
        ),
        min_size=1,
        max_size=12,
    ),
)
def test_matches_naive_reference(k, rows) -> None:
    recs = np.array([r[:k] for r, _ in rows], dtype=np.int32)
    dense = np.zeros((len(rows), 16), dtype=np.float32)
    for i, (_, rel) in enumerate(rows):
        dense[i, sorted(rel)] = 1
    got = per_user(recs, sp.csr_matrix(dense))
    for i, (r, rel) in enumerate(rows):
        want = naive(list(r[:k]), rel, k)
        for name, value in want.items():
            assert np.isclose(got[name][i], value), (name, i, got[name][i], value)


def test_summary_means_and_coverage() -> None:
    recs = np.array([[0, 1], [1, 2], [3, -1]], dtype=np.int32)
    rel = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]], dtype=np.float32))
    values = per_user(recs, rel)
    s = summarise(values, recs, np.array([True, True, False]), n_candidates=8)
    assert s.users == 2
    assert np.isclose(s.precision, (0.5 + 0.0) / 2)
    assert np.isclose(s.coverage, 3 / 8)  # items 0, 1, 2
    assert np.isclose(s.hit_rate, 0.5)
