"""README.md's generated regions (``scripts/readme.py``): current, complete, rendered from real sources."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec
import numpy as np
import pytest

from models.metrics import MetricSummary
from scripts import readme
from scripts.bench_report import ServiceFigures, TrainFigures, read_report, record
from service.schemas import EventIn, RecommendationsOut
from service.settings import ENV, Settings
from training.evaluate import ColdItemsResult, ColdModelResult, EvalResult, ModelResult
from training.loaders import load_events, load_mapping

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


@pytest.fixture
def readme_text() -> str:
    return README.read_text(encoding="utf-8")


def test_routes_and_settings_tables_are_current(readme_text: str) -> None:
    assert readme.check(readme_text) == [], "README.md is out of date: run `make readme`"


def test_check_fails_when_a_table_differs(readme_text: str, tmp_path: Path) -> None:
    stale = readme_text.replace(f"| `{ENV['max_k']}` |", f"| `{ENV['max_k']}_OLD` |")
    assert stale != readme_text
    assert readme.check(stale) == ["settings"]
    path = tmp_path / "README.md"
    path.write_text(stale, encoding="utf-8")
    assert readme.main(["--check", "--readme", str(path)]) == 1
    assert readme.main(["--readme", str(path), "--reports", str(tmp_path / "none")]) == 0
    assert readme.check(path.read_text(encoding="utf-8")) == []


def test_settings_table_has_every_field_with_default_and_meaning(readme_text: str) -> None:
    table = readme.region(readme_text, "settings")
    comments = readme.field_comments(Settings)
    for field in msgspec.structs.fields(Settings):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{ENV[field.name]}` |"))
        assert comments[field.name]
        assert comments[field.name] in row
    assert "| `JOURNEYREC_WORKERS` | `1` | integer 1–64 |" in table
    assert "| `JOURNEYREC_REDIS_URL` | unset |" in table


class _Documented(msgspec.Struct, frozen=True):
    # spans
    # two lines
    a: int = 1
    b: float = 0.5  # at the end of the line
    c: str = "x"


def test_field_comments_are_read_from_the_source() -> None:
    assert readme.field_comments(_Documented) == {
        "a": "spans two lines",
        "b": "at the end of the line",
        "c": "",
    }


def test_a_setting_without_meaning_or_variable_is_refused() -> None:
    with pytest.raises(readme.ReadmeError, match="c: no comment"):
        readme.settings_table(_Documented, {"a": "X_A", "b": "X_B", "c": "X_C"})
    with pytest.raises(readme.ReadmeError, match="b: no environment variable"):
        readme.settings_table(_Documented, {"a": "X_A"})


def test_route_table_lists_scopes(readme_text: str) -> None:
    table = readme.region(readme_text, "routes")
    assert "| POST | `/v1/events` | `ingest` |" in table
    assert "| POST | `/v1/models/reload` | `admin` |" in table
    assert "| GET | `/schema/openapi.json` | none |" in table


_EMPTY_MEASURED = """# x
<!-- generated:bench -->
old bench
<!-- /generated:bench -->
<!-- generated:eval -->
old eval
<!-- /generated:eval -->
"""


def _metrics(ndcg: float, precision: float) -> ModelResult:
    s = MetricSummary(
        users=10, precision=precision, recall=0.2, ndcg=ndcg, hit_rate=0.5, map=0.1, coverage=0.3
    )
    return ModelResult(overall=s, segments={}, fit_seconds=1.0, recommend_seconds=0.1)


def test_measured_tables_come_from_the_json_reports(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    bench = reports / "bench.json"
    record(TrainFigures(982_113, 20_000, 2_000, 2, 9.5, 4.25, 31.4), bench)
    service = ServiceFigures(
        items=100_000,
        workers=2,
        ready_s=2.3,
        ingest_events_per_s=51_234.0,
        p50_ms=np.float64(1.52),  # the timing helpers hand back numpy scalars
        p99_ms=2.87,
        latency_client="wrk -t1 -c1",
        saturation_rps=1_333.0,
        saturation_client="wrk -t2 -c32 -d10s, all 2xx",
        score_ms=0.31,
        score_predict_ms=5.8,
        call_ms=0.77,
        call_exhaustive_ms=1.6,
        call_predict_ms=8.1,
        identical=1.0,
        probes=4_100,
        probe_recall=0.987,
        live_items=10_000,
        live_p50_ms=1.61,
        live_p99_ms=3.02,
        live_saturation_rps=1_250.0,
        patch_visible_s=0.31,
    )
    record(service, bench)
    report = read_report(bench)
    assert report is not None
    assert report.train is not None
    assert report.service is not None
    result = EvalResult(
        dataset="by-day",
        k=10,
        split="time split at 2011-07-01",
        models={
            "stage_aware": _metrics(0.326, 0.21),
            "lightfm": _metrics(0.238, 0.15),
            "popularity": _metrics(0.1, 0.05),
            "buy_again": _metrics(0.317, 0.2),
        },
        exclude_seen=False,
        positive=["purchase"],
        train_events=100,
        test_events=20,
        candidates=50,
        transitions={},
    )
    (reports / "uci-online-retail.json").write_bytes(msgspec.json.encode(result))
    (reports / "unrelated.json").write_text('{"something": "else"}')

    text = readme.generate(_EMPTY_MEASURED, reports=reports, only=("bench", "eval"))
    bench_text, eval_text = readme.region(text, "bench"), readme.region(text, "eval")
    machine = report.service.machine
    assert f"{machine.cpu}, {machine.cores} cores, Python {machine.python}" in bench_text
    assert "| `train` on 982,113 simulated events (20,000 visitors, 2,000 items), 2 threads |" in bench_text
    assert "train+publish 31.4 s" in bench_text
    assert "51,234 events/s" in bench_text
    assert "p50 1.52 ms, p99 2.87 ms" in bench_text
    assert "1,333 req/s" in bench_text
    assert "10,000 live catalog items (half new, half patched) and 20 merchandising rules | p50 1.61 ms" in (
        bench_text
    )
    assert "1,250 req/s" in bench_text
    assert "served by every worker | 0.31 s after it answered" in bench_text
    assert "0.31 ms vs 5.80 ms (19×)" in bench_text
    assert "top 10 identical in 4,100 of 4,100 contexts" in bench_text
    assert "old bench" not in bench_text
    row = next(line for line in eval_text.splitlines() if "NDCG@10" in line)
    assert (
        row == "| uci-online-retail (time split at 2011-07-01) | NDCG@10 | 0.326 | 0.238 | buy_again 0.317 |"
    )
    assert "unrelated" not in eval_text


def test_a_cold_items_report_shows_its_cold_item_figures(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    reports.mkdir()
    cold = ColdItemsResult(
        fraction=0.2,
        seed=1,
        items=336,
        removed_train_events=100,
        visitors=651,
        positives=900,
        k=10,
        models={
            "stage_aware": ColdModelResult(0.6795, 0.0157, 651),
            "lightfm": ColdModelResult(0.5192, 0.0049, 651),
        },
    )
    result = EvalResult(
        dataset="movielens-100k",
        k=10,
        split="train ua.base / test ua.test",
        models={"stage_aware": _metrics(0.3, 0.14), "lightfm": _metrics(0.27, 0.14)},
        exclude_seen=True,
        positive=["review"],
        train_events=100,
        test_events=20,
        candidates=50,
        transitions={},
        cold_items=cold,
    )
    (reports / "movielens-100k-cold.json").write_bytes(msgspec.json.encode(result))
    eval_text = readme.region(readme.generate(_EMPTY_MEASURED, reports=reports, only=("eval",)), "eval")
    split = "train ua.base / test ua.test, `--exclude-seen`, `--cold-items 0.2`"
    assert f"| movielens-100k-cold ({split}) | cold-item AUC | 0.679 | 0.519 | — |" in eval_text
    assert f"| movielens-100k-cold ({split}) | cold-item P@10 | 0.016 | 0.005 | — |" in eval_text
    # the warm figures of a run trained without the held-out items are not shown as the usual ones
    assert "NDCG@10" not in eval_text


def test_absent_reports_keep_the_measured_tables(tmp_path: Path) -> None:
    text = readme.generate(_EMPTY_MEASURED, reports=tmp_path / "absent", only=("bench", "eval"))
    assert text == _EMPTY_MEASURED


def test_missing_region_is_an_error() -> None:
    with pytest.raises(readme.ReadmeError, match="generated:routes"):
        readme.replace_region("# no markers\n", "routes", "x")


def _json_block_after(text: str, heading: str) -> str:
    rest = text[text.index(heading) :]
    m = re.search(r"```json\n(.*?)```", rest, re.DOTALL)
    assert m is not None
    return m.group(1)


def test_readme_mapping_example_maps_events_and_catalog(readme_text: str, tmp_path: Path) -> None:
    mapping_path = tmp_path / "mapping.json"
    mapping_path.write_text(_json_block_after(readme_text, "**Mapping other files.**"))
    mapping = load_mapping(mapping_path)
    events = tmp_path / "events.csv"
    events.write_text(
        "user;sku;action;ts\nu1;a;view;1735689600000\nu1;a;basket;1735689660000\nu2;b;buy;1735689720000\n"
    )
    catalog = tmp_path / "catalog.csv"
    catalog.write_text("sku;name;department;unit_price\na;Kettle;kitchen;39.5\nb;Green tea;tea;6\n")
    log = load_events(events, catalog=catalog, mapping=mapping)
    assert log.n_events == 3
    by_id = {c.item_id: c for c in log.catalog}
    assert (by_id["a"].title, by_id["a"].category, by_id["a"].price) == ("Kettle", "kitchen", 39.5)


def test_readme_example_is_a_real_answer(readme_text: str, tmp_path: Path) -> None:
    """The README's example decodes as the API's own types, and the generator makes it from a real call."""
    from tests.storefront import train_storefront_model

    shown = readme.region(readme_text, "example")
    blocks = re.findall(r"```json\n(.*?)```", shown, re.DOTALL)
    assert len(blocks) == 2
    event = msgspec.json.decode(blocks[0], type=EventIn)
    answer = msgspec.json.decode(blocks[1], type=RecommendationsOut)
    assert answer.visitor_id == event.visitor_id
    assert answer.products
    assert not answer.fallback

    train_storefront_model(tmp_path / "models")
    fresh = readme.example(tmp_path / "models")
    body, out = (json.loads(b) for b in re.findall(r"```json\n(.*?)```", fresh, re.DOTALL))
    assert out["visitor_id"] == body["visitor_id"]
    assert out["stage"]["name"] == "decision"  # the event put an item in the cart two minutes ago
    assert out["products"]
    assert not out["fallback"]


_CHAOS_REGION = "<!-- generated:chaos -->\nold\n<!-- /generated:chaos -->\n"


def _chaos_report(*, quick: bool) -> dict[str, object]:
    answers = {"ok": 90, "fallback": 4, "busy": 6, "bad": 0, "no_answer": 0}
    return {
        "date": "2026-11-30T10:00:00+00:00",
        "quick": quick,
        "ok": True,
        "scenarios": {
            "redis_kill": {
                "redis_down_s": 5.0,
                "aof_load_s": 0.16,
                "first_ack_after_redis_back_s": 0.05,
                "during_outage": {"requests": 10, **answers, "ok": 0},
                "acknowledged_events": 1198,
                "lost": 0,
                "stored_twice": 0,
                "unacknowledged_events_retried": 1366,
                "failures": [],
            },
            "worker_kill": {
                "requests": 1316,
                "failed_in_flight_at_kill": 5,
                "lost_after_kill": 0,
                "busy_after_kill": 0,
                "replaced_after_s": 0.09,
                "new_worker_beating_after_s": 2.07,
                "failures": ["one check did not hold"],
            },
        },
    }


def test_chaos_table_comes_from_the_chaos_report(tmp_path: Path) -> None:
    (tmp_path / "chaos.json").write_text(json.dumps(_chaos_report(quick=False)))
    text = readme.generate(_CHAOS_REGION, reports=tmp_path, only=("chaos", "eval"))
    body = readme.region(text, "chaos")
    assert body.startswith("`make chaos` (2026-11-30), FAILED:")
    assert "10 answers meanwhile, 6 503 Retry-After + 4 flagged fallbacks, 0 other" in body
    assert "1,198 events acknowledged, 0 lost, 0 stored twice" in body
    assert "1,316 requests: 5 in flight at the kill unanswered, 0 lost after it" in body
    assert "- failed: worker_kill: one check did not hold" in body


def test_a_quick_chaos_report_is_not_shown(tmp_path: Path) -> None:
    (tmp_path / "chaos.json").write_text(json.dumps(_chaos_report(quick=True)))
    assert readme.generate(_CHAOS_REGION, reports=tmp_path, only=("chaos",)) == _CHAOS_REGION
    assert readme.eval_results(tmp_path) == []  # not read as an evaluation either
