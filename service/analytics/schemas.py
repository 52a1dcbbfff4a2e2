"""The answer of ``GET /v1/analytics/journey``."""

from __future__ import annotations

from typing import Literal

import msgspec

from models.domain import Stage


class PeriodOut(msgspec.Struct, frozen=True):
    """One hour or day. visitors: distinct visitors seen in each stage (evaluated in it, or leaving it,
    during the period); entries: stage entries (transitions into the stage and first sightings);
    transitions: transitions counted in the period; abandoned_carts, lapsed: as in ``ByTimeOut``, for the
    period."""

    start: str
    visitors: dict[str, int]
    entries: dict[str, int]
    transitions: int
    abandoned_carts: int = 0
    lapsed: int = 0


class ByTimeOut(msgspec.Struct, frozen=True):
    """Stage changes by time alone in the range, dated when they took effect, whatever the channel (no
    event caused them). abandoned_carts: visitors who left decision when their cart expired
    (``cart_ttl_hours``); lapsed: customers who left retention when its window ended (``retention_days``,
    or the grace period after a purchase while they browse for something new); transitions: every such
    change by (from, to), with its share of the changes by time out of ``from``."""

    abandoned_carts: int
    lapsed: int
    transitions: list[TransitionOut]


class TransitionOut(msgspec.Struct, frozen=True):
    """``count`` moves from ``from`` to ``to``; ``rate``: their share of all moves out of ``from``."""

    from_: Stage = msgspec.field(name="from")
    to: Stage = Stage.AWARENESS
    count: int = 0
    rate: float = 0.0


class TimeInStageOut(msgspec.Struct, frozen=True):
    """Time spent in a stage by the visitors who left it in the range. The median is read from bucketed
    counts: linear inside the bucket [median_bucket_low, median_bucket_high) (high null: the open last
    bucket, and the median is its lower edge)."""

    stage: Stage
    left: int
    median_seconds: float | None
    median_bucket_low: float | None
    median_bucket_high: float | None


class FunnelStepOut(msgspec.Struct, frozen=True):
    """visitors: distinct visitors seen in this stage or a later one in the range; drop_off: the share of
    the previous step's visitors not at this step."""

    stage: Stage
    visitors: int
    drop_off: float | None


class GroupOut(msgspec.Struct, frozen=True):
    """visitors seen in the stage, how many of them moved to a later stage, and the share (null: none)."""

    visitors: int
    advanced: int
    advance_rate: float | None


class StageImpactOut(msgspec.Struct, frozen=True):
    stage: Stage
    clicked: GroupOut
    not_clicked: GroupOut


class ImpactOut(msgspec.Struct, frozen=True):
    """Stage-advance rate of visitors who clicked a recommendation in the range (a product view carrying a
    ``recommendation_id``) and of those who did not. Descriptive: the groups choose themselves, so the
    difference is not the effect of recommendations (an experiment measures that)."""

    basis: Literal["descriptive"]
    causal: bool
    note: str
    stages: list[StageImpactOut]


class JourneyAnalyticsOut(msgspec.Struct, frozen=True):
    from_: str = msgspec.field(name="from")
    to: str = ""
    granularity: Literal["hour", "day"] = "day"
    channel: str | None = None
    periods: list[PeriodOut] = msgspec.field(default_factory=list)
    transitions: list[TransitionOut] = msgspec.field(default_factory=list)
    matrix: dict[str, dict[str, int]] = msgspec.field(default_factory=dict)
    first_sightings: int = 0
    time_in_stage: list[TimeInStageOut] = msgspec.field(default_factory=list)
    funnel: list[FunnelStepOut] = msgspec.field(default_factory=list)
    recommendation_impact: ImpactOut | None = None
    by_time: ByTimeOut | None = None
    notes: list[str] = msgspec.field(default_factory=list)
