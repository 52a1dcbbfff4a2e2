"""The paired bootstrap: known answers, a loop reference of the resample means, and its invariants."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.bootstrap import excludes_zero, percentile_interval, resample_means
from models.metrics import METRICS
from training.evaluate import bootstrap_intervals


def test_resample_means_are_the_means_of_the_drawn_visitors() -> None:
    values = np.random.default_rng(0).random((37, 3))
    got = resample_means(values, 50, seed=4)
    idx = np.random.default_rng(4).integers(0, 37, size=(50, 37), dtype=np.int64)
    want = np.array([[values[idx[r], c].mean() for c in range(3)] for r in range(50)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("chunk_cells", [1, 37 * 3, 37 * 1000])
def test_seeded_and_independent_of_the_chunk_size(chunk_cells: int) -> None:
    values = np.random.default_rng(1).random((37, 2))
    base = resample_means(values, 200, seed=9)
    np.testing.assert_array_equal(resample_means(values, 200, seed=9), base)
    # the same draws in any chunking (the products' rounding may differ in the last bit)
    np.testing.assert_allclose(resample_means(values, 200, seed=9, chunk_cells=chunk_cells), base, rtol=1e-13)
    assert not np.array_equal(resample_means(values, 200, seed=10), base)


def test_constant_metric_has_zero_width() -> None:
    ci = percentile_interval(resample_means(np.full((25, 1), 0.25), 1000, seed=1))
    np.testing.assert_allclose(ci, [[0.25, 0.25]], atol=1e-15)


def test_two_visitors_zero_and_one_span_zero_to_one() -> None:
    # a resample mean is 0, 1/2 or 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5% points are 0 and 1
    ci = percentile_interval(resample_means(np.array([[0.0], [1.0]]), 1000, seed=2))
    np.testing.assert_array_equal(ci, [[0.0, 1.0]])


def test_interval_contains_the_point_estimate() -> None:
    values = (np.random.default_rng(5).random((500, 4)) < [0.1, 0.3, 0.5, 0.9]).astype(float)
    ci = percentile_interval(resample_means(values, 1000, seed=3))
    point = values.mean(axis=0)
    assert ((ci[:, 0] <= point) & (point <= ci[:, 1])).all()
    assert (ci[:, 1] - ci[:, 0] > 0).all()


def test_excludes_zero() -> None:
    assert excludes_zero((0.01, 0.2))
    assert excludes_zero((-0.2, -0.01))
    assert not excludes_zero((-0.01, 0.2))
    assert not excludes_zero((0.0, 0.2))


def _per_visitor(seed: int, u: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.random((u, len(METRICS))) for name in ("ours", "base", "other")}


def test_differences_are_paired_and_known_when_equal() -> None:
    per = _per_visitor(0, 60)
    per["base"] = per["ours"].copy()
    rows = {"": np.arange(60), "half": np.arange(60) < 30}
    cis, diffs = bootstrap_intervals(per, rows, reference="ours", resamples=1000, seed=1)
    assert set(diffs) == {"base", "other"}
    for g in rows:
        for m in METRICS:
            # the same visitors in every resample: identical models differ by exactly 0, interval [0, 0]
            assert diffs["base"][g][m].value == 0.0
            assert diffs["base"][g][m].ci95 == (0.0, 0.0)
            lo, hi = cis["ours"][g][m]
            assert lo <= per["ours"][rows[g], METRICS.index(m)].mean() <= hi
    d = diffs["other"][""]["ndcg"]
    j = METRICS.index("ndcg")
    assert d.value == pytest.approx(per["ours"][:, j].mean() - per["other"][:, j].mean(), abs=1e-6)
    assert d.ci95[0] <= d.value <= d.ci95[1]


def test_no_reference_no_differences() -> None:
    cis, diffs = bootstrap_intervals(
        _per_visitor(1, 10), {"": np.arange(10)}, reference="absent", resamples=1000, seed=1
    )
    assert diffs == {}
    assert set(cis) == {"ours", "base", "other"}


@settings(max_examples=25, deadline=None)
@given(c=st.floats(-0.5, 0.5), seed=st.integers(0, 2**16), u=st.integers(2, 80))
def test_shifting_a_models_values_shifts_the_difference_interval(c: float, seed: int, u: int) -> None:
    per = _per_visitor(seed, u)
    rows = {"": np.arange(u)}
    _, before = bootstrap_intervals(per, rows, reference="ours", resamples=1000, seed=seed)
    shifted = {**per, "ours": per["ours"] + c}
    _, after = bootstrap_intervals(shifted, rows, reference="ours", resamples=1000, seed=seed)
    for m in METRICS:
        b, a = before["base"][""][m], after["base"][""][m]
        assert a.value == pytest.approx(b.value + c, abs=2e-6)
        assert a.ci95[0] == pytest.approx(b.ci95[0] + c, abs=2e-6)
        assert a.ci95[1] == pytest.approx(b.ci95[1] + c, abs=2e-6)
