"""Offline evaluation: every model trained on the training part and scored on the test part in one run.

Protocol (documented in the README):
- test visitors: those with at least one positive test event on an item known at training time
  (an item is known when it occurs in the training events);
- relevant: the distinct such items, binary relevance;
- every model ranks the same candidates (known products) and sees only training events;
- items seen in training are excluded from the lists only with ``exclude_seen``;
- metrics at k (``models.metrics``); segments ``cold`` (no training events), ``warm`` and each visitor's
  journey stage at the split time (lowercase stage name).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import numpy as np
import scipy.sparse as sp
from rich.console import Group
from rich.text import Text

from models.dataset import EventLog
from models.domain import STAGES, EventType
from models.errors import InvalidInputError
from models.metrics import METRICS, MetricSummary, per_user, summarise
from models.ranking import Ranker
from models.weights import positive_codes
from training.loaders import LoadSummary
from training.stage_model import product_mask
from training.terminal import column_blocks


class ModelResult(msgspec.Struct, frozen=True):
    overall: MetricSummary
    segments: dict[str, MetricSummary]
    fit_seconds: float
    recommend_seconds: float


class EvalResult(msgspec.Struct, frozen=True):
    """What ``journeyrec evaluate --json`` writes.

    transitions[a][b]: test visitors in stage a at the split and in stage b at the end of the test window.
    inputs: what was read (``training.loaders.LoadSummary``): "events" for a time split, else "train" and
    "test".
    """

    dataset: str
    k: int
    split: str
    models: dict[str, ModelResult]
    exclude_seen: bool
    positive: list[str]
    train_events: int
    test_events: int
    candidates: int
    transitions: dict[str, dict[str, int]]
    inputs: dict[str, LoadSummary] = {}


def split_at(log: EventLog, at: float) -> tuple[EventLog, EventLog]:
    """(events strictly before ``at``, events at or after it), sharing the log's id space."""
    return log.take(log.ts < at), log.take(log.ts >= at)


def relevant_targets(
    train: EventLog, test: EventLog, positive: frozenset[EventType]
) -> tuple[np.ndarray, sp.csr_matrix]:
    """(int32[u] test visitors, csr float32 [u, n_items] their relevant items) under the protocol above."""
    known = np.zeros(train.n_items, dtype=bool)
    known[np.unique(train.item)] = True
    pos = np.isin(test.event, positive_codes(positive)) & known[test.item]
    visitors = np.unique(test.visitor[pos]).astype(np.int32)
    row_of = np.full(train.n_visitors, -1, dtype=np.int64)
    row_of[visitors] = np.arange(len(visitors))
    rel = sp.csr_matrix(
        (np.ones(int(pos.sum()), np.float32), (row_of[test.visitor[pos]], test.item[pos])),
        shape=(len(visitors), train.n_items),
    )
    rel.sum_duplicates()
    rel.data[:] = 1.0
    return visitors, rel


def segments_of(train: EventLog, visitors: np.ndarray, stage_of: np.ndarray) -> dict[str, np.ndarray]:
    """Segment name -> bool[u] over ``visitors``: cold, warm and each stage at the split (non-empty only)."""
    has_train = np.zeros(train.n_visitors, dtype=bool)
    has_train[np.unique(train.visitor)] = True
    warm = has_train[visitors]
    out = {"cold": ~warm, "warm": warm}
    st = stage_of[visitors]
    out.update({s.value: st == s.index for s in STAGES})
    return {name: m for name, m in out.items() if m.any()}


def transitions(
    stage_of: np.ndarray, stage_at_end: np.ndarray, visitors: np.ndarray
) -> dict[str, dict[str, int]]:
    counts = np.zeros((len(STAGES), len(STAGES)), dtype=np.int64)
    np.add.at(counts, (stage_of[visitors], stage_at_end[visitors]), 1)
    return {a.value: {b.value: int(counts[a.index, b.index]) for b in STAGES} for a in STAGES}


def evaluate(
    rankers: Sequence[Ranker],
    train: EventLog,
    test: EventLog,
    *,
    k: int,
    now: float,
    exclude_seen: bool,
    positive: frozenset[EventType],
    dataset: str,
    split: str,
    stage_of: np.ndarray,
    stage_at_end: np.ndarray,
    progress: Callable[[str], None] | None = None,
) -> EvalResult:
    """Fit each ranker on ``train``, rank for the test visitors at ``now`` and score the lists.

    stage_of / stage_at_end: int8[n_visitors] stage index at the split and at the end of the test window.
    """
    say = progress or (lambda _m: None)
    visitors, relevant = relevant_targets(train, test, positive)
    if len(visitors) == 0:
        raise InvalidInputError("no test visitor has a positive test event on an item known at training time")
    known = np.zeros(train.n_items, dtype=bool)
    known[np.unique(train.item)] = True
    n_candidates = int((product_mask(train) & known).sum())
    segments = segments_of(train, visitors, stage_of)
    results: dict[str, ModelResult] = {}
    for r in rankers:
        say(f"{r.name}: fitting on {train.n_events:,} events")
        t0 = time.perf_counter()
        r.fit(train)
        t1 = time.perf_counter()
        say(f"{r.name}: ranking for {len(visitors):,} test visitors")
        recs = r.recommend(visitors, now, k, exclude_seen)
        t2 = time.perf_counter()
        values = per_user(recs, relevant)
        results[r.name] = ModelResult(
            overall=summarise(values, recs, np.arange(len(visitors)), n_candidates),
            segments={name: summarise(values, recs, m, n_candidates) for name, m in segments.items()},
            fit_seconds=round(t1 - t0, 2),
            recommend_seconds=round(t2 - t1, 2),
        )
    return EvalResult(
        dataset=dataset,
        k=k,
        split=split,
        models=results,
        exclude_seen=exclude_seen,
        positive=sorted(e.value for e in positive),
        train_events=train.n_events,
        test_events=test.n_events,
        candidates=n_candidates,
        transitions=transitions(stage_of, stage_at_end, visitors),
    )


def format_table(result: EvalResult, width: int = 100) -> Any:
    """A rich renderable fitting ``width`` terminal columns: per model (one column each), the overall
    metrics, then NDCG@k per segment; models that do not fit beside each other go to a further table."""
    k = result.k
    models = result.models
    best = max(r.overall.ndcg for r in models.values())
    measures = [f"{m}@{k}" for m in METRICS]
    overall: dict[str, list[str]] = {}
    for name, r in models.items():
        o = r.overall
        cells = [f"{getattr(o, m):.4f}" for m in METRICS]
        if o.ndcg == best:
            cells[METRICS.index("ndcg")] = f"[bold]{cells[METRICS.index('ndcg')]}[/]"
        overall[name] = [f"{o.users:,}", *cells, f"{o.coverage:.3f}", f"{r.fit_seconds:.1f}"]
    labels = [[m] for m in ("users", *measures, "coverage", "fit s")]
    segments = list(next(iter(models.values())).segments)
    visitors = [f"{next(iter(models.values())).segments[s].users:,}" for s in segments]
    by_segment = {name: [f"{r.segments[s].ndcg:.4f}" for s in segments] for name, r in models.items()}
    title = f"{result.dataset}: {result.split}, k={k}, exclude_seen={result.exclude_seen}"
    return Group(
        column_blocks(title, ["metric"], labels, overall, width),
        Text(""),
        column_blocks(
            f"ndcg@{k} by segment",
            ["segment", "visitors"],
            list(zip(segments, visitors, strict=True)),
            by_segment,
            width,
        ),
    )
