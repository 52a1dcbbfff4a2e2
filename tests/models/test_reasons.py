"""Known answers for the reasons shown with recommended items."""

from __future__ import annotations

import pytest

from models.domain import DAY, Source, Stage
from models.reasons import ago, duration, reason_for, relation, trending


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "1 min"), (59 * 60, "59 min"), (3600, "1 h"), (DAY, "1 day"), (12 * DAY, "12 days")],
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


def test_ago() -> None:
    assert ago(30) == "just now"
    assert ago(3 * DAY) == "3 days ago"


@pytest.mark.parametrize(
    ("flags", "text"),
    [
        ({"on_page": True, "in_cart": True, "bought": True}, "you are viewing"),
        ({"on_page": False, "in_cart": True, "bought": True}, "in your cart"),
        ({"on_page": False, "in_cart": False, "bought": True}, "you bought"),
        ({"on_page": False, "in_cart": False, "bought": False}, "you looked at"),
    ],
)
def test_relation(flags: dict[str, bool], text: str) -> None:
    assert relation(**flags) == text


def test_anchor_reasons_say_how_the_visitor_met_the_anchor() -> None:
    kettle = {"anchor_title": "Kettle 1"}
    assert reason_for(Source.SIMILAR, Stage.RETENTION, **kettle, anchor_relation="you bought") == (
        "similar to the Kettle 1 you bought"
    )
    assert (
        reason_for(Source.SIMILAR, Stage.CONSIDERATION, **kettle) == "similar to the Kettle 1 you looked at"
    )
    assert reason_for(Source.COMPLEMENT, Stage.DECISION, **kettle) == "complements the Kettle 1 in your cart"
    assert reason_for(Source.COMPLEMENT, Stage.AWARENESS, **kettle, anchor_relation="you looked at") == (
        "complements the Kettle 1 you looked at"
    )
    assert reason_for(Source.COMPLEMENT, Stage.RETENTION) == "goes well with your items"


def test_buy_again_reason_counts_and_dates() -> None:
    assert reason_for(Source.BUY_AGAIN, Stage.RETENTION, age_s=3 * DAY, count=4) == (
        "you bought this 4 times 3 days ago — time to restock?"
    )
    assert reason_for(Source.BUY_AGAIN, Stage.AWARENESS) == "you bought this before"
    assert reason_for(Source.BUY_AGAIN, Stage.AWARENESS, age_s=5 * 86_400) == "you bought this 5 days ago"
    assert (
        reason_for(Source.BUY_AGAIN, Stage.DECISION, age_s=3_600, count=2)
        == "you bought this 2 times 1 h ago"
    )


DATA_END = 1_712_707_200.0  # 2024-04-10T00:00:00Z: the model's data ends with 2024-04-09


@pytest.mark.parametrize(
    ("now", "text"),
    [
        (DATA_END + 3600, "trending this week"),  # the data is current
        (DATA_END - 3600, "trending this week"),  # a clock slightly behind the data
        (DATA_END + 2 * DAY, "trending in the week to 2024-04-09"),
        (DATA_END + 200 * DAY, "trending in the week to 2024-04-09"),
        (None, "trending in the week to 2024-04-09"),  # no clock: the date is always true
    ],
)
def test_trending_is_true_of_the_models_data_not_the_clock(now: float | None, text: str) -> None:
    assert trending(DATA_END, now) == text
    assert reason_for(Source.TRENDING, Stage.AWARENESS, data_until=DATA_END, now=now) == text


def test_trending_without_a_data_time_claims_no_week() -> None:
    assert trending(None, DATA_END) == "trending lately"
    assert reason_for(Source.TRENDING, Stage.DECISION) == "trending lately"
