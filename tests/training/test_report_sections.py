"""The evaluation's data summary, fitted blend and example lists: in the JSON with known values on a tiny
simulated shop, in the HTML report (escaped), and absent without harm from JSON written before them."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import msgspec
import numpy as np
import pytest

from models.dataset import EventLog
from models.domain import STAGES, EventType
from models.journey import stages_at
from tests.training.test_loaders import UCI_DAY1, UCI_DAY2, write
from training.baselines import PopularityRanker
from training.evaluate import (
    EXAMPLE_ITEMS,
    EXAMPLES_PER_STAGE,
    EvalResult,
    ExampleItem,
    ExampleList,
    data_summary,
    evaluate,
    example_lists,
    relevant_targets,
    split_at,
)
from training.loaders import LoadSummary, read_events
from training.pipeline import config_for
from training.report import render_report
from training.simulate import SimulationConfig, write_simulation
from training.stage_model import StageAwareRanker

SPLIT = dt.datetime(2024, 2, 20, tzinfo=dt.UTC).timestamp()
POSITIVE = frozenset({EventType.PURCHASE})


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop")
    write_simulation(SimulationConfig(visitors=300, items=80, days=60, seed=4), out)
    return out


@pytest.fixture(scope="module")
def logs(shop: Path) -> tuple[EventLog, EventLog, LoadSummary]:
    log, summary = read_events([shop / "events.csv"], catalog=shop / "catalog.csv")
    train, test = split_at(log, SPLIT)
    return train, test, summary


@pytest.fixture(scope="module")
def run(logs: tuple[EventLog, EventLog, LoadSummary]) -> tuple[EvalResult, StageAwareRanker]:
    train, test, summary = logs
    cfg = config_for(None, seed=3, threads=1)
    cfg = msgspec.structs.replace(cfg, factors=msgspec.structs.replace(cfg.factors, epochs=2))
    ours = StageAwareRanker(cfg)
    stage, _ = stages_at(train, SPLIT, cfg.rules)
    result = evaluate(
        [ours, PopularityRanker(cfg.weights, POSITIVE)],
        train,
        test,
        k=10,
        now=SPLIT,
        exclude_seen=False,
        positive=POSITIVE,
        dataset="tiny shop",
        split="time split",
        stage_of=stage,
        stage_at_end=stage,
        resamples=50,
        seed=7,
        inputs={"events": summary},
    )
    # through the JSON, as `evaluate --json` writes it and the report reads it
    return msgspec.json.decode(msgspec.json.encode(result), type=EvalResult), ours


def _csv_rows(shop: Path) -> list[dict[str, str]]:
    with (shop / "events.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_data_summary_counts_each_part_from_the_file(
    shop: Path, run: tuple[EvalResult, StageAwareRanker]
) -> None:
    result, _ = run
    rows = _csv_rows(shop)
    at = dt.datetime.fromtimestamp(SPLIT, dt.UTC).isoformat().replace("+00:00", "Z")
    parts = {
        "train": [r for r in rows if r["timestamp"] < at],
        "test": [r for r in rows if r["timestamp"] >= at],
    }
    d = result.data
    assert d is not None
    for name, split in (("train", d.train), ("test", d.test)):
        mine = parts[name]
        times = sorted(r["timestamp"] for r in mine)
        assert split.start == times[0][:10]
        assert split.end == times[-1][:10]
        assert split.visitors == len({r["visitor_id"] for r in mine})
        assert split.items == len({r["item_id"] for r in mine})
        assert split.events == len(mine)
    assert d.train.start == "2024-01-01"
    assert d.test.start == "2024-02-20"
    assert d.rows == len(rows)
    assert d.filtered == {}  # the native format drops no row
    assert d.test_visitors == result.models["stage_aware"].overall.users
    assert result.inputs["events"].rows == len(rows)


def test_data_summary_sums_what_the_readers_filtered_by_rule(tmp_path: Path) -> None:
    write(tmp_path / "by-day" / "2010-12-01.csv", UCI_DAY1)
    write(tmp_path / "by-day" / "2010-12-02.csv", UCI_DAY2)
    log, summary = read_events(tmp_path / "by-day", preset="uci-online-retail")
    train, test = split_at(log, dt.datetime(2010, 12, 2, tzinfo=dt.UTC).timestamp())
    d = data_summary(train, test, 1, {"train": summary, "test": summary})
    assert d.rows == 22
    assert d.filtered == {
        "no CustomerID": 4,
        "non-product StockCode": 2,
        "sale with Quantity <= 0": 2,
        "sale with UnitPrice <= 0": 2,
    }
    assert (d.train.start, d.train.end, d.train.events, d.train.visitors, d.train.items) == (
        "2010-12-01",
        "2010-12-01",
        2,
        1,
        2,
    )
    assert (d.test.start, d.test.end, d.test.events, d.test.visitors) == ("2010-12-02", "2010-12-02", 4, 3)


def test_blend_is_the_fitted_one(run: tuple[EvalResult, StageAwareRanker]) -> None:
    result, ours = run
    assert result.blend == ours.fitted_blend()
    assert [s.stage for s in result.blend.stages] == [s.value for s in STAGES]


def test_examples_are_the_models_lists_with_sources_reasons_and_relevance(
    shop: Path, run: tuple[EvalResult, StageAwareRanker]
) -> None:
    result, ours = run
    assert ours.train is not None
    train = ours.train
    at = dt.datetime.fromtimestamp(SPLIT, dt.UTC).isoformat().replace("+00:00", "Z")
    bought: dict[str, set[str]] = {}
    for r in _csv_rows(shop):
        if r["timestamp"] >= at and r["event"] == "purchase":
            bought.setdefault(r["visitor_id"], set()).add(r["item_id"])
    stage, _ = stages_at(train, SPLIT, ours.cfg.rules)
    assert result.examples
    listed = 0
    for name, lists in result.examples.items():
        assert 1 <= len(lists) <= EXAMPLES_PER_STAGE
        assert len({e.visitor_id for e in lists}) == len(lists)
        for e in lists:
            v = train.visitor_ids.index(e.visitor_id)
            assert STAGES[int(stage[v])].value == name == e.stage
            assert e.train_events == int((train.visitor == v).sum())
            top = ours.recommend(np.array([v], np.int32), SPLIT, EXAMPLE_ITEMS, exclude_seen=False)[0]
            assert [i.item_id for i in e.items] == [train.catalog[int(i)].item_id for i in top if i >= 0]
            known = {train.catalog[int(i)].item_id for i in np.unique(train.item)}
            assert e.relevant_items == len(bought[e.visitor_id] & known)
            for item in e.items:
                assert item.relevant == (item.item_id in bought[e.visitor_id])
                assert item.reason
                assert item.source in {
                    "personalized", "buy_again", "recently_viewed", "in_cart", "complement", "similar",
                    "popular", "trending",
                }  # fmt: skip
            listed += len(e.items)
    assert listed > 0
    assert any(i.relevant for lists in result.examples.values() for e in lists for i in e.items)


def test_examples_are_drawn_from_the_seed(
    logs: tuple[EventLog, EventLog, LoadSummary], run: tuple[EvalResult, StageAwareRanker]
) -> None:
    train, test, _ = logs
    result, ours = run
    visitors, relevant = relevant_targets(train, test, POSITIVE)
    stage, _ = stages_at(train, SPLIT, ours.cfg.rules)

    def draw(seed: int) -> dict[str, list[ExampleList]]:
        return example_lists(ours, train, visitors, relevant, stage, now=SPLIT, exclude_seen=False, seed=seed)

    assert draw(7) == result.examples
    assert any(draw(s) != result.examples for s in (8, 9, 10))


def test_report_shows_the_sections_and_escapes_item_ids(run: tuple[EvalResult, StageAwareRanker]) -> None:
    result, _ = run
    stage, lists = next(iter(result.examples.items()))
    evil = ExampleItem(
        item_id="<script>alert(1)</script>",
        title="A & B",
        score=1.0,
        source="popular",
        reason="<b>",
        relevant=True,
    )
    first = msgspec.structs.replace(lists[0], items=[evil, *lists[0].items[1:]])
    result = msgspec.structs.replace(result, examples={**result.examples, stage: [first, *lists[1:]]})
    page = render_report(result)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "A &amp; B" in page
    assert "<b>" not in page
    assert "<h2>Data</h2>" in page
    d = result.data
    assert d is not None
    for text in (
        d.train.start,
        d.train.end,
        d.test.start,
        d.test.end,
        f"{d.train.events:,}",
        f"{d.test.events:,}",
    ):
        assert text in page
    assert "No row was filtered." in page
    assert "<h2>Blend weights per stage</h2>" in page
    assert 'alt="blend weights per stage"' in page
    assert result.blend is not None
    s = result.blend.stages[0]
    assert f"<td>{s.weights['lightfm']:+.3f}</td>" in page
    assert "<h2>Example lists per stage</h2>" in page
    for name, shown in result.examples.items():
        assert f"<h3>{name}</h3>" in page
        for e in shown:
            assert f"<code>{e.visitor_id}</code>" in page
    assert "http://" not in page
    assert "https://" not in page


def test_json_without_the_sections_still_loads_and_renders(run: tuple[EvalResult, StageAwareRanker]) -> None:
    result, _ = run
    doc = msgspec.to_builtins(result)
    for key in ("data", "blend", "examples", "inputs"):
        del doc[key]
    old = msgspec.json.decode(msgspec.json.encode(doc), type=EvalResult)
    assert old.data is None
    assert old.blend is None
    assert old.examples == {}
    page = render_report(old)
    assert "<h2>Results</h2>" in page
    assert "<h2>Data</h2>" not in page
    assert "Blend weights per stage" not in page
    assert "Example lists per stage" not in page
