"""Offline evaluation: every model trained on the training part and scored on the test part in one run.

Protocol (documented in the README):
- test visitors: those with at least one positive test event on an item known at training time
  (an item is known when it occurs in the training events);
- relevant: the distinct such items, binary relevance;
- every model ranks the same candidates (known products) and sees only training events;
- items seen in training are excluded from the lists only with ``exclude_seen``;
- metrics at k (``models.metrics``); segments ``cold`` (no training events), ``warm`` and each visitor's
  journey stage at the split time (lowercase stage name);
- intervals: a paired bootstrap over the test visitors (``models.bootstrap``: every model and metric
  resampled with the same draws, per segment within the segment's visitors) gives each mean a 95% interval
  and each difference ``stage_aware`` minus a baseline one too; a difference is significant when its
  interval excludes 0.

Cold items (``--cold-items FRACTION``, the LightFM paper's cold-start protocol): a seeded random share of
the products with training events is held out of training entirely (every training event on them is
removed; their catalog rows and features stay). The warm metrics above are then over the other items.
Among the held-out items only, each model that can score given items (``ItemScorer``) ranks them for
every test visitor with a positive test event on one of them: AUC (per visitor, ties count one half,
averaged) and precision at k, the relevant items being that visitor's positive test items among them.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import msgspec
import numpy as np
import scipy.sparse as sp
from rich.console import Group
from rich.text import Text
from scipy.stats import rankdata

from models.blend import BlendWeights
from models.bootstrap import LEVEL, RESAMPLES, excludes_zero, percentile_interval, resample_means
from models.dataset import EventLog
from models.domain import STAGES, EventType
from models.errors import InvalidInputError
from models.metrics import METRICS, MetricSummary, per_user, summarise
from models.ranking import Ranker
from models.request import RecommendedItem
from models.scoring import top_k
from models.weights import positive_codes
from training.loaders import LoadSummary
from training.stage_model import product_mask
from training.terminal import column_blocks

REFERENCE = "stage_aware"


class Difference(msgspec.Struct, frozen=True):
    """A difference of means (the reference model minus a baseline, over the same visitors) and its paired
    bootstrap 95% interval."""

    value: float
    ci95: tuple[float, float]


class Comparison(msgspec.Struct, frozen=True):
    """The reference minus one baseline: per metric, overall and per segment."""

    overall: dict[str, Difference]
    segments: dict[str, dict[str, Difference]]


class Bootstrap(msgspec.Struct, frozen=True):
    """How the intervals were drawn: test visitors resampled with replacement ``resamples`` times from
    ``seed``; percentile intervals at ``level``; differences are ``reference`` minus each baseline."""

    resamples: int
    seed: int
    level: float
    reference: str


class ModelResult(msgspec.Struct, frozen=True):
    overall: MetricSummary
    segments: dict[str, MetricSummary]
    fit_seconds: float
    recommend_seconds: float


@runtime_checkable
class ItemScorer(Protocol):
    """A ranker that can score given items (for the cold-item protocol)."""

    name: str

    def score_items(self, visitors: np.ndarray, now: float, items: np.ndarray) -> np.ndarray:
        """float32 [u, c]: the scores of ``items`` (int64 [c] item rows) for ``visitors`` (int32 [u]) at
        ``now``; higher ranks first."""
        ...


class ColdModelResult(msgspec.Struct, frozen=True):
    """One model among the held-out items: mean per-visitor AUC, precision at k, visitors scored."""

    auc: float
    precision: float
    users: int


class ColdItemsResult(msgspec.Struct, frozen=True):
    """The cold-item protocol's figures (see the module docstring).

    items: held-out products; removed_train_events: their training events, dropped; visitors: test
    visitors with a positive test event on a held-out item; positives: such distinct (visitor, item) pairs.
    """

    fraction: float
    seed: int
    items: int
    removed_train_events: int
    visitors: int
    positives: int
    k: int
    models: dict[str, ColdModelResult]


@dataclass(frozen=True)
class ColdItems:
    """Which items ``hold_out_items`` held out (int64 rows, sorted) and how many training events went."""

    items: np.ndarray
    fraction: float
    seed: int
    removed_train_events: int


class SplitSummary(msgspec.Struct, frozen=True):
    """One side of the split: its first and last event (ISO-8601 UTC dates, "" without events), the
    distinct visitors and items with events in it, and its events."""

    start: str = ""
    end: str = ""
    visitors: int = 0
    items: int = 0
    events: int = 0


class DataSummary(msgspec.Struct, frozen=True):
    """What the models were compared on: the training and test parts, the test visitors (those scored),
    the rows read and the rows the readers' rules filtered, by rule (summed over ``EvalResult.inputs``)."""

    train: SplitSummary = SplitSummary()
    test: SplitSummary = SplitSummary()
    test_visitors: int = 0
    rows: int = 0
    filtered: dict[str, int] = {}


class ExampleItem(msgspec.Struct, frozen=True):
    """One item of an example list: its id and title, score, source and reason (as the service gives
    them, ``models.explain``) and whether it is one of the visitor's relevant test items."""

    item_id: str
    title: str
    score: float
    source: str
    reason: str
    relevant: bool


class ExampleList(msgspec.Struct, frozen=True):
    """The reference model's list for one test visitor: their stage at the split, their training events,
    how many relevant test items they have, and the list's first items."""

    visitor_id: str
    stage: str
    train_events: int
    relevant_items: int
    items: list[ExampleItem]


@runtime_checkable
class ListExplainer(Protocol):
    """A ranker that can explain its lists and show its fitted blend (the stage-aware model)."""

    name: str

    def explain_lists(
        self, visitors: np.ndarray, now: float, k: int, exclude_seen: bool
    ) -> list[list[RecommendedItem]]:
        """Per visitor (int32 [u]), the top ``k`` with scores, sources and reasons."""
        ...

    def fitted_blend(self) -> BlendWeights:
        """The blend weights per stage the fit learned."""
        ...


EXAMPLES_PER_STAGE = 2
EXAMPLE_ITEMS = 5


class EvalResult(msgspec.Struct, frozen=True):
    """What ``journeyrec evaluate --json`` writes.

    transitions[a][b]: test visitors in stage a at the split and in stage b at the end of the test window.
    inputs: what was read (``training.loaders.LoadSummary``): "events" for a time split, else "train" and
    "test".
    differences[baseline]: the reference (``bootstrap.reference``) minus that baseline.
    configuration: the settings of the run by model (``stage_aware``: the model configuration file's
    format, ``training.model_config``; a baseline with hyperparameters of its own: those).
    data: the training and test parts and the rows filtered (``DataSummary``).
    blend: the reference model's fitted blend weights per stage (None when it was not run).
    examples[stage]: the reference model's lists for a few test visitors in that stage at the split
    (``EXAMPLES_PER_STAGE`` drawn with the bootstrap's seed, the first ``EXAMPLE_ITEMS`` items of each).
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
    cold_items: ColdItemsResult | None = None
    bootstrap: Bootstrap | None = None
    differences: dict[str, Comparison] = {}
    configuration: dict[str, Any] = {}
    data: DataSummary | None = None
    blend: BlendWeights | None = None
    examples: dict[str, list[ExampleList]] = {}


def _iso_day(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).date().isoformat()


def split_summary(log: EventLog) -> SplitSummary:
    """``SplitSummary`` of one part of the split."""
    if log.n_events == 0:
        return SplitSummary()
    return SplitSummary(
        start=_iso_day(float(log.ts.min())),
        end=_iso_day(float(log.ts.max())),
        visitors=len(np.unique(log.visitor)),
        items=len(np.unique(log.item)),
        events=log.n_events,
    )


def data_summary(
    train: EventLog, test: EventLog, test_visitors: int, inputs: dict[str, LoadSummary] | None = None
) -> DataSummary:
    """The ``DataSummary`` of a run; ``inputs``: what the readers read (their filtered rows are summed)."""
    filtered: dict[str, int] = {}
    for s in (inputs or {}).values():
        for reason, n in s.filtered.items():
            filtered[reason] = filtered.get(reason, 0) + n
    return DataSummary(
        train=split_summary(train),
        test=split_summary(test),
        test_visitors=test_visitors,
        rows=sum(s.rows for s in (inputs or {}).values()),
        filtered=filtered,
    )


def example_lists(
    ranker: ListExplainer,
    train: EventLog,
    visitors: np.ndarray,
    relevant: sp.csr_matrix,
    stage_of: np.ndarray,
    *,
    now: float,
    exclude_seen: bool,
    seed: int,
    per_stage: int = EXAMPLES_PER_STAGE,
    k: int = EXAMPLE_ITEMS,
) -> dict[str, list[ExampleList]]:
    """Stage name -> the explained lists of ``per_stage`` test visitors (``visitors`` int32 [u], rows of
    ``relevant``) in that stage at the split, drawn with ``seed``; stages without test visitors are left
    out."""
    rng = np.random.default_rng(seed)
    st = stage_of[visitors]
    rows: dict[str, np.ndarray] = {}
    for s in STAGES:
        pool = np.flatnonzero(st == s.index)
        if len(pool):
            rows[s.value] = np.sort(rng.choice(pool, min(per_stage, len(pool)), replace=False))
    chosen = np.concatenate(list(rows.values())) if rows else np.zeros(0, np.int64)
    lists = ranker.explain_lists(visitors[chosen], now, k, exclude_seen)
    train_events = np.bincount(train.visitor, minlength=train.n_visitors)
    index = {c.item_id: i for i, c in enumerate(train.catalog)}
    out: dict[str, list[ExampleList]] = {}
    at = 0
    for stage, picked in rows.items():
        out[stage] = []
        for row in picked:
            rel = set(relevant[int(row)].indices.tolist())
            v = int(visitors[row])
            items = []
            for item in lists[at]:
                i = index[item.item_id]
                items.append(
                    ExampleItem(
                        item_id=item.item_id,
                        title=train.catalog[i].title or "",
                        score=round(item.score, 4),
                        source=item.source.value,
                        reason=item.reason,
                        relevant=i in rel,
                    )
                )
            out[stage].append(
                ExampleList(
                    visitor_id=train.visitor_ids[v],
                    stage=stage,
                    train_events=int(train_events[v]),
                    relevant_items=len(rel),
                    items=items,
                )
            )
            at += 1
    return out


def hold_out_items(train: EventLog, fraction: float, seed: int) -> tuple[EventLog, ColdItems]:
    """(``train`` without any event on the held-out items, which items): a ``fraction`` of the products
    with training events, drawn with ``seed``. The catalog (and so every item's features) is unchanged."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInputError(f"--cold-items: expected a fraction between 0 and 1, got {fraction}")
    pool = np.flatnonzero(product_mask(train) & (np.bincount(train.item, minlength=train.n_items) > 0))
    n = round(fraction * len(pool))
    if n < 2 or n == len(pool):
        raise InvalidInputError(
            f"--cold-items {fraction}: holds out {n} of the {len(pool)} products with training events;"
            " at least 2 must be held out and 1 kept"
        )
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.choice(pool, n, replace=False)).astype(np.int64)
    drop = np.isin(train.item, cold)
    return train.take(~drop), ColdItems(cold, fraction, seed, int(drop.sum()))


def cold_item_targets(
    test: EventLog, cold: np.ndarray, positive: frozenset[EventType]
) -> tuple[np.ndarray, sp.csr_matrix]:
    """(int32 [u] test visitors with a positive test event on a ``cold`` item (int64 [c] sorted), csr
    float32 [u, c] their relevant cold items as columns of ``cold``)."""
    col = np.full(test.n_items, -1, np.int64)
    col[cold] = np.arange(len(cold))
    pos = np.isin(test.event, positive_codes(positive)) & (col[test.item] >= 0)
    visitors = np.unique(test.visitor[pos]).astype(np.int32)
    row = np.searchsorted(visitors, test.visitor[pos])
    rel = sp.csr_matrix(
        (np.ones(int(pos.sum()), np.float32), (row, col[test.item[pos]])), shape=(len(visitors), len(cold))
    )
    rel.sum_duplicates()
    rel.data[:] = 1.0
    return visitors, rel


def auc_per_user(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """float64 [u]: per row of scores float [u, c], the share of (relevant, non-relevant) pairs (relevant
    bool [u, c]) the scores order correctly, ties counting one half (Mann-Whitney U from average ranks);
    NaN for a row without relevant or without non-relevant items."""
    ranks = rankdata(scores, method="average", axis=1) if scores.size else np.zeros(scores.shape)
    p = relevant.sum(axis=1).astype(np.float64)
    q = relevant.shape[1] - p
    u = np.where(relevant, ranks, 0.0).sum(axis=1) - p * (p + 1) / 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((p > 0) & (q > 0), u / (p * q), np.nan)


def precision_per_user(scores: np.ndarray, relevant: np.ndarray, k: int) -> np.ndarray:
    """float64 [u]: the share of each row's top ``k`` by score (``top_k``'s order) that is relevant."""
    top = top_k(np.asarray(scores, np.float32), k)
    hit = np.take_along_axis(relevant, np.maximum(top, 0), axis=1) & (top >= 0)
    return hit.sum(axis=1) / k


def evaluate_cold_items(
    rankers: Sequence[Ranker],
    test: EventLog,
    cold: ColdItems,
    *,
    k: int,
    now: float,
    positive: frozenset[EventType],
) -> ColdItemsResult:
    """Score the fitted ``rankers`` that are ``ItemScorer``s among the ``cold`` items only."""
    visitors, rel = cold_item_targets(test, cold.items, positive)
    if len(visitors) == 0:
        raise InvalidInputError("--cold-items: no test visitor has a positive test event on a held-out item")
    relevant = rel.toarray() > 0
    models: dict[str, ColdModelResult] = {}
    for r in rankers:
        if not isinstance(r, ItemScorer):
            continue
        scores = r.score_items(visitors, now, cold.items)
        auc = auc_per_user(scores, relevant)
        ok = ~np.isnan(auc)
        models[r.name] = ColdModelResult(
            auc=round(float(auc[ok].mean()) if ok.any() else float("nan"), 4),
            precision=round(float(precision_per_user(scores, relevant, k).mean()), 4),
            users=int(ok.sum()),
        )
    return ColdItemsResult(
        fraction=cold.fraction,
        seed=cold.seed,
        items=len(cold.items),
        removed_train_events=cold.removed_train_events,
        visitors=len(visitors),
        positives=int(rel.nnz),
        k=k,
        models=models,
    )


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


def _interval(lo_hi: np.ndarray) -> tuple[float, float]:
    return (round(float(lo_hi[0]), 6), round(float(lo_hi[1]), 6))


def bootstrap_intervals(
    per_visitor: dict[str, np.ndarray],
    groups: dict[str, np.ndarray],
    *,
    reference: str,
    resamples: int,
    seed: int,
) -> tuple[dict[str, dict[str, dict[str, tuple[float, float]]]], dict[str, dict[str, dict[str, Difference]]]]:
    """Paired bootstrap intervals (``models.bootstrap``) of every model's metric means and of ``reference``
    minus every other model, within each group of visitors.

    per_visitor: model -> float64 [u, len(METRICS)] per-visitor metrics (columns in ``METRICS`` order);
    groups: group name -> the group's rows (int [m] or bool [u]). Returns (model -> group -> metric ->
    (lo, hi), baseline -> group -> metric -> ``Difference``); no differences without ``reference``.
    """
    names = list(per_visitor)
    nm = len(METRICS)
    cis: dict[str, dict[str, dict[str, tuple[float, float]]]] = {n: {} for n in names}
    diffs: dict[str, dict[str, dict[str, Difference]]] = {n: {} for n in names if n != reference}
    if reference not in per_visitor:
        diffs = {}
    for g, rows in groups.items():
        table = np.concatenate([per_visitor[n][rows] for n in names], axis=1)
        means = resample_means(table, resamples, seed)
        ci = percentile_interval(means)
        for i, n in enumerate(names):
            cis[n][g] = {m: _interval(ci[i * nm + j]) for j, m in enumerate(METRICS)}
        if not diffs:
            continue
        r = names.index(reference)
        ref_means, ref_point = means[:, r * nm : (r + 1) * nm], table[:, r * nm : (r + 1) * nm].mean(axis=0)
        for i, n in enumerate(names):
            if n == reference:
                continue
            d = ref_means - means[:, i * nm : (i + 1) * nm]
            point = ref_point - table[:, i * nm : (i + 1) * nm].mean(axis=0)
            d_ci = percentile_interval(d)
            diffs[n][g] = {
                m: Difference(round(float(point[j]), 6), _interval(d_ci[j])) for j, m in enumerate(METRICS)
            }
    return cis, diffs


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
    cold: ColdItems | None = None,
    resamples: int = RESAMPLES,
    seed: int = 0,
    reference: str = REFERENCE,
    inputs: dict[str, LoadSummary] | None = None,
) -> EvalResult:
    """Fit each ranker on ``train``, rank for the test visitors at ``now`` and score the lists.

    stage_of / stage_at_end: int8[n_visitors] stage index at the split and at the end of the test window.
    cold: the items ``hold_out_items`` took out of ``train``, scored among themselves after fitting.
    resamples: bootstrap resamples of the test visitors (drawn from ``seed``); 0: no intervals.
    reference: the model every other is compared with (differences: reference minus the other); when it
    can explain its lists (``ListExplainer``), its fitted blend and example lists per stage are kept.
    inputs: what the readers read, kept in the result with the rows they filtered in its data summary.
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
    per_visitor: dict[str, np.ndarray] = {}
    for r in rankers:
        say(f"{r.name}: fitting on {train.n_events:,} events")
        t0 = time.perf_counter()
        r.fit(train)
        t1 = time.perf_counter()
        say(f"{r.name}: ranking for {len(visitors):,} test visitors")
        recs = r.recommend(visitors, now, k, exclude_seen)
        t2 = time.perf_counter()
        values = per_user(recs, relevant)
        per_visitor[r.name] = np.stack([values[m] for m in METRICS], axis=1)
        results[r.name] = ModelResult(
            overall=summarise(values, recs, np.arange(len(visitors)), n_candidates),
            segments={name: summarise(values, recs, m, n_candidates) for name, m in segments.items()},
            fit_seconds=round(t1 - t0, 2),
            recommend_seconds=round(t2 - t1, 2),
        )
    boot, differences = None, {}
    if resamples > 0 and results:
        say(f"bootstrap: {resamples:,} resamples of {len(visitors):,} test visitors")
        groups = {"": np.arange(len(visitors)), **segments}
        cis, diffs = bootstrap_intervals(
            per_visitor, groups, reference=reference, resamples=resamples, seed=seed
        )
        results = {name: _with_intervals(r, cis[name]) for name, r in results.items()}
        differences = {
            name: Comparison(overall=d[""], segments={g: v for g, v in d.items() if g})
            for name, d in diffs.items()
        }
        boot = Bootstrap(resamples=resamples, seed=seed, level=LEVEL, reference=reference)
    blend, examples = None, {}
    explainer = next((r for r in rankers if r.name == reference and isinstance(r, ListExplainer)), None)
    if explainer is not None:
        say(f"{reference}: explaining example lists")
        blend = explainer.fitted_blend()
        examples = example_lists(
            explainer, train, visitors, relevant, stage_of, now=now, exclude_seen=exclude_seen, seed=seed
        )
    cold_result = None
    if cold is not None:
        say(f"scoring {len(cold.items):,} held-out items")
        cold_result = evaluate_cold_items(rankers, test, cold, k=k, now=now, positive=positive)
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
        cold_items=cold_result,
        bootstrap=boot,
        differences=differences,
        inputs=inputs or {},
        data=data_summary(train, test, len(visitors), inputs),
        blend=blend,
        examples=examples,
    )


def _with_intervals(r: ModelResult, cis: dict[str, dict[str, tuple[float, float]]]) -> ModelResult:
    """``r`` with the intervals of its overall figures (group "") and of each segment's."""
    return msgspec.structs.replace(
        r,
        overall=msgspec.structs.replace(r.overall, ci95=cis[""]),
        segments={s: msgspec.structs.replace(m, ci95=cis[s]) for s, m in r.segments.items()},
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
    if all(r.overall.ci95 for r in models.values()):  # the interval under the ndcg row
        at = 2 + METRICS.index("ndcg")
        labels.insert(at, ["  95% ci"])
        for name, r in models.items():
            lo, hi = r.overall.ci95["ndcg"]
            overall[name].insert(at, f"{lo:.4f}-{hi:.4f}")
    segments = list(next(iter(models.values())).segments)
    visitors = [f"{next(iter(models.values())).segments[s].users:,}" for s in segments]
    by_segment = {name: [f"{r.segments[s].ndcg:.4f}" for s in segments] for name, r in models.items()}
    title = f"{result.dataset}: {result.split}, k={k}, exclude_seen={result.exclude_seen}"
    parts: list[Text | Group] = []
    c = result.cold_items
    if c is not None and c.models:
        cold_title = (
            f"cold items: {c.items:,} products ({c.fraction:g}) held out of training, ranked among"
            f" themselves for {c.visitors:,} test visitors"
        )
        cold_cols = {
            name: [f"{r.auc:.4f}", f"{r.precision:.4f}", f"{r.users:,}"] for name, r in c.models.items()
        }
        labels_cold = [["auc"], [f"precision@{c.k}"], ["users"]]
        parts = [Text(""), column_blocks(cold_title, ["metric"], labels_cold, cold_cols, width)]
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
        *difference_blocks(result, width),
        *parts,
    )


def _marked(d: Difference) -> str:
    """``+0.0123*`` when the interval excludes 0, else ``+0.0123 ``."""
    return f"{d.value:+.4f}{'*' if excludes_zero(d.ci95) else ' '}"


def difference_blocks(result: EvalResult, width: int) -> list[Text | Group]:
    """The reference minus each baseline: every metric with its interval, then ndcg@k per segment; a
    ``*`` marks a difference whose interval excludes 0. Empty without intervals."""
    b, diffs = result.bootstrap, result.differences
    if b is None or not diffs:
        return []
    k = result.k
    labels: list[list[str]] = []
    for m in METRICS:
        labels += [[f"{m}@{k}"], ["  95% ci"]]
    columns = {
        name: [
            cell
            for m in METRICS
            for cell in (
                _marked(c.overall[m]),
                f"{c.overall[m].ci95[0]:+.4f}..{c.overall[m].ci95[1]:+.4f}",
            )
        ]
        for name, c in diffs.items()
    }
    title = (
        f"{b.reference} minus each baseline; 95% paired bootstrap interval over test visitors"
        f" ({b.resamples:,} resamples); * the interval excludes 0"
    )
    first = next(iter(diffs.values()))
    segments = list(first.segments)
    users = {s: result.models[b.reference].segments[s].users for s in segments}
    by_segment = {name: [_marked(c.segments[s]["ndcg"]) for s in segments] for name, c in diffs.items()}
    return [
        Text(""),
        column_blocks(title, ["metric"], labels, columns, width),
        Text(""),
        column_blocks(
            f"{b.reference} minus each baseline, ndcg@{k} by segment (* the interval excludes 0)",
            ["segment", "visitors"],
            [[s, f"{users[s]:,}"] for s in segments],
            by_segment,
            width,
        ),
    ]
