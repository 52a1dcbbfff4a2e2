"""The offline stage-aware ranker serves what the service serves: retention keeps out the substitutes of a
fresh one-off purchase (``sources.substitutes_kept_out``), so the offline figures measure that answer."""

from __future__ import annotations

import msgspec
import numpy as np

from models.blend import (
    BASKET_FREQUENCY,
    BASKET_NEIGHBOURS,
    COMPLEMENT,
    INTEREST,
    LIGHTFM,
    SIMILAR,
    TOUCH_RECENCY,
    sparse_features,
)
from models.domain import EventType, Stage
from models.history import event_arrays, older_purchases
from models.journey import stages_at
from models.live_profile import LiveProfile
from models.profiles import profiles_from_log
from models.recommender import Recommender
from models.scoring import StageScorer, top_k
from models.sources import substitutes_kept_out
from tests.storefront import simulate_storefront
from training.pipeline import config_for
from training.stage_model import StageAwareRanker, product_mask, user_rows_for, visitor_context

K = 10


def test_retention_lists_leave_out_the_substitutes_of_a_fresh_one_off_purchase() -> None:
    log = simulate_storefront(n_visitors=300, seed=3)
    cfg = config_for(None, seed=1, threads=1)
    cfg = msgspec.structs.replace(cfg, factors=msgspec.structs.replace(cfg.factors, epochs=3, warm_epochs=1))
    ranker = StageAwareRanker(cfg)
    ranker.fit(log)
    fm = ranker.fitted
    assert fm is not None
    # a retention blend that weighs what the visitor looked at (the storefront has too few retention
    # visitors for a fit that does): without the cutoff it serves the kettles compared before the kettle
    w = fm.scorer.blend_weights.copy()
    w[Stage.RETENTION.index] = 0.0
    w[Stage.RETENTION.index, [LIGHTFM, TOUCH_RECENCY, INTEREST, SIMILAR, COMPLEMENT]] = 1.0
    fm.scorer = StageScorer(fm.scorer.factors, fm.scorer.tables, w, fm.scorer.rules)
    one_off = np.array([not c.repeatable for c in log.catalog])
    # the moment ten minutes after the latest purchase of a one-off item
    bought = np.flatnonzero((log.event == EventType.PURCHASE.code) & one_off[log.item])
    now = float(log.ts[bought].max()) + 600.0
    visitors = np.arange(log.n_visitors, dtype=np.int32)
    stage, _ = stages_at(log, now, cfg.rules)
    retention = stage[visitors] == Stage.RETENTION.index
    prof = profiles_from_log(log, visitors, now, cfg.weights)
    kept_out = substitutes_kept_out(fm.scorer.tables, prof, retention, fm.scorer.rules).toarray()
    assert kept_out.any()
    assert not kept_out[~retention].any()

    got = ranker.recommend(visitors, now, K, exclude_seen=False)
    rows = np.repeat(visitors, K)[got.ravel() >= 0]
    assert not kept_out[rows, got.ravel()[got.ravel() >= 0]].any()
    # without the mask the same scores would have served some of them
    known = np.zeros(log.n_visitors, bool)
    known[np.unique(log.visitor)] = True
    uf = user_rows_for(
        fm.user_vocab.index(), len(fm.user_vocab.names), log, visitors, stage[visitors], fm.context, known
    )
    scores, _ = fm.scorer.score(prof, stage[visitors], uf)
    plain = top_k(scores, K, product_mask(log) & fm.scorer.tables.known)
    assert kept_out[np.repeat(visitors, K), plain.ravel()].any()


def test_the_served_basket_sources_are_the_evaluated_ones(recommender: Recommender) -> None:
    """The model's basket pool holds every training visitor's basket vector in the vocabulary's order,
    and the request path (a visitor's live events, their pool row found by their id) gives the basket
    features the offline evaluation scores (``StageAwareRanker``: profiles from the log, pool row = the
    visitor's index), the visitor never their own neighbour."""
    log = simulate_storefront(seed=7)  # the log ``recommender`` was trained on (tests.storefront)
    tables, serving = recommender.scorer.tables, recommender.serving
    now = recommender.manifest.trained_until
    weights = recommender.manifest.weights
    every = np.arange(log.n_visitors, dtype=np.int32)
    batch = profiles_from_log(log, every, now, weights, serving.basket_params)
    assert tables.visitor_baskets is not None
    assert np.allclose(tables.visitor_baskets.toarray(), batch.basket_frequency.toarray())
    buyers = np.unique(log.visitor[log.event == EventType.PURCHASE.code])[:25]
    assert len(buyers) > 5
    for v in buyers:
        ctx = visitor_context(log, int(v), now)
        items, codes, ts = event_arrays(
            ctx, recommender.event_rows(ctx.events), older_purchases(ctx), recommender.catalog.index
        )
        live = LiveProfile.from_arrays(items, codes, ts, now, weights.vector(), serving.basket_params)
        own_row = recommender.user_index[f"visitor:{ctx.visitor_id}"]
        assert own_row == v
        got = {j: (idx, vals) for j, idx, vals in live.features(tables, serving, own_row=own_row)}
        one = profiles_from_log(log, np.array([v], np.int32), now, weights, serving.basket_params)
        want = dict(sparse_features(tables, one, serving, np.array([v])))
        for j in (BASKET_FREQUENCY, BASKET_NEIGHBOURS):
            dense = np.zeros(log.n_items, np.float32)
            dense[got[j][0]] = got[j][1]
            assert np.allclose(dense, want[j].toarray()[0], atol=1e-6)
        assert got[BASKET_FREQUENCY][0].size  # every buyer has baskets
