"""A new item's representation from its features (no identity feature), and the catalog, tables and
scorer extended with new items, against hand-computed references on the storefront model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from models import artifact
from models.artifact import ModelBundle
from models.catalog import CatalogColumns, filter_mask
from models.domain import CatalogItem, ItemKind, Stage
from models.features import Vocabulary, feature_rows, item_feature_matrix, item_tokens, represent_items
from models.request import Filters
from models.scoring import StageScorer


@pytest.fixture(scope="module")
def bundle(models_dir: Path) -> ModelBundle:
    return artifact.load(models_dir)


def _naive_without_identity(b: ModelBundle, row: int) -> tuple[float, np.ndarray]:
    """The trained item's feature row with its identity column removed, renormalised to sum 1, times the
    embeddings: written out entry by entry."""
    names = b.item_vocab.names
    m = b.factors.item_features.tocsr()
    cols = m.indices[m.indptr[row] : m.indptr[row + 1]]
    vals = m.data[m.indptr[row] : m.indptr[row + 1]].astype(np.float64)
    keep = [i for i, c in enumerate(cols) if not names[c].startswith("id:")]
    total = sum(vals[i] for i in keep)
    emb = np.zeros(b.factors.item_emb.shape[1])
    bias = 0.0
    for i in keep:
        emb += vals[i] / total * b.factors.item_emb[cols[i]].astype(np.float64)
        bias += vals[i] / total * float(b.factors.item_bias[cols[i]])
    return bias, emb


def test_a_trained_items_representation_without_identity_matches_its_row(bundle: ModelBundle) -> None:
    rows = list(range(len(bundle.catalog)))
    got = represent_items(bundle.factors, bundle.item_vocab, bundle.price_edges, bundle.catalog)
    assert got.embedding.shape == (len(rows), bundle.factors.item_emb.shape[1])
    assert got.embedding.dtype == np.float32
    assert got.bias.dtype == np.float32
    for r in rows:
        bias, emb = _naive_without_identity(bundle, r)
        assert got.bias[r] == pytest.approx(bias, abs=1e-5)
        assert np.allclose(got.embedding[r], emb, atol=1e-5)
    # the tokens training dropped too (used by fewer than two items) are the ones reported
    names = set(bundle.item_vocab.names)
    want = [tuple(sorted(set(item_tokens(c, bundle.price_edges)) - names)) for c in bundle.catalog]
    assert list(got.features.unknown) == want


def test_feature_rows_are_the_training_rows_without_identity(bundle: ModelBundle) -> None:
    index = bundle.item_vocab.index()
    trained = item_feature_matrix(bundle.catalog, bundle.item_vocab, bundle.price_edges).toarray()
    ident = np.array([n.startswith("id:") for n in bundle.item_vocab.names])
    shared = trained[:, ~ident]
    want = shared / shared.sum(axis=1, keepdims=True)
    got = feature_rows(bundle.catalog, index, bundle.price_edges).rows.toarray()
    assert np.all(got[:, ident] == 0)
    assert np.allclose(got[:, ~ident], want, atol=1e-6)


def test_unknown_tokens_are_dropped_and_reported(bundle: ModelBundle) -> None:
    item = CatalogItem(item_id="n-1", category="Kitchen", price=30.0, tags=("glitter",))
    got = represent_items(bundle.factors, bundle.item_vocab, bundle.price_edges, [item])
    assert got.features.unknown == (("tag:glitter",),)
    index = bundle.item_vocab.index()
    kept = [t for t in item_tokens(item, bundle.price_edges) if t in index]
    assert len(kept) == 3  # kind, category, price band
    want = np.mean([bundle.factors.item_emb[index[t]] for t in kept], axis=0)
    assert np.allclose(got.embedding[0], want, atol=1e-6)
    kept_index = represent_items(bundle.factors, bundle.item_vocab, bundle.price_edges, [item], index)
    assert np.array_equal(kept_index.embedding, got.embedding)
    with pytest.raises(ValueError, match="features"):
        represent_items(bundle.factors, Vocabulary(["x"]), bundle.price_edges, [item])
    # nothing known: an empty row, a zero representation
    alien = CatalogItem(item_id="n-2", kind=ItemKind.PRODUCT, category="spaceships", tags=("warp",))
    alien_rows = feature_rows([alien], {"x": 0}, bundle.price_edges)
    assert alien_rows.rows.nnz == 0
    assert alien_rows.unknown == (("cat:spaceships", "kind:product", "tag:warp"),)


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (b @ a) / (np.linalg.norm(b, axis=-1) * np.linalg.norm(a) + 1e-12)


def test_a_new_item_scores_close_to_its_categorys_items(bundle: ModelBundle) -> None:
    scorer = StageScorer(bundle.factors, bundle.tables, bundle.blend_weights)
    products = [i for i, c in enumerate(bundle.catalog) if c.kind is ItemKind.PRODUCT]
    cats = sorted({bundle.catalog[i].category for i in products})
    for cat in cats:
        prices = [bundle.catalog[i].price or 0.0 for i in products if bundle.catalog[i].category == cat]
        new = CatalogItem(item_id=f"new-{cat}", category=cat, price=float(np.median(prices)))
        emb = represent_items(bundle.factors, bundle.item_vocab, bundle.price_edges, [new]).embedding[0]
        sims = {
            c: float(
                np.mean(_cos(emb, scorer.item_repr[[i for i in products if bundle.catalog[i].category == c]]))
            )
            for c in cats
        }
        assert max(sims, key=sims.__getitem__) == cat, sims


def test_the_catalog_extends_with_new_items() -> None:
    old = [
        CatalogItem(item_id="a", category="Tea", price=5.0),
        CatalogItem(item_id="b", kind=ItemKind.CONTENT, category="garden", stages=(Stage.AWARENESS,)),
    ]
    new = [
        CatalogItem(item_id="c", category="tea", price=9.0, in_stock=False),
        CatalogItem(item_id="d", category="Lamps", price=None, repeatable=True),
    ]
    base = CatalogColumns.build(old)
    got = base.extend(new)
    want = CatalogColumns.build(old + new)
    assert len(base) == 2  # unchanged
    assert got.index == want.index
    assert got.categories == want.categories
    for name in ("is_product", "in_stock", "repeatable", "category", "serves", "products_in_stock"):
        assert np.array_equal(getattr(got, name), getattr(want, name)), name
    assert np.array_equal(got.price, want.price, equal_nan=True)
    assert np.array_equal(got.specificity, want.specificity)
    assert got.category_by_row == want.category_by_row
    assert filter_mask(got, Filters(category="lamps"), ItemKind.PRODUCT).tolist() == [
        False,
        False,
        False,
        True,
    ]
    with pytest.raises(ValueError, match="'a'"):
        base.extend([CatalogItem(item_id="a")])
    with pytest.raises(ValueError, match="'e'"):
        base.extend([CatalogItem(item_id="e"), CatalogItem(item_id="e")])


def test_the_scorer_extends_with_new_items(bundle: ModelBundle) -> None:
    scorer = StageScorer(bundle.factors, bundle.tables, bundle.blend_weights)
    new = [
        CatalogItem(item_id="new-kettle", category="kitchen", price=35.0),
        CatalogItem(item_id="new-tent", category="outdoor", price=150.0, tags=("unknown-tag",)),
    ]
    rep = represent_items(bundle.factors, bundle.item_vocab, bundle.price_edges, new)
    ext = scorer.with_new_items(rep.features.rows)
    n = scorer.n_items
    assert ext.n_items == n + 2
    assert scorer.n_items == n
    assert np.array_equal(ext.item_repr[:n], scorer.item_repr)
    assert np.array_equal(ext.item_bias[:n], scorer.item_bias)
    assert np.allclose(ext.item_repr[n:], rep.embedding, atol=1e-6)
    assert np.allclose(ext.item_bias[n:], rep.bias, atol=1e-6)
    t = ext.tables
    assert t.n_items == n + 2
    assert t.complements.shape == (n + 2, n + 2)
    assert t.similar.shape == (n + 2, n + 2)
    for a in (t.popularity, t.trending, t.repeat_rate, t.known):
        assert not a[n:].any()
    assert (t.complements[n:].nnz, t.complements[:, n:].nnz, t.similar[n:].nnz) == (0, 0, 0)
    assert (t.complements[:n, :n] != bundle.tables.complements).nnz == 0
    assert not ext.crowd[:, n:].any()
    assert np.array_equal(ext.crowd[:, :n], scorer.crowd)
    # the data time and the trained items' categories stay; new items have none (no substitutes yet)
    assert t.as_of == bundle.tables.as_of == bundle.manifest.trained_until
    assert t.category is not None
    assert bundle.tables.category is not None
    assert np.array_equal(t.category, np.concatenate([bundle.tables.category, [-1, -1]]))
    # the new items are scored like the others: one GEMV over the extended representations
    user = np.random.default_rng(0).normal(size=(1, ext.item_repr.shape[1])).astype(np.float32)
    got = ext.factor_scores(user)[0, n:]
    assert np.allclose(got, rep.embedding @ user[0] + rep.bias, atol=1e-4)


def test_replaced_item_rows_match_a_rebuilt_feature_matrix(bundle: ModelBundle) -> None:
    items = np.array([0, 3, 7], np.int64)
    rows = feature_rows(
        [bundle.catalog[i] for i in items], bundle.item_vocab.index(), bundle.price_edges
    ).rows
    got = bundle.factors.with_replaced_item_rows(items, rows).item_features.toarray()
    want = bundle.factors.item_features.toarray()
    want[items] = rows.toarray()
    assert np.array_equal(got, want)
    assert isinstance(bundle.factors.with_item_rows(rows).item_features, sp.csr_matrix)
