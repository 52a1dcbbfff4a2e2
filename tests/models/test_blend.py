import numpy as np
import scipy.sparse as sp

from models.blend import FEATURE_NAMES, N_FEATURES, blend, fit_blend, sample_pairs
from models.domain import STAGES, Stage


def test_pairwise_fit_learns_the_informative_feature_per_stage():
    rng = np.random.default_rng(0)
    n = 4000
    diff = rng.normal(size=(n, N_FEATURES))
    stage = np.where(np.arange(n) < n // 2, Stage.RETENTION.index, Stage.CONSIDERATION.index).astype(np.int8)
    # retention pairs are ordered by feature 1 (bought_count), consideration pairs by feature 4
    key = np.where(stage == Stage.RETENTION.index, diff[:, 1], diff[:, 4])
    diff[key < 0] *= -1  # every pair's relevant item wins on its stage's key feature
    w = fit_blend(diff, stage, min_pairs=500)
    ret = w.stages[Stage.RETENTION.index]
    con = w.stages[Stage.CONSIDERATION.index]
    assert ret.fitted_on == "stage"
    assert con.fitted_on == "stage"
    assert max(ret.weights, key=lambda f: ret.weights[f]) == FEATURE_NAMES[1]
    assert max(con.weights, key=lambda f: con.weights[f]) == FEATURE_NAMES[4]
    # stages without pairs fall back to the all-stage fit
    aw = w.stages[Stage.AWARENESS.index]
    assert aw.fitted_on == "all"
    assert aw.pairs == 0
    assert w.matrix().shape == (len(STAGES), N_FEATURES)


def test_blend_sums_weighted_features_and_reports_dominant_one():
    f0 = np.array([[1.0, 0.0]], np.float32)
    f1 = np.array([[0.0, 2.0]], np.float32)
    w = np.zeros((1, N_FEATURES), np.float32)
    w[0, 0], w[0, 1] = 2.0, 0.5
    score, which = blend(w, iter([(0, f0), (1, f1)]), 1, 2)
    assert score.tolist() == [[2.0, 1.0]]
    assert which.tolist() == [[0, 1]]


def test_sample_pairs_only_uses_allowed_negatives_and_relevant_positives():
    rng = np.random.default_rng(1)
    u, n = 3, 30
    feats = rng.random((u, n, N_FEATURES)).astype(np.float32)
    relevant = sp.csr_matrix(([1, 1], ([0, 2], [5, 7])), shape=(u, n))
    allowed = np.ones((u, n), bool)
    allowed[:, 20:] = False
    diff, owner = sample_pairs(feats, relevant, allowed, rng, negatives=4)
    assert set(owner.tolist()) == {0, 2}
    assert len(diff) == 8
    for d, r in zip(diff, owner, strict=True):
        pos = 5 if r == 0 else 7
        negs = [j for j in range(20) if np.allclose(feats[r, pos] - feats[r, j], d, atol=1e-6)]
        assert negs
        assert all(j != pos for j in negs)
