"""Experiments: the document, deterministic assignment, and the statistics of a result.

The document
    ``Experiment``: an id, the placements it applies to, the share of traffic it takes, a salt, its
    variants with weights (exactly one is the control), its own holdout share, and its state
    (``draft`` -> ``running`` -> ``stopped``). A ``Variant`` says what a list is made from: a model
    version, the blend (``stage_aware``, or ``stage_agnostic``: one weight vector for every stage), a
    merchandising rules version, or a plain non-personalised strategy (``popular``, ``trending``).
    Anything a variant leaves unset is what the service serves by default.

Assignment (``assign``)
    One blake2b digest of ``salt``, the experiment id and the person id (never Python's ``hash``, which is
    salted per process), cut into three independent bucket numbers in ``[0, BUCKETS)``: the first decides
    the holdout (bucket < holdout x BUCKETS), the second the traffic (bucket < traffic x BUCKETS), the
    third the variant (cumulative weights scaled to BUCKETS). Independent numbers mean that ramping the
    traffic up only adds people and never moves anyone between variants, and that the holdout is the same
    people whatever the traffic. The answer is a pure function of its arguments: the same on every worker
    and after a restart. The weights of a running experiment cannot change (``service.api.experiments``
    refuses a replace while it runs), so a person keeps their variant for its whole life.

Statistics (``results``), per variant and per stage, from per-visitor sums (the unit of assignment is the
visitor, so the unit of analysis is too): with n visitors, S the sum of a per-visitor value and Q the sum
of its squares,

- a mean metric (add-to-cart rate = mean of ``carted``, conversion rate = mean of ``converted``, revenue
  per visitor = mean of ``revenue_all``): m = S / n, sample variance s^2 = (Q - S^2 / n) / (n - 1),
  standard error se = sqrt(s^2 / n);
- CTR, a ratio of per-visitor sums r = Sx / Sy (x clicks, y impressions of one visitor): by the delta
  method, Var(r) ~= (s_x^2 - 2 r s_xy + r^2 s_y^2) / (n * ybar^2), with s_xy the sample covariance
  (Sxy - Sx Sy / n) / (n - 1) and Sxy the sum of x * y (``cross["clicks*impressions"]``);
- the difference to the control d = m_variant - m_control of independent groups: se_d =
  sqrt(se_v^2 + se_c^2) and the 95 % interval d +- 1.959964 se_d (normal approximation, fine from a few
  hundred visitors per arm); ``relative`` is d / m_control.
- sample-ratio mismatch: Pearson's chi-square goodness of fit of the visitor counts per variant (stage
  ``all``) against the configured weights; flagged when p < ``SRM_ALPHA`` (0.001). A flagged experiment's
  other numbers should not be read: the split itself is broken.
- the daily series: per day, variant and stage, the counts of that day and their CTR (novelty effects).

Variances from sums and sums of squares lose digits to cancellation when the spread is tiny next to the
mean (relative error about 1e-16 x Q / n in s^2): far below any interval that matters here.
"""

from __future__ import annotations

import bisect
import hashlib
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Literal, Protocol

import msgspec
import scipy.stats

from models.domain import STAGES
from models.errors import InvalidInputError
from models.rules import PLACEMENT_PATTERN, RuleSet

#: buckets a person is hashed into (each of holdout, traffic and variant)
BUCKETS = 10_000
#: ids of experiments and names of variants
ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_ID = re.compile(ID_PATTERN)
#: the sample-ratio-mismatch check flags p below this
SRM_ALPHA = 0.001
#: two-sided 95 % normal quantile
Z95 = 1.959963984540054
#: the stage value of the cells that count each visitor once per variant
ALL_STAGES = "all"
#: the per-visitor sum of clicks x impressions CTR's delta method needs
CROSS_CTR = "clicks*impressions"

Blend = Literal["stage_aware", "stage_agnostic"]
Strategy = Literal["model", "popular", "trending"]
State = Literal["draft", "running", "stopped"]
Share = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
SafeId = Annotated[str, msgspec.Meta(pattern=ID_PATTERN)]
Placement = Annotated[str, msgspec.Meta(pattern=PLACEMENT_PATTERN)]


class Variant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One arm. ``weight`` > 0 (relative to the others); ``control``: the arm the others are compared
    with (exactly one). What it overrides (unset: the service's default):

    model_version  a verified published model version
    blend          ``stage_aware`` (the per-stage blend) or ``stage_agnostic`` (one blend for every stage)
    rules_version  a merchandising rules version (0: no rules)
    strategy       ``model`` (default), or a non-personalised list: ``popular`` or ``trending``
    """

    name: SafeId
    weight: Annotated[float, msgspec.Meta(gt=0.0, le=1e6)] = 1.0
    control: bool = False
    model_version: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] | None = None
    blend: Blend | None = None
    rules_version: Annotated[int, msgspec.Meta(ge=0)] | None = None
    strategy: Strategy = "model"


class Experiment(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """An experiment (module docstring). ``traffic``: the share of people (after the holdout) it takes;
    ``holdout``: the share of people kept out of it (served the default, counted nowhere); ``salt``: a
    new salt reshuffles everyone. ``state``, ``started_at``, ``stopped_at`` (POSIX seconds) are kept by
    the store (``start``, ``stop``) and ``rules`` by the service; a client's values for them are
    ignored."""

    id: SafeId
    placements: Annotated[list[Placement], msgspec.Meta(min_length=1, max_length=32)]
    variants: Annotated[list[Variant], msgspec.Meta(min_length=2, max_length=16)]
    traffic: Share = 1.0
    holdout: Share = 0.0
    salt: Annotated[str, msgspec.Meta(min_length=1, max_length=128)] = "s1"
    state: State = "draft"
    started_at: float | None = None
    stopped_at: float | None = None
    #: the rule sets the variants' ``rules_version`` name (0 excepted), kept with the experiment so a
    #: variant serves its version after the stored rules move on; the service fills it in
    rules: list[RuleSet] = msgspec.field(default_factory=list)

    def __post_init__(self) -> None:
        check_experiment(self)

    @property
    def control(self) -> Variant:
        return next(v for v in self.variants if v.control)

    def variant(self, name: str) -> Variant | None:
        return next((v for v in self.variants if v.name == name), None)


def check_experiment(e: Experiment) -> None:
    """What the field annotations cannot say; InvalidInputError naming the field."""
    names = [v.name for v in e.variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InvalidInputError(f"body field 'variants': names {dupes} are not unique")
    controls = [v.name for v in e.variants if v.control]
    if len(controls) != 1:
        raise InvalidInputError(
            f"body field 'variants': exactly one variant must have control=true (found {len(controls)})"
        )
    if len(set(e.placements)) != len(e.placements):
        raise InvalidInputError("body field 'placements': placements are not unique")
    if e.holdout >= 1.0:
        raise InvalidInputError("body field 'holdout': must be below 1 (everyone would be held out)")


def check_id(value: str, what: str) -> str:
    """``value`` if it is a safe id, else InvalidInputError naming ``what``."""
    if not _ID.match(value):
        raise InvalidInputError(f"{what}: {value!r} must match {ID_PATTERN}")
    return value


# -- assignment -----------------------------------------------------------------------------------------
def buckets(salt: str, experiment_id: str, person_id: str) -> tuple[int, int, int]:
    """(holdout, traffic, variant) bucket numbers in [0, BUCKETS), independent of each other: three 64-bit
    slices of one blake2b digest of the unit-separated arguments."""
    key = "\x1f".join((salt, experiment_id, person_id)).encode()
    d = hashlib.blake2b(key, digest_size=24, person=b"journeyrec-exp").digest()
    return (
        int.from_bytes(d[0:8], "big") % BUCKETS,
        int.from_bytes(d[8:16], "big") % BUCKETS,
        int.from_bytes(d[16:24], "big") % BUCKETS,
    )


def bounds(weights: Sequence[float]) -> list[int]:
    """Cumulative bucket bounds of ``weights`` (positive): variant i takes [bounds[i-1], bounds[i])."""
    total = float(sum(weights))
    out, acc = [], 0.0
    for w in weights:
        acc += w
        out.append(round(acc / total * BUCKETS))
    out[-1] = BUCKETS
    return out


def assign(
    salt: str,
    experiment_id: str,
    person_id: str,
    variants: Sequence[tuple[str, float]],
    traffic: float,
    holdout: float,
) -> str | None:
    """The variant name ``person_id`` is assigned to, or None (held out, or outside the traffic).
    ``variants``: (name, weight) in the experiment's order (module docstring)."""
    h, t, v = buckets(salt, experiment_id, person_id)
    if h < round(holdout * BUCKETS) or t >= round(traffic * BUCKETS):
        return None
    for (name, _), bound in zip(variants, bounds([w for _, w in variants]), strict=True):
        if v < bound:
            return name
    return variants[-1][0]  # unreachable: the last bound is BUCKETS


def assign_experiment(e: Experiment, person_id: str) -> str | None:
    return assign(e.salt, e.id, person_id, [(v.name, v.weight) for v in e.variants], e.traffic, e.holdout)


class Assigner:
    """``assign`` for one experiment with its cut points computed once: the request path's form (the same
    answer as ``assign_experiment``, as a ``Variant``)."""

    def __init__(self, experiment: Experiment) -> None:
        self.experiment = experiment
        self._holdout = round(experiment.holdout * BUCKETS)
        self._traffic = round(experiment.traffic * BUCKETS)
        self._bounds = bounds([v.weight for v in experiment.variants])

    def __call__(self, person_id: str) -> Variant | None:
        e = self.experiment
        h, t, v = buckets(e.salt, e.id, person_id)
        if h < self._holdout or t >= self._traffic:
            return None
        return e.variants[bisect.bisect_right(self._bounds, v)]


def in_global_holdout(person_id: str, share: float) -> bool:
    """Whether ``person_id`` falls in the service-wide holdout (kept out of every experiment): its own
    hash, so the same people whatever the experiments."""
    return share > 0 and buckets("global-holdout", "", person_id)[0] < round(share * BUCKETS)


# -- statistics -----------------------------------------------------------------------------------------
class StatsCell(Protocol):
    """What ``results`` reads of a cell: ``VariantStageStats`` or any object with its fields."""

    @property
    def variant(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def visitors(self) -> int: ...
    @property
    def sums(self) -> Mapping[str, float]: ...
    @property
    def squares(self) -> Mapping[str, float]: ...
    @property
    def cross(self) -> Mapping[str, float]: ...


class DayCell(Protocol):
    @property
    def day(self) -> str: ...
    @property
    def variant(self) -> str: ...
    @property
    def stage(self) -> str: ...
    @property
    def counts(self) -> Mapping[str, float]: ...


class VariantStageStats(msgspec.Struct, frozen=True):
    """Per-visitor sums of one (variant, stage) cell, as the feedback counters answer them; ``stage`` "all"
    counts each visitor once per variant.

    visitors  distinct visitors served at least one list of the variant in that stage
    sums      metric -> sum over visitors
    squares   metric -> sum over visitors of (per-visitor value)^2
    cross     "clicks*impressions" -> sum over visitors of clicks_v * impressions_v
    """

    variant: str
    stage: str
    visitors: int
    sums: dict[str, float]
    squares: dict[str, float]
    cross: dict[str, float]


class DailyCell(msgspec.Struct, frozen=True):
    """Totals of one day (YYYY-MM-DD, UTC), variant and stage."""

    day: str
    variant: str
    stage: str
    counts: dict[str, float]


class Estimate(msgspec.Struct, frozen=True):
    """A metric's value and standard error (None: no visitors, or no denominator)."""

    value: float | None
    se: float | None


class Difference(msgspec.Struct, frozen=True):
    """variant - control with its 95 % interval [low, high]; ``relative`` = diff / control value."""

    diff: float
    low: float
    high: float
    relative: float | None
    significant: bool


class MetricOut(msgspec.Struct, frozen=True, omit_defaults=True):
    value: float | None
    se: float | None
    vs_control: Difference | None = None


class CellResult(msgspec.Struct, frozen=True):
    variant: str
    stage: str
    visitors: int
    lists: float
    impressions: float
    clicks: float
    carts: float
    purchases: float
    revenue: float
    ctr: MetricOut
    add_to_cart_rate: MetricOut
    conversion_rate: MetricOut
    revenue_per_visitor: MetricOut


class SampleRatio(msgspec.Struct, frozen=True):
    """Visitor counts per variant against the configured weights (stage ``all``)."""

    observed: dict[str, int]
    expected: dict[str, float]
    chi2: float | None
    p_value: float | None
    mismatch: bool


class DailyPoint(msgspec.Struct, frozen=True):
    day: str
    variant: str
    stage: str
    counts: dict[str, float]
    ctr: float | None


class ExperimentResults(msgspec.Struct, frozen=True):
    experiment: str
    control: str
    method: str
    cells: list[CellResult]
    sample_ratio: SampleRatio
    daily: list[DailyPoint]


METHOD = (
    "per-visitor analysis; means and their standard errors from per-visitor sums and sums of squares; CTR "
    "is a ratio of per-visitor sums with a delta-method variance; difference to control of independent "
    "groups with a normal 95 % interval (diff +- 1.96 se); sample-ratio mismatch: chi-square goodness of "
    f"fit of visitors per variant against the weights, flagged at p < {SRM_ALPHA}"
)


def _var(n: int, s: float, q: float) -> float:
    """Sample variance of n values from their sum and sum of squares (0 below 2 values; never negative)."""
    return max((q - s * s / n) / (n - 1), 0.0) if n > 1 else 0.0


def mean_estimate(n: int, s: float, q: float) -> Estimate:
    """Mean of per-visitor values and its standard error, from n, their sum and their sum of squares."""
    if n <= 0:
        return Estimate(None, None)
    return Estimate(s / n, math.sqrt(_var(n, s, q) / n))


def ratio_estimate(n: int, sx: float, sy: float, qx: float, qy: float, sxy: float) -> Estimate:
    """Ratio of per-visitor sums Sx / Sy and its delta-method standard error (module docstring)."""
    if n <= 0 or sy <= 0:
        return Estimate(None, None)
    r = sx / sy
    ybar = sy / n
    cov = (sxy - sx * sy / n) / (n - 1) if n > 1 else 0.0
    var = (_var(n, sx, qx) - 2 * r * cov + r * r * _var(n, sy, qy)) / (n * ybar * ybar)
    return Estimate(r, math.sqrt(max(var, 0.0)))


def difference(variant: Estimate, control: Estimate) -> Difference | None:
    """variant - control with a 95 % normal interval (None when either is undefined)."""
    if variant.value is None or control.value is None or variant.se is None or control.se is None:
        return None
    d = variant.value - control.value
    half = Z95 * math.hypot(variant.se, control.se)
    rel = d / control.value if control.value != 0 else None
    return Difference(d, d - half, d + half, rel, d - half > 0 or d + half < 0)


def cell_estimates(c: StatsCell) -> dict[str, Estimate]:
    """The four metrics of one cell (module docstring)."""
    s, q, n = c.sums, c.squares, c.visitors
    return {
        "ctr": ratio_estimate(
            n,
            s.get("clicks", 0.0),
            s.get("impressions", 0.0),
            q.get("clicks", 0.0),
            q.get("impressions", 0.0),
            c.cross.get(CROSS_CTR, 0.0),
        ),
        "add_to_cart_rate": mean_estimate(n, s.get("carted", 0.0), q.get("carted", 0.0)),
        "conversion_rate": mean_estimate(n, s.get("converted", 0.0), q.get("converted", 0.0)),
        "revenue_per_visitor": mean_estimate(n, s.get("revenue_all", 0.0), q.get("revenue_all", 0.0)),
    }


def sample_ratio(observed: Mapping[str, int], weights: Sequence[tuple[str, float]]) -> SampleRatio:
    """Chi-square goodness of fit of ``observed`` visitors per variant against ``weights``
    ((name, weight) of every variant; one missing from ``observed`` counts 0)."""
    total = sum(observed.get(n, 0) for n, _ in weights)
    wsum = sum(w for _, w in weights)
    obs = {n: int(observed.get(n, 0)) for n, _ in weights}
    exp = {n: total * w / wsum for n, w in weights}
    if total == 0:
        return SampleRatio(obs, exp, None, None, mismatch=False)
    chi2, p = scipy.stats.chisquare([obs[n] for n, _ in weights], [exp[n] for n, _ in weights])
    return SampleRatio(obs, exp, float(chi2), float(p), mismatch=bool(p < SRM_ALPHA))


def _metric(est: Estimate, control: Estimate | None) -> MetricOut:
    return MetricOut(est.value, est.se, None if control is None else difference(est, control))


def results(
    experiment: Experiment, stats: Iterable[StatsCell], daily: Iterable[DayCell] = ()
) -> ExperimentResults:
    """Results of ``experiment`` from its per-visitor sums (module docstring). Cells of variants the
    experiment does not name (a variant removed while a draft) are left out; stages in the order the
    journey has them, ``all`` first."""
    names = [v.name for v in experiment.variants]
    control = experiment.control.name
    cells = [c for c in stats if c.variant in names]
    by_key = {(c.variant, c.stage): c for c in cells}
    estimates = {key: cell_estimates(c) for key, c in by_key.items()}
    out: list[CellResult] = []
    stage_order = _stage_order({c.stage for c in cells})
    for stage in stage_order:
        ctrl = estimates.get((control, stage))
        for name in names:
            c = by_key.get((name, stage))
            if c is None:
                continue
            est = estimates[(name, stage)]
            vs = None if name == control or ctrl is None else ctrl
            s = c.sums
            out.append(
                CellResult(
                    variant=name,
                    stage=stage,
                    visitors=c.visitors,
                    lists=s.get("lists", 0.0),
                    impressions=s.get("impressions", 0.0),
                    clicks=s.get("clicks", 0.0),
                    carts=s.get("carts", 0.0),
                    purchases=s.get("purchases", 0.0),
                    revenue=s.get("revenue", 0.0),
                    ctr=_metric(est["ctr"], None if vs is None else vs["ctr"]),
                    add_to_cart_rate=_metric(
                        est["add_to_cart_rate"], None if vs is None else vs["add_to_cart_rate"]
                    ),
                    conversion_rate=_metric(
                        est["conversion_rate"], None if vs is None else vs["conversion_rate"]
                    ),
                    revenue_per_visitor=_metric(
                        est["revenue_per_visitor"], None if vs is None else vs["revenue_per_visitor"]
                    ),
                )
            )
    observed = {c.variant: c.visitors for c in cells if c.stage == ALL_STAGES}
    srm = sample_ratio(observed, [(v.name, v.weight) for v in experiment.variants])
    return ExperimentResults(experiment.id, control, METHOD, out, srm, daily_series(daily, names))


def daily_series(daily: Iterable[DayCell], names: Sequence[str]) -> list[DailyPoint]:
    """The daily cells of the named variants, by day, variant, stage, with their CTR."""
    order = {n: i for i, n in enumerate(names)}
    points = [
        DailyPoint(
            d.day,
            d.variant,
            d.stage,
            dict(d.counts),
            d.counts.get("clicks", 0.0) / imp if (imp := d.counts.get("impressions", 0.0)) > 0 else None,
        )
        for d in daily
        if d.variant in order
    ]
    return sorted(points, key=lambda p: (p.day, order[p.variant], p.stage))


def _stage_order(stages: set[str]) -> list[str]:
    journey = [ALL_STAGES, *(s.value for s in STAGES)]
    return [s for s in journey if s in stages] + sorted(stages - set(journey))
