import numpy as np
import scipy.optimize
import scipy.sparse as sp

from models.blend import (
    FEATURE_NAMES,
    N_FEATURES,
    NON_POSITIVE,
    SUBSTITUTE,
    ListSample,
    _softmax_fit,
    blend,
    fit_blend,
    sample_lists,
)
from models.domain import STAGES, Stage


def _lists(rng, n_vis, key, m=20):
    """Synthetic validation lists where positives stand out on feature ``key`` only."""
    pos = rng.normal(size=(n_vis, N_FEATURES)).astype(np.float32)
    pos[:, key] += 2.0
    neg = rng.normal(size=(n_vis, m, N_FEATURES)).astype(np.float32)
    return ListSample(pos, np.arange(n_vis), neg, np.arange(n_vis))


def test_fit_learns_the_informative_feature_per_stage():
    rng = np.random.default_rng(0)
    ret, con = _lists(rng, 800, key=1), _lists(rng, 800, key=4)
    lists = ListSample.concat([ret, con])
    stage = np.repeat([Stage.RETENTION.index, Stage.CONSIDERATION.index], 800).astype(np.int8)
    w = fit_blend(lists, stage, min_pos=500)
    r, c = w.stages[Stage.RETENTION.index], w.stages[Stage.CONSIDERATION.index]
    assert (r.fitted_on, c.fitted_on) == ("stage", "stage")
    assert max(r.weights, key=lambda f: r.weights[f]) == FEATURE_NAMES[1]
    assert max(c.weights, key=lambda f: c.weights[f]) == FEATURE_NAMES[4]
    # stages without positives fall back to the all-stage fit
    aw = w.stages[Stage.AWARENESS.index]
    assert (aw.fitted_on, aw.positives) == ("all", 0)
    assert w.matrix().shape == (len(STAGES), N_FEATURES)


def test_a_substitute_weight_is_fitted_but_never_above_zero():
    """Positives that avoid substitutes give the feature a negative weight; positives that seek them
    cannot make it positive (a rare feature's sign on a small window is noise, its direction is known)."""
    rng = np.random.default_rng(5)
    stage = np.full(600, Stage.RETENTION.index, np.int8)
    avoid = _lists(rng, 600, key=1)
    avoid.neg[:, ::2, SUBSTITUTE] += 2.0  # half the negatives are substitutes, no positive is
    w = fit_blend(avoid, stage, min_pos=500).stages[Stage.RETENTION.index].weights
    assert w["substitute"] < -0.5
    seek = _lists(rng, 600, key=SUBSTITUTE)
    w = fit_blend(seek, stage, min_pos=500).stages[Stage.RETENTION.index].weights
    assert w["substitute"] == 0.0
    assert {"substitute"} == NON_POSITIVE


def test_softmax_loss_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    lists = _lists(rng, 30, key=2, m=7)
    lists = ListSample(lists.pos, rng.integers(0, 30, size=30), lists.neg, lists.row)
    captured = {}

    def spy(fun, x0, jac, method, bounds):
        captured["f"] = fun
        return scipy.optimize.OptimizeResult(x=x0)

    orig = scipy.optimize.minimize
    scipy.optimize.minimize = spy
    try:
        _softmax_fit(lists, 1e-2)
    finally:
        scipy.optimize.minimize = orig
    f = captured["f"]
    w = rng.normal(size=N_FEATURES)
    err = scipy.optimize.check_grad(lambda x: f(x)[0], lambda x: f(x)[1], w)
    assert err < 1e-5


def test_blend_sums_weighted_features_and_reports_dominant_one():
    f0 = np.array([[1.0, 0.0]], np.float32)
    f1 = np.array([[0.0, 2.0]], np.float32)
    w = np.zeros((1, N_FEATURES), np.float32)
    w[0, 0], w[0, 1] = 2.0, 0.5
    score, which = blend(w, iter([(0, f0), (1, f1)]), 1, 2)
    assert score.tolist() == [[2.0, 1.0]]
    assert which.tolist() == [[0, 1]]


def test_sample_lists_uses_only_allowed_negatives_and_relevant_positives():
    rng = np.random.default_rng(1)
    u, n = 3, 30
    feats = rng.random((u, n, N_FEATURES)).astype(np.float32)
    relevant = sp.csr_matrix(([1, 1, 1], ([0, 2, 2], [5, 7, 8])), shape=(u, n))
    allowed = np.ones((u, n), bool)
    allowed[:, 20:] = False
    lists = sample_lists(feats, relevant, allowed, rng, negatives=16)
    assert lists.row.tolist() == [0, 2]
    assert lists.owner.tolist() == [0, 1, 1]
    assert np.allclose(lists.pos, feats[[0, 2, 2], [5, 7, 8]])
    for v, r in enumerate(lists.row):
        own = relevant.indices[relevant.indptr[r] : relevant.indptr[r + 1]].tolist()
        for neg in lists.neg[v]:
            j = [i for i in range(n) if np.allclose(feats[r, i], neg)]
            assert j
            assert j[0] < 20
            assert j[0] not in own  # never one of this visitor's relevant items


def test_stratified_negatives_stand_for_every_non_relevant_item():
    """Each stratum's negatives, weighted, count its items exactly once in total; a visitor with few own
    candidates has all of them, each standing for itself."""
    rng = np.random.default_rng(2)
    u, n = 4, 60
    feats = rng.random((u, n, N_FEATURES)).astype(np.float32)
    relevant = sp.csr_matrix(([1, 1, 1, 1], ([0, 1, 2, 3], [3, 40, 5, 6])), shape=(u, n))
    allowed = np.ones((u, n), bool)
    allowed[:, 50:] = False
    personal = np.zeros((u, n), bool)
    personal[0, :30] = True  # many own candidates: sampled
    personal[1, [1, 2, 3]] = True  # few: all of them
    personal[2, :] = True  # nothing else left: every negative is an own candidate
    lists = sample_lists(feats, relevant, allowed, rng, negatives=16, personal=personal)
    assert lists.neg_logw is not None
    assert lists.row.tolist() == [0, 1, 2, 3]
    for v, r in enumerate(lists.row):
        ok = allowed[r].copy()
        ok[relevant.indices[relevant.indptr[r] : relevant.indptr[r + 1]]] = False
        items = [int(np.flatnonzero((feats[r] == neg).all(axis=1))[0]) for neg in lists.neg[v]]
        w = np.exp(lists.neg_logw[v].astype(np.float64))
        real = np.isfinite(lists.neg_logw[v])
        assert all(ok[i] for i, keep in zip(items, real, strict=True) if keep)
        own = np.array([personal[r, i] for i in items])
        assert np.isclose(w[real & own].sum(), (ok & personal[r]).sum())
        assert np.isclose(w[real & ~own].sum(), (ok & ~personal[r]).sum())
    # visitor 1's three own candidates are all there, each for itself
    items_1 = [int(np.flatnonzero((feats[1] == neg).all(axis=1))[0]) for neg in lists.neg[1]]
    assert {1, 2, 3} <= set(items_1)
    assert np.allclose(lists.neg_logw[1][[items_1.index(i) for i in (1, 2, 3)]], 0.0)


def test_every_visitor_weighs_the_same_however_many_positives():
    """A visitor whose positives are all alike counts once: repeating one of their positives ten times
    leaves the fit as it was (a fit over positives would follow the repeated one)."""
    rng = np.random.default_rng(4)
    lists = _lists(rng, 60, key=2, m=12)
    many = ListSample(
        np.concatenate([lists.pos, np.repeat(lists.pos[:1], 10, axis=0)]),
        np.concatenate([lists.owner, np.zeros(10, np.int64)]),
        lists.neg,
        lists.row,
    )
    np.testing.assert_allclose(_softmax_fit(many, 1e-3), _softmax_fit(lists, 1e-3), atol=1e-4)
