"""The cold-item protocol: AUC and precision against naive references, holding items out, and the
scores of held-out items from fake rankers with known answers."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.dataset import EventLog
from models.domain import CatalogItem, EventType, ItemKind
from models.errors import InvalidInputError
from models.features import item_tokens
from tests.storefront import simulate_storefront
from training.evaluate import (
    ColdItems,
    auc_per_user,
    cold_item_targets,
    evaluate_cold_items,
    hold_out_items,
    precision_per_user,
)
from training.pipeline import config_for
from training.stage_model import StageAwareRanker, stages_at, user_rows_for

DAY = 86_400.0
POS = frozenset({EventType.PURCHASE})


def _naive_auc(scores: list[float], relevant: list[bool]) -> float:
    pos = [s for s, r in zip(scores, relevant, strict=True) if r]
    neg = [s for s, r in zip(scores, relevant, strict=True) if not r]
    if not pos or not neg:
        return float("nan")
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


rows_strategy = st.integers(1, 6).flatmap(
    lambda c: st.lists(
        st.lists(st.tuples(st.integers(-3, 3), st.booleans()), min_size=c, max_size=c), min_size=1, max_size=5
    )
)


@given(rows_strategy)
@settings(max_examples=200, deadline=None)
def test_auc_matches_counting_pairs(rows: list[list[tuple[int, bool]]]) -> None:
    # small integer scores: many ties, which count one half
    scores = np.array([[s for s, _ in r] for r in rows], np.float32)
    relevant = np.array([[b for _, b in r] for r in rows], bool)
    got = auc_per_user(scores, relevant)
    want = [_naive_auc(list(map(float, s)), list(r)) for s, r in zip(scores, relevant, strict=True)]
    assert np.allclose(got, want, equal_nan=True)


@given(rows_strategy, st.integers(1, 8))
@settings(max_examples=200, deadline=None)
def test_precision_counts_relevant_items_in_the_top_k(rows: list[list[tuple[int, bool]]], k: int) -> None:
    # distinct scores (ties broken by position) so the naive top k is unambiguous
    scores = np.array([[s * 100 - j for j, (s, _) in enumerate(r)] for r in rows], np.float32)
    relevant = np.array([[b for _, b in r] for r in rows], bool)
    want = [sum(relevant[u][j] for j in np.argsort(-scores[u])[:k]) / k for u in range(len(rows))]
    assert np.allclose(precision_per_user(scores, relevant, k), want)


def test_auc_known_answers() -> None:
    scores = np.array([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 1.0, 1.0]])
    relevant = np.array([[True, False, False, False], [True, False, True, False], [True, True, True, True]])
    got = auc_per_user(scores, relevant)
    assert got[0] == 1.0  # the one relevant item first
    assert got[1] == pytest.approx(1 / 4)  # 0 beats nothing, 2 beats 1 of 2: (0 + 1) / (2 * 2)
    assert np.isnan(got[2])  # nothing to compare with


# visitors a..e, items i0..i9 (products) and a content page
def _log() -> EventLog:
    rows = []
    for v, items in {"a": [0, 1, 2], "b": [2, 3, 4, 5], "c": [5, 6, 7], "d": [8, 9], "e": [0, 9]}.items():
        rows += [(v, f"i{i}", EventType.PURCHASE.value, 1.0 + i) for i in items]
    rows.append(("a", "page", EventType.CONTENT_VIEW.value, 2.0))
    return EventLog.build(
        visitor_ids=[r[0] for r in rows],
        item_ids=[r[1] for r in rows],
        event=np.array([EventType(r[2]).code for r in rows], np.int8),
        ts=np.array([r[3] * DAY for r in rows]),
        catalog=[CatalogItem(item_id="page", kind=ItemKind.CONTENT)],
    )


def test_hold_out_items_removes_every_training_event_on_a_seeded_share_of_products() -> None:
    log = _log()
    train, cold = hold_out_items(log, 0.3, seed=4)
    products = [i for i, c in enumerate(log.catalog) if c.kind is ItemKind.PRODUCT]
    assert len(cold.items) == 3
    assert set(cold.items.tolist()) <= set(products)
    assert not np.isin(train.item, cold.items).any()
    assert cold.removed_train_events == int(np.isin(log.item, cold.items).sum())
    assert train.n_events == log.n_events - cold.removed_train_events
    assert train.catalog == log.catalog  # features stay known
    again = hold_out_items(log, 0.3, seed=4)[1]
    assert np.array_equal(again.items, cold.items)
    other = {tuple(hold_out_items(log, 0.3, seed=s)[1].items.tolist()) for s in range(8)}
    assert len(other) > 1
    with pytest.raises(InvalidInputError, match="at least 2"):
        hold_out_items(log, 0.05, seed=1)


def test_cold_item_targets_and_scores_with_known_answers() -> None:
    log = _log()
    item_row = {n: i for i, n in enumerate(log.item_ids)}
    cold = np.sort(np.array([item_row["i2"], item_row["i5"], item_row["i9"]], np.int64))
    visitors, rel = cold_item_targets(log, cold, POS)
    vid = {log.visitor_ids[v] for v in visitors}
    assert vid == {"a", "b", "c", "d", "e"}
    dense = rel.toarray()
    b = int(np.flatnonzero(visitors == log.visitor_ids.index("b"))[0])
    assert dense[b].tolist() == [float(log.item_ids[i] in {"i2", "i5"}) for i in cold]

    class Oracle:
        """Scores its relevant items highest: AUC 1."""

        name = "oracle"

        def score_items(self, v: np.ndarray, now: float, items: np.ndarray) -> np.ndarray:
            return dense.astype(np.float32) + 0.0 * items[None, :]

    class Flat:
        """Scores every item the same: AUC one half."""

        name = "flat"

        def score_items(self, v: np.ndarray, now: float, items: np.ndarray) -> np.ndarray:
            return np.zeros((len(v), len(items)), np.float32)

    class NoScores:
        name = "popularity"

        def fit(self, train: EventLog) -> None: ...

    got = evaluate_cold_items(
        [Oracle(), Flat(), NoScores()],  # type: ignore[list-item]
        log,
        ColdItems(cold, 0.3, 1, 0),
        k=2,
        now=0.0,
        positive=POS,
    )
    assert set(got.models) == {"oracle", "flat"}  # a ranker that cannot score given items is left out
    assert got.visitors == 5
    assert got.positives == int(rel.nnz)
    # b has two relevant of three; everyone else one: the oracle's pairs are all right
    assert got.models["oracle"].auc == 1.0
    assert got.models["flat"].auc == 0.5
    assert got.models["oracle"].users == 5
    # top 2 of the oracle: b finds 2, the others 1
    assert got.models["oracle"].precision == pytest.approx((2 + 4 * 1) / (5 * 2))


def test_stage_aware_scores_held_out_items_from_their_features_alone() -> None:
    log = simulate_storefront(n_visitors=300, seed=3)
    train, cold = hold_out_items(log, 0.25, seed=2)
    cfg = config_for(None, seed=1, threads=1)
    cfg = msgspec.structs.replace(cfg, factors=msgspec.structs.replace(cfg.factors, epochs=3, warm_epochs=1))
    ranker = StageAwareRanker(cfg)
    ranker.fit(train)
    assert ranker.fitted is not None
    fm = ranker.fitted
    visitors = np.arange(0, log.n_visitors, 7, dtype=np.int32)
    now = float(train.ts.max()) + 1.0
    got = ranker.score_items(visitors, now, cold.items)
    # reference: each item's shared feature embeddings averaged by hand (the identity embedding, which
    # never saw an event, plays no part), against the visitors' representations
    index = fm.item_vocab.index()
    emb, bias = fm.scorer.factors.item_emb, fm.scorer.factors.item_bias
    stage, _ = stages_at(train, now, cfg.rules)
    known = np.zeros(train.n_visitors, bool)
    known[np.unique(train.visitor)] = True
    uf = user_rows_for(
        fm.user_vocab.index(), len(fm.user_vocab.names), train, visitors, stage[visitors], fm.context, known
    )
    users = fm.scorer.factors.user_representations(uf)
    for j, item in enumerate(cold.items):
        cols = [index[t] for t in set(item_tokens(train.catalog[item], fm.price_edges)) if t in index]
        assert f"id:{train.item_ids[item]}" in index  # it has an identity feature, left out on purpose
        item_repr = emb[cols].astype(np.float64).mean(axis=0)
        want = users @ item_repr + bias[cols].mean()
        assert np.allclose(got[:, j], want, atol=1e-4)
