"""Feature vocabularies and sparse feature matrices for the hybrid factorisation model.

Item rows: identity + category + kind + price band + tags. User rows: identity + journey stage + context
tokens (country, demographics, channel). Rows are L1-normalised so a row's embedding is a weighted mean of
its feature embeddings, which keeps items with many tags on the same scale as items with few.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np
import scipy.sparse as sp

from models.domain import STAGES, CatalogItem, Stage
from models.factors import FactorModel


class Vocabulary(msgspec.Struct, frozen=True):
    """Ordered feature names; index in ``names`` = row in the embedding tables."""

    names: list[str]

    def index(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}


def price_band_edges(prices: np.ndarray, bands: int = 8) -> np.ndarray:
    """float64[bands-1] quantile edges of the known (finite, > 0) prices on a log scale."""
    p = prices[np.isfinite(prices) & (prices > 0)]
    if len(p) == 0:
        return np.zeros(0)
    return np.unique(np.quantile(np.log(p), np.linspace(0, 1, bands + 1)[1:-1]))


def item_tokens(item: CatalogItem, edges: np.ndarray) -> list[str]:
    """Non-identity feature tokens of one catalog item."""
    toks = [f"kind:{item.kind.value}"]
    if item.category:
        toks.append(f"cat:{item.category.lower()}")
    if item.price is not None and item.price > 0 and len(edges):
        toks.append(f"price:{int(np.searchsorted(edges, np.log(item.price)))}")
    toks.extend(f"tag:{t.lower()}" for t in item.tags)
    toks.extend(f"serves:{s.value}" for s in item.stages)
    return toks


def build_item_vocabulary(
    catalog: Sequence[CatalogItem], edges: np.ndarray, min_count: int = 2
) -> Vocabulary:
    """Identity features for every item, then every shared token used by at least ``min_count`` items."""
    counts = Counter(t for it in catalog for t in set(item_tokens(it, edges)))
    shared = sorted(t for t, c in counts.items() if c >= min_count)
    return Vocabulary([*(f"id:{it.item_id}" for it in catalog), *shared])


def item_feature_matrix(
    catalog: Sequence[CatalogItem], vocab: Vocabulary, edges: np.ndarray, identity_weight: float = 1.0
) -> sp.csr_matrix:
    """csr float32 [n_items, len(vocab)]: identity weight ``identity_weight``, the shared tokens share
    weight 1, then every row is L1-normalised."""
    idx = vocab.index()
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, it in enumerate(catalog):
        toks = [idx[t] for t in set(item_tokens(it, edges)) if t in idx]
        rows.append(r)
        cols.append(idx[f"id:{it.item_id}"])
        vals.append(identity_weight)
        rows.extend([r] * len(toks))
        cols.extend(toks)
        vals.extend([1.0 / len(toks)] * len(toks) if toks else [])
    return l1_rows(
        sp.csr_matrix((vals, (rows, cols)), shape=(len(catalog), len(vocab.names)), dtype=np.float32)
    )


@dataclass(frozen=True)
class FeatureRows:
    """Items described by their features alone (no identity feature): what a model that never saw them
    knows about them.

    rows     csr float32 [m, n_item_features]: each item's known tokens share weight 1 (L1-normalised,
             as the shared part of a row of ``item_feature_matrix``); an item with no known token has an
             empty row (representation zero, bias zero)
    unknown  per item, its tokens the vocabulary does not have (dropped), sorted
    """

    rows: sp.csr_matrix
    unknown: tuple[tuple[str, ...], ...]


def feature_rows(items: Sequence[CatalogItem], vocab_index: dict[str, int], edges: np.ndarray) -> FeatureRows:
    """``item_feature_matrix`` rows of ``items`` without the identity feature, built the same way (the
    same tokens and price bands from ``edges``, the tokens sharing one unit of weight); tokens unknown to
    ``vocab_index`` are dropped and reported. One pass over the items' few tokens (off the request path:
    an item's features change when the catalog does, not per request)."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    unknown: list[tuple[str, ...]] = []
    for r, it in enumerate(items):
        toks = set(item_tokens(it, edges))
        known = sorted(idx for t in toks if (idx := vocab_index.get(t)) is not None)
        unknown.append(tuple(sorted(t for t in toks if t not in vocab_index)))
        rows.extend([r] * len(known))
        cols.extend(known)
        vals.extend([1.0 / max(len(known), 1)] * len(known))
    m = sp.csr_matrix(
        (np.asarray(vals, np.float32), (np.asarray(rows, np.int64), np.asarray(cols, np.int64))),
        shape=(len(items), len(vocab_index)),
        dtype=np.float32,
    )
    return FeatureRows(l1_rows(m), tuple(unknown))


@dataclass(frozen=True)
class ItemRepresentations:
    """Items' parameters from their features: bias float32 [m], embedding float32 [m, d], and the
    ``FeatureRows`` they come from (``rows`` are what ``FactorModel.item_features`` holds for them)."""

    bias: np.ndarray
    embedding: np.ndarray
    features: FeatureRows


def represent_items(
    factors: FactorModel,
    vocab: Vocabulary,
    edges: np.ndarray,
    items: Sequence[CatalogItem],
    index: dict[str, int] | None = None,
) -> ItemRepresentations:
    """The representation a trained model gives ``items`` from their features alone: a LightFM item is
    the weighted sum of its feature embeddings, so an item the model never saw (or one whose own
    identity embedding never learned, such as an item without events) is scored through the embeddings
    of its category, kind, price band, tags and stages. ``edges`` are the model's price band edges
    (``ModelBundle.price_edges``); ``index`` is ``vocab.index()`` when the caller keeps one (building it
    walks every feature name). One sparse product for the whole batch."""
    if len(vocab.names) != factors.item_emb.shape[0]:
        raise ValueError(
            f"the vocabulary has {len(vocab.names)} features, the model {factors.item_emb.shape[0]}"
        )
    rows = feature_rows(items, vocab.index() if index is None else index, edges)
    bias, emb = factors.represent(rows.rows)
    return ItemRepresentations(bias, emb, rows)


def l1_rows(m: sp.csr_matrix) -> sp.csr_matrix:
    """Divide each row by its sum of absolute values (empty rows stay empty)."""
    m = sp.csr_matrix(m, dtype=np.float32)
    m.sum_duplicates()
    counts = np.diff(m.indptr)
    sums = np.add.reduceat(np.abs(m.data), m.indptr[:-1][counts > 0]) if m.nnz else np.zeros(0)
    data = m.data / np.repeat(np.maximum(sums, 1e-12), counts[counts > 0]).astype(np.float32)
    return sp.csr_matrix((data.astype(np.float32), m.indices, m.indptr), shape=m.shape)


def stage_token(stage: Stage) -> str:
    return f"stage:{stage.value}"


def build_user_vocabulary(visitor_ids: Sequence[str], context_tokens: Sequence[Sequence[str]]) -> Vocabulary:
    """Identity features for every visitor, the five stages, then every context token seen."""
    ctx = sorted({t for toks in context_tokens for t in toks})
    return Vocabulary([*(f"visitor:{v}" for v in visitor_ids), *(stage_token(s) for s in STAGES), *ctx])


def _user_row(
    vocab_index: dict[str, int], visitor: str | None, stage: Stage, tokens: Sequence[str]
) -> tuple[list[int], list[float]]:
    """(columns, weights) of one user row before normalisation: stage and context share one unit of weight,
    the identity (when known) gets another, so the person stays the main part of a known visitor's
    representation however many context tokens there are."""
    shared = [vocab_index[n] for n in (stage_token(stage), *tokens) if n in vocab_index]
    cols, vals = shared, [1.0 / len(shared)] * len(shared)
    ident = vocab_index.get(f"visitor:{visitor}") if visitor is not None else None
    if ident is not None:
        cols, vals = [*cols, ident], [*vals, 1.0]
    return cols, vals


def user_feature_rows(
    vocab_index: dict[str, int],
    visitors: Sequence[str | None],
    stages: Sequence[Stage],
    context_tokens: Sequence[Sequence[str]],
    n_features: int,
) -> sp.csr_matrix:
    """csr float32 [u, n_features]: one row per (visitor, stage, context); unknown tokens are skipped,
    ``None`` visitors (cold) get no identity feature. Rows are L1-normalised: a known visitor's identity
    weighs 1/2, stage and context share the other half."""
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []
    for r, (v, s, toks) in enumerate(zip(visitors, stages, context_tokens, strict=True)):
        c, w = _user_row(vocab_index, v, s, toks)
        rows.extend([r] * len(c))
        cols.extend(c)
        vals.extend(w)
    m = sp.csr_matrix((np.asarray(vals, np.float32), (rows, cols)), shape=(len(visitors), n_features))
    return l1_rows(m)


def user_feature_row(
    vocab_index: dict[str, int], visitor: str | None, stage: Stage, tokens: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """One row of ``user_feature_rows`` as (columns int64 [f] sorted, weights float32 [f]): the request
    path needs only these to weigh the embedding rows, not a sparse matrix."""
    cols, vals = _user_row(vocab_index, visitor, stage, tokens)
    order = np.argsort(cols)
    w = np.asarray(vals, np.float64)[order]
    return np.asarray(cols, np.int64)[order], (w / max(float(w.sum()), 1e-12)).astype(np.float32)
