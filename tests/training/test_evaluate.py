"""The evaluation protocol on hand-made logs with known answers, and the HTML report."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import msgspec
import numpy as np
import pytest
from rich.console import Console

from models.dataset import EventLog
from models.domain import CatalogItem, EventType, Stage
from models.errors import InvalidInputError
from models.metrics import METRICS
from models.profiles import profiles_from_log
from models.weights import EventWeights
from training.baselines import BuyAgainRanker, PopularityRanker, TifuKnnRanker
from training.evaluate import EvalResult, evaluate, format_table, relevant_targets, split_at
from training.report import render_report, write_report
from training.stage_model import stages_at

DAY = 86_400.0
SPLIT = 100 * DAY
P, V = EventType.PURCHASE.value, EventType.PRODUCT_VIEW.value

# (visitor, item, event, day)
ROWS = [
    ("a", "x", P, 1),
    ("a", "x", P, 5),
    ("a", "y", P, 6),
    ("b", "z", P, 2),
    ("d", "x", P, 3),
    ("d", "guide", EventType.CONTENT_VIEW.value, 3),
    # test window (the split instant itself belongs to the test part)
    ("a", "y", P, 100),
    ("a", "w", P, 101),  # w is new in the test window: not relevant for anyone
    ("c", "x", P, 102),  # c is a visitor without training events: cold
    ("b", "z", V, 103),  # a view is not a positive: b is no test visitor
]


def _log() -> EventLog:
    return EventLog.build(
        visitor_ids=[r[0] for r in ROWS],
        item_ids=[r[1] for r in ROWS],
        event=np.array([EventType(r[2]).code for r in ROWS], dtype=np.int8),
        ts=np.array([r[3] * DAY for r in ROWS]),
        catalog=[CatalogItem(item_id="guide", kind="content")],  # type: ignore[arg-type]
    )


def _ids(log: EventLog, names: str) -> list[int]:
    return [log.visitor_ids.index(n) for n in names]


def _toy_eval(rankers: list, dataset: str = "toy") -> EvalResult:
    """Evaluate ``rankers`` on the toy log at the split, k=2, purchases as positives."""
    train, test = split_at(_log(), SPLIT)
    stage, _ = stages_at(train, SPLIT)
    return evaluate(
        rankers,
        train,
        test,
        k=2,
        now=SPLIT,
        exclude_seen=False,
        positive=frozenset({EventType.PURCHASE}),
        dataset=dataset,
        split="toy split",
        stage_of=stage,
        stage_at_end=stage,
    )


def test_split_is_strict_before_and_inclusive_after() -> None:
    train, test = split_at(_log(), SPLIT)
    assert train.ts.max() < SPLIT
    assert test.ts.min() == SPLIT
    assert train.n_events + test.n_events == len(ROWS)
    assert train.visitor_ids is test.visitor_ids


def test_targets_follow_the_protocol() -> None:
    train, test = split_at(_log(), SPLIT)
    visitors, relevant = relevant_targets(train, test, frozenset({EventType.PURCHASE}))
    assert sorted(visitors.tolist()) == sorted(_ids(train, "ac"))
    items = {
        train.visitor_ids[v]: {train.item_ids[i] for i in relevant[r].indices} for r, v in enumerate(visitors)
    }
    assert items == {"a": {"y"}, "c": {"x"}}


def test_buy_again_and_popularity_known_answers() -> None:
    pos = frozenset({EventType.PURCHASE})
    result = _toy_eval([BuyAgainRanker(EventWeights(), pos), PopularityRanker(EventWeights(), pos)])
    ba = result.models["buy_again"]
    # a: own purchases x (twice) then y (relevant) -> hit at rank 2; c (cold): popularity fills, x first
    assert ba.segments["warm"].ndcg == pytest.approx(1 / math.log2(3))
    assert ba.segments["cold"].ndcg == pytest.approx(1.0)
    assert ba.overall.users == 2
    assert ba.overall.precision == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert ba.overall.hit_rate == 1.0
    # popularity: x (2 buyers) then y/z: a's relevant y is tied with z, c gets x
    assert result.models["popularity"].segments["cold"].ndcg == pytest.approx(1.0)
    # candidates: known products only (the content page is never a candidate)
    assert result.candidates == 3
    assert set(ba.segments) >= {"cold", "warm", Stage.AWARENESS.value}
    assert result.transitions[Stage.AWARENESS.value][Stage.AWARENESS.value] >= 1


def test_tifu_knn_ranks_own_decayed_baskets_then_neighbours_then_popularity() -> None:
    pos = frozenset({EventType.PURCHASE})
    r = TifuKnnRanker(EventWeights(), pos)
    train, _ = split_at(_log(), SPLIT)
    r.fit(train)
    a, c = _ids(train, "ac")
    x, y, z = (train.item_ids.index(i) for i in "xyz")
    # a: baskets (one per day) {x} {x} {y}, one group: x (0.9**2 + 0.9) / 3, y 1 / 3; its only
    # neighbour is d ({x}), so x gains 0.3 * 1 and y keeps 0.7 / 3; z is popularity filler; c is cold
    want_x = 0.7 * (0.81 + 0.9) / 3 + 0.3
    assert r.vectors[a, x] == pytest.approx((0.81 + 0.9) / 3)
    lists = r.recommend(np.array([a, c], np.int32), SPLIT, 3, False).tolist()
    assert lists[0] == [x, y, z]
    assert lists[1][0] == x  # popularity: x has 2 buyers, y and z 1 each
    prof = profiles_from_log(train, np.array([a], np.int32), SPLIT, EventWeights())
    assert r.tables is not None
    s = r.batch_scores(np.array([a], np.int32), r.tables, prof)[0]
    assert s[x] == pytest.approx(1 + want_x)
    assert s[y] == pytest.approx(1 + 0.7 / 3)
    assert s[z] < 1
    result = _toy_eval([r])
    # a's relevant y at rank 2; c (cold) gets popularity: x first, relevant
    assert result.models["tifu_knn"].segments["warm"].ndcg == pytest.approx(1 / math.log2(3))
    assert result.models["tifu_knn"].segments["cold"].ndcg == pytest.approx(1.0)


def test_no_test_visitor_is_a_clear_error() -> None:
    train, _ = split_at(_log(), 1000 * DAY)
    with pytest.raises(InvalidInputError, match="no test visitor"):
        evaluate(
            [],
            train,
            train,
            k=2,
            now=1000 * DAY,
            exclude_seen=False,
            positive=frozenset({EventType.REVIEW}),
            dataset="toy",
            split="",
            stage_of=np.zeros(train.n_visitors, np.int8),
            stage_at_end=np.zeros(train.n_visitors, np.int8),
        )


def test_report_is_self_contained_html(tmp_path: Path) -> None:
    pos = frozenset({EventType.PURCHASE})
    result = _toy_eval([BuyAgainRanker(EventWeights(), pos)], dataset="toy <data>")
    html = render_report(result)
    assert html.count("data:image/png;base64,") == 3
    assert "toy &lt;data&gt;" in html
    assert "http://" not in html
    assert "https://" not in html
    write_report(result, tmp_path / "r" / "report.html")
    assert (tmp_path / "r" / "report.html").read_text(encoding="utf-8") == html


def _repeat_buyers(n: int) -> EventLog:
    """n visitors, each buying their own item (one of n // 2) on days 1 and 5 and again after the split;
    one item also bought by everyone's neighbour so that popularity has a clear favourite."""
    rows: list[tuple[str, str, str, float]] = []
    for i in range(n):
        own = f"i{i % (n // 2)}"
        rows += [(f"v{i}", own, P, 1.0), (f"v{i}", own, P, 5.0), (f"v{i}", own, P, 101.0)]
        rows.append((f"v{i}", "hit", P, 2.0))
    return EventLog.build(
        visitor_ids=[r[0] for r in rows],
        item_ids=[r[1] for r in rows],
        event=np.array([EventType(r[2]).code for r in rows], dtype=np.int8),
        ts=np.array([r[3] * DAY for r in rows]),
    )


def test_intervals_and_differences_in_json_table_and_report(tmp_path: Path) -> None:
    pos = frozenset({EventType.PURCHASE})
    train, test = split_at(_repeat_buyers(80), SPLIT)
    stage, _ = stages_at(train, SPLIT)
    rankers = [BuyAgainRanker(EventWeights(), pos), PopularityRanker(EventWeights(), pos)]

    def run() -> EvalResult:
        return evaluate(
            rankers,
            train,
            test,
            k=2,
            now=SPLIT,
            exclude_seen=False,
            positive=pos,
            dataset="repeat",
            split="at day 100",
            stage_of=stage,
            stage_at_end=stage,
            resamples=1000,
            seed=3,
            reference="buy_again",
        )

    result = run()
    data = json.loads(msgspec.json.encode(result))
    assert data["bootstrap"] == {"resamples": 1000, "seed": 3, "level": 0.95, "reference": "buy_again"}
    for model in data["models"].values():
        for summary in (model["overall"], *model["segments"].values()):
            assert set(summary["ci95"]) == set(METRICS)
            for m in METRICS:
                lo, hi = summary["ci95"][m]
                assert lo <= summary[m] <= hi
    # buy_again hits every visitor (own item at rank 1): a constant 1, an interval of zero width
    assert data["models"]["buy_again"]["overall"]["ci95"]["hit_rate"] == [1.0, 1.0]
    diff = data["differences"]["popularity"]["overall"]["ndcg"]
    ba, pop = result.models["buy_again"].overall.ndcg, result.models["popularity"].overall.ndcg
    assert diff["value"] == pytest.approx(ba - pop, abs=1e-6)
    assert 0 < diff["ci95"][0] <= diff["value"] <= diff["ci95"][1]
    assert set(data["differences"]["popularity"]["segments"]) == set(result.models["buy_again"].segments)
    assert msgspec.json.decode(msgspec.json.encode(result), type=EvalResult) == result
    # the same seed, the same intervals
    again = run()
    assert again.differences == result.differences
    html = render_report(result)
    assert "buy_again minus each baseline" in html
    assert '<strong class="sig">' in html
    lines = io.StringIO()
    Console(file=lines, width=100).print(format_table(result, 100))
    assert f"{diff['value']:+.4f}*" in lines.getvalue()
