import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.scoring import top_k


@settings(max_examples=80, deadline=None)
@given(
    arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 12)), elements=st.floats(-5, 5, width=32)),
    st.integers(1, 15),
    st.data(),
)
def test_top_k_matches_naive_sort(scores, k, data):
    allowed = data.draw(arrays(bool, scores.shape))
    got = top_k(scores, k, allowed)
    assert got.shape == (scores.shape[0], k)
    for r in range(scores.shape[0]):
        cand = [(scores[r, c], c) for c in range(scores.shape[1]) if allowed[r, c]]
        want_vals = sorted((v for v, _ in cand), reverse=True)[:k]
        row = [i for i in got[r] if i >= 0]
        assert len(row) == len(want_vals)
        assert [scores[r, i] for i in row] == want_vals
        assert all(allowed[r, i] for i in row)
        assert list(got[r, len(row) :]) == [-1] * (k - len(row))


def test_top_k_broadcasts_item_mask():
    s = np.array([[3, 2, 1], [1, 2, 3]], dtype=np.float32)
    got = top_k(s, 2, np.array([True, False, True]))
    assert got.tolist() == [[0, 2], [2, 0]]
