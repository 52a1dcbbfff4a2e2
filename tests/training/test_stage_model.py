"""The offline stage-aware ranker serves what the service serves: retention keeps out the substitutes of a
fresh one-off purchase (``sources.substitutes_kept_out``), so the offline figures measure that answer."""

from __future__ import annotations

import msgspec
import numpy as np

from models.blend import COMPLEMENT, INTEREST, LIGHTFM, SIMILAR, TOUCH_RECENCY
from models.domain import EventType, Stage
from models.journey import stages_at
from models.profiles import profiles_from_log
from models.scoring import StageScorer, top_k
from models.sources import substitutes_kept_out
from tests.storefront import simulate_storefront
from training.pipeline import config_for
from training.stage_model import StageAwareRanker, product_mask, user_rows_for

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
