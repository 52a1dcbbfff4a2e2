"""``scripts/ab_sim.py``: the experiment it creates, and the per-stage table it prints from the results.

The whole script needs a server with experiments and feedback counters (``make ab``); here, the parts that
do not: the document it sends (checked against ``models.experiments`` where that exists) and the table."""

from __future__ import annotations

import importlib.util

import msgspec
import pytest

from scripts.ab_sim import CONTROL, TREATMENT, experiment_body, results_lines


def _metric(value: float, diff: float | None = None, *, significant: bool = False) -> dict[str, object]:
    out: dict[str, object] = {"value": value, "se": 0.001}
    if diff is not None:
        out["vs_control"] = {
            "diff": diff,
            "low": diff - 0.01,
            "high": diff + 0.01,
            "relative": None,
            "significant": significant,
        }
    return out


def _cell(variant: str, stage: str, visitors: int, ctr: float, diff: float | None) -> dict[str, object]:
    return {
        "variant": variant,
        "stage": stage,
        "visitors": visitors,
        "lists": 3.0 * visitors,
        "impressions": 39.0 * visitors,
        "clicks": 4.0 * visitors,
        "carts": 0.0,
        "purchases": 0.0,
        "revenue": 0.0,
        "ctr": _metric(ctr, diff, significant=diff is not None and abs(diff) > 0.01),
        "add_to_cart_rate": _metric(0.05, None if diff is None else 0.0),
        "conversion_rate": _metric(0.02, None if diff is None else 0.001),
        "revenue_per_visitor": _metric(1.5, None if diff is None else 0.2),
    }


RESULTS = {
    "experiment": "ab",
    "control": CONTROL,
    "method": "per visitor; delta method for CTR",
    "cells": [
        _cell(TREATMENT, "decision", 400, 0.12, 0.03),
        _cell(CONTROL, "decision", 410, 0.09, None),
        _cell(TREATMENT, "all", 1000, 0.10, 0.005),
        _cell(CONTROL, "all", 1010, 0.095, None),
        _cell(TREATMENT, "awareness", 700, 0.08, -0.002),
        _cell(CONTROL, "awareness", 690, 0.082, None),
    ],
    "sample_ratio": {
        "observed": {CONTROL: 1010, TREATMENT: 1000},
        "expected": {CONTROL: 1005.0, TREATMENT: 1005.0},
        "p_value": 0.83,
        "mismatch": False,
    },
    "daily": [],
}


def test_the_table_goes_stage_by_stage_control_first_with_intervals() -> None:
    lines = results_lines(RESULTS)
    stages = [line[3:] for line in lines if line.startswith("-- ")]
    assert stages == ["all", "awareness", "decision"]  # journey order, "all" first
    decision = lines[lines.index("-- decision") :]
    assert decision[1].split()[0] == CONTROL
    ctr_treatment = next(line for line in decision if "CTR" in line and "+0.0300" in line)
    assert "[+0.0200, +0.0400]*" in ctr_treatment
    assert "12.00%" in ctr_treatment
    assert any("p = 0.83: ok" in line for line in lines)


def test_a_sample_ratio_mismatch_is_flagged() -> None:
    bad = {**RESULTS, "sample_ratio": {**RESULTS["sample_ratio"], "p_value": 1e-9, "mismatch": True}}
    assert "MISMATCH" in results_lines(bad)[-1]


def test_the_experiment_pits_the_stage_aware_blend_against_a_stage_agnostic_control() -> None:
    body = experiment_body("home", salt="s")
    control = [v for v in body["variants"] if v.get("control")]
    assert [v["blend"] for v in control] == ["stage_agnostic"]
    assert {v["blend"] for v in body["variants"]} == {"stage_agnostic", "stage_aware"}
    if importlib.util.find_spec("models.experiments") is None:
        pytest.skip("models.experiments is not part of this tree")
    from models.experiments import Experiment

    doc = msgspec.convert({"id": "ab-sim-1", **body}, Experiment)
    assert list(doc.placements) == ["home"]
