"""Candidate pre-selection: the k-means index, and the recommender's candidate path against exhaustive
scoring on a real (small) trained model."""

from __future__ import annotations

import time

import numpy as np
import pytest

from models.artifact import ModelBundle
from models.candidates import (
    CandidateIndex,
    CandidateSettings,
    ItemClusters,
    _assign,
    _cluster_sums,
    _plus_plus,
    kmeans,
)
from models.domain import Event, EventType
from models.recommender import Recommender
from models.request import Filters, VisitorContext


def _blobs(rng: np.random.Generator, centres: np.ndarray, per: int) -> np.ndarray:
    x = np.repeat(centres, per, axis=0) + 0.01 * rng.normal(size=(len(centres) * per, centres.shape[1]))
    return x.astype(np.float32)


def test_kmeans_recovers_separated_blobs() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], np.float32)
    got = kmeans(_blobs(rng, centres, 50), 4, seed=1)
    assert np.allclose(np.sort(got, axis=0), np.sort(centres, axis=0), atol=0.05)


def test_assign_finds_the_nearest_centroid_across_blocks() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2 * 2048 + 17, 6)).astype(np.float32)  # three blocks, the last one partial
    c = rng.normal(size=(37, 6)).astype(np.float32)
    naive = ((x[:, None, :].astype(np.float64) - c[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    assert np.array_equal(_assign(x, c), naive)


def test_cluster_sums_match_a_scatter_add() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 5)).astype(np.float32)
    label = rng.integers(0, 9, 500)  # some of the 12 clusters stay empty
    want = np.zeros((12, 5))
    np.add.at(want, label, x)
    assert np.allclose(_cluster_sums(x, label, 12), want)


def test_plus_plus_seeds_one_centroid_per_separated_blob() -> None:
    rng = np.random.default_rng(5)
    centres = 100.0 * np.eye(6, dtype=np.float32)
    seeds = _plus_plus(_blobs(rng, centres, 40), 6, rng)
    nearest = ((seeds[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2).argmin(axis=1)
    assert sorted(nearest.tolist()) == list(range(6))


def test_probe_returns_whole_clusters_best_first_with_their_scores() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 5)).astype(np.float32)
    c = ItemClusters.build(x, items_per_cluster=30)
    assert sorted(c.order.tolist()) == list(range(600))
    q = rng.normal(size=5).astype(np.float32)
    rows, scores = c.probe(q, 100)
    assert len(rows) >= 100
    assert len(set(rows.tolist())) == len(rows)
    assert np.allclose(scores, x[rows] @ q, atol=1e-5)
    # the probed clusters are the best ones by centroid score
    label = np.empty(600, np.int64)
    for j in range(c.n_clusters):
        label[c.order[c.starts[j] : c.starts[j + 1]]] = j
    probed = set(label[rows].tolist())
    best = np.argsort(-(c.centroids @ q))
    assert probed == set(best[: len(probed)].tolist())
    assert all(np.sum(label == j) == np.sum(label[rows] == j) for j in probed)  # whole clusters


@pytest.mark.parametrize("min_items", [1, 30, 100, 250, 599, 600, 10_000])
def test_probe_takes_the_fewest_best_clusters_that_cover_min_items(min_items: int) -> None:
    # uneven clusters (blobs of different sizes), so the short list of best clusters the probe orders
    # first is sometimes too short and it must fall back to ordering every cluster
    rng = np.random.default_rng(min_items)
    centres = rng.normal(scale=10, size=(12, 4))
    x = np.concatenate(
        [_blobs(rng, centres[j : j + 1], per) for j, per in enumerate(rng.integers(5, 90, 12))]
    )
    c = ItemClusters.build(x, items_per_cluster=40)
    q = rng.normal(size=4).astype(np.float32)
    rows, _ = c.probe(q, min_items)
    # reference: every cluster in score order, taken until min_items are covered (or all are taken)
    sizes = np.diff(c.starts)
    want: list[int] = []
    for j in np.argsort(-(c.centroids @ q)):
        want.extend(c.order[c.starts[j] : c.starts[j + 1]].tolist())
        if len(want) >= min_items and sizes[j] > 0:
            break
    assert sorted(rows.tolist()) == sorted(want)


def test_probe_orders_every_cluster_when_the_best_few_are_too_small() -> None:
    # 99 one-item clusters score best and one cluster of 901 items scores worst: covering 150 items needs
    # clusters beyond the short list the probe orders first
    d = 2
    centroids = np.zeros((100, d), np.float32)
    centroids[:99, 0] = np.linspace(2.0, 1.0, 99)
    centroids[99, 0] = -1.0
    vectors = np.repeat(centroids, [1] * 99 + [901], axis=0)
    starts = np.concatenate([[0], np.cumsum([1] * 99 + [901])]).astype(np.int64)
    c = ItemClusters(centroids, np.arange(1000, dtype=np.int64), starts, vectors)
    rows, scores = c.probe(np.array([1.0, 0.0], np.float32), 150)
    assert sorted(rows.tolist()) == list(range(1000))
    assert np.allclose(scores, vectors[rows, 0])


def test_select_scores_every_candidate_exactly() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 4)).astype(np.float32)
    fav = np.array([[5, 9, -1], [7, 8, 399]], np.int64)
    idx = CandidateIndex.build(x, fav, CandidateSettings(probe_items=50, items_per_cluster=20))
    q = rng.normal(size=4).astype(np.float32)
    extra = np.array([1, 2, 3, 399], np.int64)
    rows, scores = idx.select(q, 1, [extra])
    assert np.all(np.diff(rows) > 0)
    assert {1, 2, 3, 7, 8, 399} <= set(rows.tolist())
    assert np.allclose(scores, x[rows] @ q, atol=1e-5)


def test_new_items_join_their_nearest_cluster_and_are_selected() -> None:
    rng = np.random.default_rng(6)
    centres = 20.0 * np.eye(5, dtype=np.float32)
    x = _blobs(rng, centres, 40)
    fav = np.array([[0, 41, -1]], np.int64)
    idx = CandidateIndex.build(x, fav, CandidateSettings(probe_items=30, items_per_cluster=40))
    new = _blobs(rng, centres[[3, 1, 3]], 1)  # three new items, near blobs 3, 1 and 3
    ext = idx.with_new_items(new)
    n = len(x)
    assert len(idx.position) == n  # the old index is unchanged
    c = ext.clusters
    assert sorted(c.order.tolist()) == list(range(n + 3))
    every = np.concatenate([x, new])
    assert np.array_equal(c.vectors[ext.position], every)  # position finds every item's vector
    label = np.repeat(np.arange(c.n_clusters), np.diff(c.starts))[ext.position]
    # naive reference: the nearest of the old centroids, one by one
    for r, v in enumerate(new):
        want = int(np.argmin(((idx.clusters.centroids - v) ** 2).sum(axis=1)))
        assert label[n + r] == want
    assert np.array_equal(
        label[:n], np.repeat(np.arange(c.n_clusters), np.diff(idx.clusters.starts))[idx.position]
    )
    for j in range(c.n_clusters):  # centroids are their members' means again
        assert np.allclose(c.centroids[j], every[label == j].mean(axis=0), atol=1e-4)
    # probing towards blob 3 returns its new members with exact scores
    q = centres[3] / 20.0
    rows, scores = ext.select(q, 0, [])
    assert {n, n + 2} <= set(rows.tolist())
    assert n + 1 not in set(rows.tolist())
    assert np.allclose(scores, every[rows] @ q, atol=1e-4)
    # a new item given as an extra row (e.g. a sparse feature) is scored too
    rows, scores = ext.select(q, 0, [np.array([n + 1], np.int64)])
    assert n + 1 in set(rows.tolist())
    assert np.allclose(scores, every[rows] @ q, atol=1e-4)


@pytest.fixture(scope="module")
def bundle(recommender: Recommender) -> ModelBundle:
    return recommender.bundle


def _contexts(rec: Recommender) -> list[VisitorContext]:
    now = time.time()
    products = [c.item_id for c in rec.catalog.items if c.kind.value == "product"]
    rng = np.random.default_rng(3)
    kinds = [EventType.PRODUCT_VIEW, EventType.ADD_TO_CART, EventType.PURCHASE, EventType.REVIEW]
    out = [VisitorContext(visitor_id="stranger", events=[], cart={}, purchases={}, now=now)]
    for v in range(12):
        evs = [
            Event(
                visitor_id=f"x{v}",
                item_id=products[int(rng.integers(len(products)))],
                event=kinds[int(rng.choice(4, p=[0.7, 0.15, 0.1, 0.05]))],
                timestamp=now - float(rng.uniform(60, 20 * 86_400)),
            )
            for _ in range(int(rng.integers(1, 15)))
        ]
        cart = {e.item_id: e.timestamp for e in evs if e.event is EventType.ADD_TO_CART}
        bought = {e.item_id: e.timestamp for e in evs if e.event is EventType.PURCHASE}
        current = products[v] if v % 3 == 0 else None
        out.append(
            VisitorContext(
                visitor_id=f"x{v}", events=evs, cart=cart, purchases=bought, now=now, current_item=current
            )
        )
    return out


def test_candidate_path_scores_like_the_exhaustive_path(bundle: ModelBundle) -> None:
    exhaustive = Recommender(bundle, CandidateSettings(exhaustive_max_items=10**9))
    # a tiny probe over tiny clusters: most items are never scored, and the filters must still hold
    partial = Recommender(
        bundle, CandidateSettings(exhaustive_max_items=0, probe_items=4, items_per_cluster=3, crowd_items=2)
    )
    everything = Recommender(
        bundle, CandidateSettings(exhaustive_max_items=0, probe_items=10**6, items_per_cluster=3)
    )
    assert partial.candidates is not None
    f = Filters()
    for ctx in _contexts(exhaustive):
        want = exhaustive.recommend(ctx, 5, f)
        full = everything.recommend(ctx, 5, f)
        assert [p.item_id for p in full.products] == [p.item_id for p in want.products]
        assert [p.score for p in full.products] == pytest.approx([p.score for p in want.products], abs=1e-5)
        got = partial.recommend(ctx, 5, f)
        assert len(got.products) == len(want.products)
        wide = {p.item_id: p.score for p in exhaustive.recommend(ctx, 200, f).products}
        for p in got.products:  # every candidate is scored exactly as the exhaustive path scores it
            assert p.item_id in wide
            assert p.score == pytest.approx(wide[p.item_id], abs=1e-5)
        assert got.content == want.content
        assert got.stage == want.stage


def test_candidate_path_falls_back_to_every_item_when_filters_leave_too_few(bundle: ModelBundle) -> None:
    exhaustive = Recommender(bundle, CandidateSettings(exhaustive_max_items=10**9))
    partial = Recommender(
        bundle, CandidateSettings(exhaustive_max_items=0, probe_items=2, items_per_cluster=2, crowd_items=1)
    )
    category = next(c.category for c in bundle.catalog if c.kind.value == "product" and c.category)
    f = Filters(category=category)
    ctx = _contexts(exhaustive)[0]
    want = exhaustive.recommend(ctx, 3, f).products
    got = partial.recommend(ctx, 3, f).products
    assert [p.item_id for p in got] == [p.item_id for p in want]
