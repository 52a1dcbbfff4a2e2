"""``GET /v1/feedback/summary``: lists served and what they led to, per stage at serve time and day."""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

import msgspec
from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import QueryParameter

from models.errors import InvalidInputError
from service.api.deps import Services
from service.auth import Scope, scopes
from service.feedback.store_base import DAILY_METRICS, SUMMARY, DailyCell

DEFAULT_DAYS = 30
MAX_DAYS = 366
DAY_PATTERN = r"^\d{4}-\d{2}-\d{2}$"


class SummaryRowOut(msgspec.Struct, frozen=True):
    """One stage's counts on one day (``day`` "total": over the whole range). ``ctr``: clicks /
    impressions (0 without impressions)."""

    day: str
    stage: str
    lists: int
    impressions: int
    clicks: int
    carts: int
    purchases: int
    revenue: float
    ctr: float


class FeedbackSummaryOut(msgspec.Struct, frozen=True):
    """Every served list (whatever experiment applied) and the events credited to it, by the visitor's
    stage when the list was served; events are counted on their own day. ``rows``: per day and stage,
    days with nothing left out; ``totals``: per stage over the range."""

    first_day: str
    last_day: str
    rows: list[SummaryRowOut]
    totals: list[SummaryRowOut]


def _row(day: str, stage: str, counts: dict[str, float]) -> SummaryRowOut:
    impressions = counts.get("impressions", 0.0)
    return SummaryRowOut(
        day=day,
        stage=stage,
        lists=int(counts.get("lists", 0)),
        impressions=int(impressions),
        clicks=int(counts.get("clicks", 0)),
        carts=int(counts.get("carts", 0)),
        purchases=int(counts.get("purchases", 0)),
        revenue=round(counts.get("revenue", 0.0), 6),
        ctr=round(counts.get("clicks", 0.0) / impressions, 6) if impressions else 0.0,
    )


def _day(value: str | None, name: str, default: dt.date) -> dt.date:
    if value is None:
        return default
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise InvalidInputError(f"query parameter {name!r}: {value!r} is not a date (YYYY-MM-DD)") from None


def summarize(
    cells: list[DailyCell], first: str, last: str
) -> tuple[list[SummaryRowOut], list[SummaryRowOut]]:
    """Rows per (day, stage) within [first, last] and totals per stage."""
    rows: list[SummaryRowOut] = []
    totals: dict[str, dict[str, float]] = {}
    for cell in cells:
        if not first <= cell.day <= last:
            continue
        rows.append(_row(cell.day, cell.stage, cell.counts))
        total = totals.setdefault(cell.stage, dict.fromkeys(DAILY_METRICS, 0.0))
        for metric, value in cell.counts.items():
            total[metric] = total.get(metric, 0.0) + value
    return rows, [_row("total", stage, counts) for stage, counts in sorted(totals.items())]


class FeedbackController(Controller):
    path = "/feedback"
    tags = ["feedback"]  # noqa: RUF012 (Litestar reads a class attribute)

    @get(
        "/summary",
        opt=scopes(Scope.READ),
        summary="Lists, impressions, clicks, carts, purchases, revenue and CTR per stage and day",
        description=(
            "Counted at ingest (no scan of events): every list answered to a visitor, and the impressions, "
            "clicks (product views), add-to-carts and purchases credited to it (directly by "
            "recommendation_id, or a purchase by last touch), by the visitor's stage when the list was "
            f"served. `from`, `to`: days (UTC), inclusive; default the last {DEFAULT_DAYS} days; at most "
            f"{MAX_DAYS} days."
        ),
    )
    async def summary(
        self,
        svc: NamedDependency[Services],
        from_day: Annotated[
            str | None,
            QueryParameter(name="from", pattern=DAY_PATTERN, description="first day (UTC)"),
        ] = None,
        to_day: Annotated[
            str | None, QueryParameter(name="to", pattern=DAY_PATTERN, description="last day (UTC)")
        ] = None,
    ) -> FeedbackSummaryOut:
        last = _day(to_day, "to", dt.datetime.fromtimestamp(time.time(), dt.UTC).date())
        first = _day(from_day, "from", last - dt.timedelta(days=DEFAULT_DAYS - 1))
        if first > last:
            raise InvalidInputError(f"query parameters: from {first} is after to {last}")
        if (last - first).days >= MAX_DAYS:
            raise InvalidInputError(
                f"query parameters: from {first} to {last} spans more than {MAX_DAYS} days"
            )
        _stats, cells = await svc.feedback.store.experiment_stats(SUMMARY)
        rows, totals = summarize(cells, first.isoformat(), last.isoformat())
        return FeedbackSummaryOut(
            first_day=first.isoformat(), last_day=last.isoformat(), rows=rows, totals=totals
        )
