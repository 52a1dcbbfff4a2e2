"""Terminal tables (``journeyrec evaluate`` and ``inspect``) stay whole at 100 columns and narrower:
no line wider than the terminal, no cell cut with an ellipsis, every value shown."""

from __future__ import annotations

import io

import msgspec
import pytest
from rich.console import Console

from models.blend import FEATURE_NAMES, BlendWeights, StageBlend
from models.domain import STAGES
from models.metrics import METRICS, MetricSummary
from training.cli import blend_table
from training.evaluate import Bootstrap, Comparison, Difference, EvalResult, ModelResult, format_table

MODELS = ("stage_aware", "lightfm", "popularity", "trending", "buy_again", "item_knn", "tifu_knn")


def _summary(users: int, seed: int) -> MetricSummary:
    values = [round(0.1111 * (seed % 9 + 1) + 0.0001 * m, 4) for m in range(len(METRICS))]
    return MetricSummary(users, *values, coverage=0.5 + 0.001 * seed)


@pytest.fixture
def result() -> EvalResult:
    segments = ("cold", "warm", *(s.value for s in STAGES))
    models = {
        name: ModelResult(
            overall=_summary(1_234_567, i),
            segments={s: _summary(123_456 + j, i + j) for j, s in enumerate(segments)},
            fit_seconds=1234.5,
            recommend_seconds=12.3,
        )
        for i, name in enumerate(MODELS)
    }
    return EvalResult(
        dataset="uci-online-retail-by-day",
        k=10,
        split="time split at 2011-07-01T00:00:00+00:00",
        models=models,
        exclude_seen=True,
        positive=["purchase"],
        train_events=1,
        test_events=1,
        candidates=1,
        transitions={},
    )


def _render(renderable: object, width: int) -> list[str]:
    console = Console(width=width, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text().splitlines()


@pytest.mark.parametrize("width", [100, 72, 48])
def test_evaluate_tables_fit_the_terminal_whole(result: EvalResult, width: int) -> None:
    lines = _render(format_table(result, width), width)
    assert max(map(len, lines)) <= width
    text = "\n".join(lines)
    assert "…" not in text
    for name in MODELS:
        assert name in text
    for s in ("cold", "warm", *(st.value for st in STAGES)):
        assert s in text
    for m in METRICS:
        assert f"{m}@10" in text
    # every number is shown: 6 overall columns of 8 cells and 6 segment columns of 7 cells
    cells = [f"{getattr(r.overall, m):.4f}" for r in result.models.values() for m in METRICS]
    cells += [f"{seg.ndcg:.4f}" for r in result.models.values() for seg in r.segments.values()]
    for cell in set(cells):
        assert text.count(cell) >= cells.count(cell), cell
    assert text.count("1,234,567") == len(MODELS)


def test_at_100_columns_every_model_is_in_one_table(result: EvalResult) -> None:
    lines = _render(format_table(result, 100), 100)
    header = next(line for line in lines if line.startswith("metric"))
    assert header.split() == ["metric", *MODELS]


def _with_differences(result: EvalResult) -> EvalResult:
    """``result`` with intervals: baseline i differs by +0.0i with an interval excluding 0 for odd i."""
    ci = dict.fromkeys(METRICS, (0.1, 0.2))
    models = {
        n: msgspec.structs.replace(r, overall=msgspec.structs.replace(r.overall, ci95=ci))
        for n, r in result.models.items()
    }

    def diff(i: int) -> Difference:
        lo = -0.005 if i % 2 == 0 else 0.001
        return Difference(round(0.01 * i, 4), (lo, 0.03 * i))

    segments = list(models["stage_aware"].segments)
    differences = {
        n: Comparison(
            overall={m: diff(i) for m in METRICS},
            segments={s: {m: diff(i) for m in METRICS} for s in segments},
        )
        for i, n in enumerate(MODELS)
        if n != "stage_aware"
    }
    boot = Bootstrap(resamples=1000, seed=1, level=0.95, reference="stage_aware")
    return msgspec.structs.replace(result, models=models, bootstrap=boot, differences=differences)


@pytest.mark.parametrize("width", [100, 60])
def test_differences_fit_the_terminal_whole_and_mark_significance(result: EvalResult, width: int) -> None:
    lines = _render(format_table(_with_differences(result), width), width)
    assert max(map(len, lines)) <= width
    text = "\n".join(lines)
    assert "…" not in text
    assert "stage_aware minus each baseline" in text
    assert "0.1000-0.2000" in text  # each model's ndcg interval
    # odd baselines' intervals exclude 0 (starred), even ones do not
    for i in range(1, len(MODELS)):
        assert (f"+{0.01 * i:.4f}*" in text) == (i % 2 == 1), i
    assert f"+{0.001:.4f}..+{0.03:.4f}" in text


@pytest.mark.parametrize("width", [100, 60])
def test_inspect_blend_table_fits_the_terminal_whole(width: int) -> None:
    blend = BlendWeights(
        stages=[
            StageBlend(
                stage=s.value,
                weights={f: -12.34 + 0.5 * i for i, f in enumerate(FEATURE_NAMES)},
                positives=1_234_567,
                fitted_on="stage",
            )
            for s in STAGES
        ]
    )
    lines = _render(blend_table(blend, width), width)
    assert max(map(len, lines)) <= width
    text = "\n".join(lines)
    assert "…" not in text
    for f in FEATURE_NAMES:
        assert f in text
    for s in STAGES:
        assert s.value in text
    assert text.count("1,234,567") == len(STAGES)
    assert text.count("-12.34") == len(STAGES)
