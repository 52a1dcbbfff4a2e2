"""Experiments: validation of the document, deterministic assignment, and the statistics (known answers,
a naive per-visitor reference, the sample-ratio-mismatch flag)."""

from __future__ import annotations

import math
from collections import Counter

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.errors import InvalidInputError
from models.experiments import (
    BUCKETS,
    CROSS_CTR,
    Z95,
    Assigner,
    DailyCell,
    Experiment,
    Variant,
    VariantStageStats,
    assign,
    assign_experiment,
    bounds,
    buckets,
    difference,
    in_global_holdout,
    mean_estimate,
    ratio_estimate,
    results,
    sample_ratio,
)


def exp(**kw: object) -> Experiment:
    doc: dict[str, object] = {
        "id": "blend-test",
        "placements": ["home"],
        "variants": [{"name": "control", "control": True}, {"name": "agnostic", "blend": "stage_agnostic"}],
    }
    doc.update(kw)
    return msgspec.convert(doc, Experiment)


# -- the document ------------------------------------------------------------------------------------
def test_a_valid_document_round_trips() -> None:
    e = exp(traffic=0.5, holdout=0.1)
    assert msgspec.json.decode(msgspec.json.encode(e), type=Experiment) == e
    assert e.control.name == "control"
    assert e.variant("agnostic") == Variant(name="agnostic", blend="stage_agnostic")


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"variants": [{"name": "a", "control": True}, {"name": "a"}]}, "not unique"),
        ({"variants": [{"name": "a"}, {"name": "b"}]}, "exactly one"),
        ({"variants": [{"name": "a", "control": True}, {"name": "b", "control": True}]}, "exactly one"),
        ({"variants": [{"name": "a", "control": True}, {"name": "b", "weight": 0}]}, "weight"),
        ({"variants": [{"name": "a", "control": True}, {"name": "b", "weight": -1}]}, "weight"),
        ({"variants": [{"name": "a", "control": True}]}, "variants"),
        ({"variants": [{"name": "A b", "control": True}, {"name": "b"}]}, "name"),
        ({"variants": [{"name": "a", "control": True}, {"name": "b", "strategy": "random"}]}, "strategy"),
        ({"variants": [{"name": "a", "control": True}, {"name": "b", "blend": "flat"}]}, "blend"),
        ({"traffic": 1.5}, "traffic"),
        ({"traffic": -0.1}, "traffic"),
        ({"holdout": 1.0}, "holdout"),
        ({"id": "../etc"}, "id"),
        ({"id": ""}, "id"),
        ({"placements": []}, "placements"),
        ({"placements": ["Home Page"]}, "placements"),
        ({"placements": ["home", "home"]}, "placements"),
    ],
)
def test_bad_documents_are_refused_naming_the_field(change: dict[str, object], words: str) -> None:
    with pytest.raises((msgspec.ValidationError, InvalidInputError), match=words):
        exp(**change)


# -- assignment --------------------------------------------------------------------------------------
def test_assignment_is_a_pure_function_of_its_arguments() -> None:
    # pinned: the same on every worker, after a restart, on another machine (no per-process hash seed)
    assert buckets("s1", "blend-test", "visitor-1") == buckets("s1", "blend-test", "visitor-1")
    assert buckets("s1", "blend-test", "visitor-1") == (2568, 6737, 9906)
    assert buckets("s2", "blend-test", "visitor-1") != buckets("s1", "blend-test", "visitor-1")


def test_bounds_split_the_buckets_by_weight() -> None:
    assert bounds([1, 1]) == [5000, BUCKETS]
    assert bounds([1, 3]) == [2500, BUCKETS]
    assert bounds([0.2, 0.3, 0.5]) == [2000, 5000, BUCKETS]


def test_assignment_follows_the_weights_holdout_and_traffic() -> None:
    people = [f"p{i}" for i in range(20_000)]
    counts = Counter(assign("s", "e", p, [("a", 1.0), ("b", 3.0)], 1.0, 0.0) for p in people)
    assert counts[None] == 0
    assert abs(counts["b"] / len(people) - 0.75) < 0.02
    half = Counter(assign("s", "e", p, [("a", 1.0), ("b", 1.0)], 0.5, 0.2) for p in people)
    # 20 % held out, then half of everyone outside the experiment's traffic: 40 % in, 60 % out
    assert abs(half[None] / len(people) - 0.6) < 0.02
    assert abs(half["a"] / len(people) - 0.2) < 0.02


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=20), st.floats(0.01, 0.99), st.floats(0.01, 0.99))
def test_ramping_traffic_up_never_moves_anyone_between_variants(person: str, low: float, high: float) -> None:
    low, high = min(low, high), max(low, high)
    arms = [("a", 1.0), ("b", 2.0)]
    before = assign("s", "e", person, arms, low, 0.1)
    after = assign("s", "e", person, arms, high, 0.1)
    if before is not None:
        assert after == before


def test_the_global_holdout_is_the_same_people_for_every_experiment() -> None:
    people = [f"p{i}" for i in range(10_000)]
    held = [p for p in people if in_global_holdout(p, 0.1)]
    assert abs(len(held) / len(people) - 0.1) < 0.015
    assert not any(in_global_holdout(p, 0.0) for p in people[:100])
    assert assign_experiment(exp(), "x") in {"control", "agnostic"}


# -- statistics: known answers -------------------------------------------------------------------------
def test_mean_estimate_known_answer() -> None:
    # values 0, 1, 1, 0: mean 0.5, sample variance 1/3, se sqrt(1/12)
    e = mean_estimate(4, 2.0, 2.0)
    assert e.value == 0.5
    assert e.se == pytest.approx(math.sqrt(1 / 12))
    assert mean_estimate(0, 0.0, 0.0).value is None


def test_ratio_estimate_known_answer() -> None:
    # clicks x = 1, 0, 2 and impressions y = 2, 2, 4: r = 3/8; s_x^2 = 1, s_y^2 = 4/3, s_xy = 1,
    # ybar = 8/3: Var = (1 - 2 * 3/8 + 9/64 * 4/3) / (3 * 64/9) = 0.4375 / 21.333
    e = ratio_estimate(3, 3.0, 8.0, 5.0, 24.0, 10.0)
    assert e.value == 0.375
    assert e.se == pytest.approx(math.sqrt(0.4375 / (3 * 64 / 9)))
    assert ratio_estimate(3, 0.0, 0.0, 0.0, 0.0, 0.0).value is None


def test_difference_known_answer() -> None:
    d = difference(mean_estimate(4, 2.0, 2.0), mean_estimate(4, 1.0, 1.0))
    assert d is not None
    # 0.5 - 0.25; se = sqrt(1/12 + (1 - 1/4) / 3 / 4) = sqrt(1/12 + 1/16)
    half = Z95 * math.sqrt(1 / 12 + 1 / 16)
    assert d.diff == 0.25
    assert (d.low, d.high) == pytest.approx((0.25 - half, 0.25 + half))
    assert d.relative == 1.0
    assert not d.significant


def test_a_skewed_split_raises_the_sample_ratio_flag() -> None:
    fair = sample_ratio({"a": 5000, "b": 5120}, [("a", 1.0), ("b", 1.0)])
    assert not fair.mismatch
    # chi2 = 2 * 250^2 / 5250 = 23.8: p ~ 1e-6
    skewed = sample_ratio({"a": 5000, "b": 5500}, [("a", 1.0), ("b", 1.0)])
    assert skewed.chi2 == pytest.approx(2 * 250**2 / 5250)
    assert skewed.p_value is not None
    assert skewed.p_value < 1e-5
    assert skewed.mismatch
    # against the configured weights, not an even split
    assert not sample_ratio({"a": 2500, "b": 7500}, [("a", 1.0), ("b", 3.0)]).mismatch
    assert sample_ratio({"a": 5000, "b": 5000}, [("a", 1.0), ("b", 3.0)]).mismatch
    assert not sample_ratio({}, [("a", 1.0), ("b", 1.0)]).mismatch


def _cell(variant: str, stage: str, per_visitor: dict[str, list[float]]) -> VariantStageStats:
    n = len(next(iter(per_visitor.values())))
    sums = {k: float(sum(v)) for k, v in per_visitor.items()}
    squares = {k: float(sum(x * x for x in v)) for k, v in per_visitor.items()}
    cross = {
        CROSS_CTR: float(
            sum(c * i for c, i in zip(per_visitor["clicks"], per_visitor["impressions"], strict=True))
        )
    }
    return VariantStageStats(variant, stage, n, sums, squares, cross)


def test_results_known_answer() -> None:
    control = {
        "lists": [1, 2, 1, 1],
        "impressions": [2, 2, 4, 2],
        "clicks": [1, 0, 2, 0],
        "carted": [0, 1, 1, 0],
        "converted": [0, 0, 1, 0],
        "revenue_all": [0, 0, 30, 0],
    }
    treat = {
        "lists": [1, 1, 1, 1],
        "impressions": [2, 2, 2, 2],
        "clicks": [1, 1, 1, 1],
        "carted": [1, 1, 1, 0],
        "converted": [1, 0, 1, 0],
        "revenue_all": [10, 0, 20, 0],
    }
    stats = [
        _cell("control", "all", control),
        _cell("agnostic", "all", treat),
        _cell("control", "decision", control),
        _cell("agnostic", "decision", treat),
        _cell("gone", "all", treat),  # a variant the experiment does not name: left out
    ]
    daily = [
        DailyCell("2026-01-02", "agnostic", "all", {"clicks": 1.0, "impressions": 4.0}),
        DailyCell("2026-01-01", "control", "all", {"clicks": 0.0, "impressions": 0.0}),
    ]
    r = results(exp(), stats, daily)
    assert [(c.variant, c.stage) for c in r.cells] == [
        ("control", "all"),
        ("agnostic", "all"),
        ("control", "decision"),
        ("agnostic", "decision"),
    ]
    ctrl, var = r.cells[0], r.cells[1]
    assert ctrl.visitors == 4
    assert ctrl.lists == 5
    assert ctrl.clicks == 3
    assert ctrl.ctr.value == 0.3
    assert ctrl.ctr.vs_control is None
    assert var.ctr.value == 0.5
    assert var.add_to_cart_rate.value == 0.75
    assert var.conversion_rate.value == 0.5
    assert var.revenue_per_visitor.value == 7.5
    assert ctrl.revenue_per_visitor.value == 7.5
    rpv = var.revenue_per_visitor.vs_control
    assert rpv is not None
    assert rpv.diff == 0.0
    # every visitor clicked exactly half of what they saw: CTR 0.5 with no variance
    assert var.ctr.se == 0.0
    atc = var.add_to_cart_rate.vs_control
    assert atc is not None
    se = math.hypot(math.sqrt((3 - 9 / 4) / 3 / 4), math.sqrt((2 - 1) / 3 / 4))
    assert atc.diff == 0.25
    assert atc.high - atc.diff == pytest.approx(Z95 * se)
    assert r.sample_ratio.observed == {"control": 4, "agnostic": 4}
    assert not r.sample_ratio.mismatch
    assert [(p.day, p.variant, p.ctr) for p in r.daily] == [
        ("2026-01-01", "control", None),
        ("2026-01-02", "agnostic", 0.25),
    ]


# -- statistics: sums-based vs a naive per-visitor reference --------------------------------------------
visitors = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 30), st.floats(0, 500, allow_nan=False)),
    min_size=2,
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(visitors)
def test_sums_based_estimates_equal_the_naive_reference(rows: list[tuple[int, int, float]]) -> None:
    clicks = np.array([min(c, i) for c, i, _ in rows], float)
    imps = np.array([i for _, i, _ in rows], float)
    revenue = np.array([r for _, _, r in rows])
    n = len(rows)
    # a mean metric: numpy's mean and the standard error from the sample variance
    m = mean_estimate(n, float(revenue.sum()), float((revenue**2).sum()))
    assert m.value == pytest.approx(revenue.mean(), rel=1e-9, abs=1e-9)
    # variances from sums of squares lose digits to cancellation (Q - S^2/n): compare on the scale of Q/n
    scale = float((revenue**2).mean()) + 1.0
    assert m.se is not None
    assert m.se**2 == pytest.approx(revenue.var(ddof=1) / n, rel=1e-6, abs=1e-12 * scale)
    # CTR: the delta method written with numpy's covariance matrix
    r = ratio_estimate(
        n,
        float(clicks.sum()),
        float(imps.sum()),
        float((clicks**2).sum()),
        float((imps**2).sum()),
        float((clicks * imps).sum()),
    )
    if imps.sum() == 0:
        assert r.value is None
        return
    ratio = clicks.sum() / imps.sum()
    cov = np.cov(np.vstack([clicks, imps]), ddof=1)
    grad = np.array([1.0, -ratio]) / imps.mean()
    naive_se = math.sqrt(max(float(grad @ cov @ grad) / n, 0.0))
    assert r.value == pytest.approx(ratio)
    assert r.se is not None
    assert r.se**2 == pytest.approx(naive_se**2, rel=1e-6, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.floats(0.01, 100), min_size=2, max_size=5),
    st.floats(0, 1),
    st.floats(0, 0.99),
    st.lists(st.text(min_size=1, max_size=12), min_size=1, max_size=30),
)
def test_the_request_paths_assigner_equals_assign(
    weights: list[float], traffic: float, holdout: float, people: list[str]
) -> None:
    variants = [{"name": f"v{i}", "weight": w, "control": i == 0} for i, w in enumerate(weights)]
    e = exp(variants=variants, traffic=traffic, holdout=holdout)
    assigner = Assigner(e)
    for p in people:
        got = assigner(p)
        assert (got.name if got is not None else None) == assign_experiment(e, p)
