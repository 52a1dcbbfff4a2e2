import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.blend import N_FEATURES
from models.domain import STAGES, Event, EventType
from models.factors import FactorModel
from models.live_profile import LiveProfile
from models.profiles import profile_from_events
from models.scoring import StageScorer, top_k
from models.serving_rules import ServingRules
from models.sources import ItemTables
from models.weights import EventWeights


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


def _scorer(rng: np.random.Generator, n: int = 40, d: int = 6) -> StageScorer:
    n_if, n_uf = n + 5, 12
    item_features = sp.hstack([sp.identity(n), sp.random(n, 5, density=0.4, random_state=1)]).tocsr()
    factors = FactorModel(
        rng.normal(size=(n_uf, d)).astype(np.float32),
        rng.normal(size=n_uf).astype(np.float32),
        rng.normal(size=(n_if, d)).astype(np.float32),
        rng.normal(size=n_if).astype(np.float32),
        item_features.astype(np.float32),
    )
    tables = ItemTables(
        popularity=rng.integers(0, 50, n).astype(np.float32),
        trending=rng.random(n).astype(np.float32),
        repeat_rate=rng.random(n).astype(np.float32),
        complements=sp.random(n, n, density=0.1, random_state=2, dtype=np.float32).tocsr(),
        similar=sp.random(n, n, density=0.1, random_state=3, dtype=np.float32).tocsr(),
        known=np.ones(n, bool),
        visitor_baskets=sp.random(15, n, density=0.15, random_state=4, dtype=np.float32).tocsr(),
    )
    weights = rng.normal(size=(len(STAGES), N_FEATURES)).astype(np.float32)
    # windows other than the defaults: the batch and the one-visitor paths must both read the scorer's
    rules = ServingRules(
        bought_recency_days=4.0, touch_recency_days=1.5, similar_recency_days=3.0, basket_neighbours=4
    )
    return StageScorer(factors, tables, weights, rules)


@pytest.mark.parametrize("seed", range(6))
def test_one_visitor_fast_path_matches_the_batch_path(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scorer = _scorer(rng)
    kinds = list(EventType)
    events = [
        Event(
            visitor_id="v",
            item_id=str(rng.integers(0, 40)),
            event=kinds[rng.integers(0, len(kinds))],
            timestamp=t,
        )
        for t in np.sort(rng.uniform(0, 50 * 86_400, size=int(rng.integers(0, 25))))
    ]
    now = 60 * 86_400.0
    prof = profile_from_events(events, {str(i): i for i in range(40)}, 40, now, EventWeights())
    live = LiveProfile.from_arrays(
        np.array([int(e.item_id) for e in events], np.int64),
        np.array([e.event.code for e in events], np.int8),
        np.array([e.timestamp for e in events]),
        now,
        EventWeights().vector(),
    )
    uf = sp.random(1, 12, density=0.5, random_state=seed, dtype=np.float32).tocsr()
    stage = int(rng.integers(0, len(STAGES)))
    own_row = seed - 1  # the visitor's own row of the basket pool (-1: not a training visitor)
    batch, which = scorer.score(prof, np.array([stage], np.int8), uf, own_rows=np.array([own_row]))
    rep = scorer.visitor_repr((uf.indices.astype(np.int64), uf.data))
    features = live.features(scorer.tables, scorer.rules, own_row=own_row)
    one = scorer.score_items(None, rep, (uf.indices, uf.data), stage, features, live.is_new)
    assert np.allclose(one.score, batch[0], atol=1e-4)
    items = np.argsort(-one.score)[:10]
    contrib_ok = one.dominant_feature(items)
    assert np.array_equal(contrib_ok, which[0, items]) or np.allclose(
        # ties between features may pick another column with the same contribution
        scorer.blend_weights[stage][contrib_ok],
        scorer.blend_weights[stage][which[0, items]],
    )
    # a subset of the items gets exactly the scores the full pass gives them
    subset = np.sort(rng.choice(40, 13, replace=False)).astype(np.int64)
    part = scorer.score_items(subset, rep, (uf.indices, uf.data), stage, features, live.is_new)
    assert np.allclose(part.score, one.score[subset], atol=1e-5)
    assert np.array_equal(part.dominant_feature(np.arange(13)), one.dominant_feature(subset))


def test_a_feature_that_did_not_raise_an_items_score_never_explains_it():
    """With every blend weight negative but the factor model's, nothing the visitor did raised any item:
    no item is "bought before" or "trending" for lack of a better-scoring feature (an all-zero
    contribution once won over negative ones)."""
    rng = np.random.default_rng(7)
    scorer = _scorer(rng)
    scorer = StageScorer(scorer.factors, scorer.tables, -np.abs(scorer.blend_weights), scorer.rules)
    events = [Event(visitor_id="v", item_id="3", event=EventType.PURCHASE, timestamp=86_400.0)]
    live = LiveProfile.from_arrays(
        np.array([3], np.int64),
        np.array([EventType.PURCHASE.code], np.int8),
        np.array([86_400.0]),
        2 * 86_400.0,
        EventWeights().vector(),
    )
    prof = profile_from_events(events, {str(i): i for i in range(40)}, 40, 2 * 86_400.0, EventWeights())
    uf = sp.csr_matrix(np.ones((1, 12), np.float32))
    rep = scorer.visitor_repr((uf.indices.astype(np.int64), uf.data))
    for stage in range(len(STAGES)):
        one = scorer.score_items(
            None, rep, (uf.indices, uf.data), stage, live.features(scorer.tables, scorer.rules), False
        )
        everything = np.arange(40)
        assert set(one.dominant_feature(everything).tolist()) == {0}  # LIGHTFM: the factor model's pick
        _, which = scorer.score(prof, np.array([stage], np.int8), uf)
        assert set(which[0].tolist()) == {0}
