"""One visitor's feedback state and how a served list or an event changes it and the counters.

Both stores run these functions (the Redis store on the state it read, then writes it back if nothing
changed meanwhile), so the rules live in one place. No clock is read: callers pass ``now``.

State: the kept served lists (with their clicks and impressions) and the visitor's *exposures*: for each
(experiment, variant, stage at serve time) and (experiment, variant, ``"all"``) the visitor was served a list
of, the time of the first such list and the visitor's per-visitor values (``store_base.METRICS``).
Experiment ``"-"`` (no experiment) keeps no exposures: its counters are the daily summary only.
"""

from __future__ import annotations

import time

import msgspec

from models.attribution import Method, ServedList, Windows, attribute
from models.domain import Event, EventType
from service.feedback.store_base import (
    ALL,
    CROSS,
    EVENT_INDICATOR,
    EVENT_METRIC,
    SEP,
    SUMMARY,
    Deltas,
    daily_name,
    sum_name,
    visitors_name,
)


class Exposure(msgspec.Struct):
    """first: POSIX seconds of the first list of this exposure; values: metric -> per-visitor value."""

    first: float
    values: dict[str, float] = msgspec.field(default_factory=dict)


class VisitorFeedback(msgspec.Struct):
    """served: kept lists, oldest first; exposures: ``exposure_key`` -> Exposure."""

    served: list[ServedList] = msgspec.field(default_factory=list)
    exposures: dict[str, Exposure] = msgspec.field(default_factory=dict)


def exposure_key(experiment: str, variant: str, scope: str) -> str:
    return SEP.join((experiment, variant, scope))


def day_of(ts: float) -> str:
    """YYYY-MM-DD (UTC) of POSIX seconds."""
    return time.strftime("%Y-%m-%d", time.gmtime(ts))


def keep(served: list[ServedList], now: float, retention: float, cap: int) -> list[ServedList]:
    """The lists still kept at ``now``: served at most ``retention`` seconds ago, the ``cap`` newest."""
    kept = [s for s in served if s.served_at >= now - retention]
    return kept[-cap:]


def bump(deltas: Deltas, shard: int, key: str, exposure: Exposure, metric: str, amount: float) -> None:
    """Add ``amount`` to one per-visitor value and the matching sum, square and cross-product counters."""
    if not amount:
        return
    experiment, variant, scope = key.split(SEP)
    old = exposure.values.get(metric, 0.0)
    exposure.values[metric] = old + amount
    deltas.add(experiment, shard, sum_name("s", scope, variant, metric), amount)
    deltas.add(experiment, shard, sum_name("q", scope, variant, metric), 2 * old * amount + amount * amount)
    if metric in ("clicks", "impressions"):
        other = exposure.values.get("impressions" if metric == "clicks" else "clicks", 0.0)
        deltas.add(experiment, shard, sum_name("x", scope, variant, CROSS), other * amount)


def _daily(deltas: Deltas, shard: int, served: ServedList, day: str, metric: str, amount: float) -> None:
    deltas.add(SUMMARY, shard, daily_name(day, served.stage, SUMMARY, metric), amount)
    if served.experiment != SUMMARY:
        deltas.add(served.experiment, shard, daily_name(day, served.stage, served.variant, metric), amount)


def scopes_of(served: ServedList) -> tuple[str, str]:
    """The exposure keys a list counts in (its stage, and ``"all"``)."""
    return (
        exposure_key(served.experiment, served.variant, served.stage),
        exposure_key(served.experiment, served.variant, ALL),
    )


def _exposure(state: VisitorFeedback, key: str, served: ServedList, deltas: Deltas, shard: int) -> Exposure:
    """The exposure ``key`` of a list, created (and its visitor counted) by whichever of the list's count
    and its first attributed event comes first."""
    exposure = state.exposures.get(key)
    if exposure is None:
        exposure = state.exposures[key] = Exposure(first=served.served_at)
        deltas.add(served.experiment, shard, visitors_name(key.split(SEP)[2], served.variant), 1.0)
    elif served.served_at < exposure.first:
        exposure.first = served.served_at
    return exposure


def count_served(state: VisitorFeedback, served: ServedList, *, shard: int) -> Deltas:
    """Count a served list (daily cell, exposures); returns the counter increments. Keeping the list is
    the store's part (``keep``)."""
    deltas = Deltas()
    _daily(deltas, shard, served, day_of(served.served_at), "lists", 1.0)
    if served.experiment != SUMMARY:
        for key in scopes_of(served):
            bump(deltas, shard, key, _exposure(state, key, served, deltas, shard), "lists", 1.0)
    return deltas


def record(state: VisitorFeedback, event: Event, windows: Windows, *, shard: int, deltas: Deltas) -> Method:
    """Attribute one (new) event, remember its touch, count it; returns how it was credited."""
    found = attribute(state.served, event, windows)
    value = float(event.value or 0.0) if event.event is EventType.PURCHASE else 0.0
    if found is not None:
        served = found.served
        if event.event is EventType.IMPRESSION:
            served.impressions[event.item_id] = max(
                event.timestamp, served.impressions.get(event.item_id, 0.0)
            )
        elif event.event is EventType.PRODUCT_VIEW:
            served.clicks[event.item_id] = max(event.timestamp, served.clicks.get(event.item_id, 0.0))
        metric = EVENT_METRIC[event.event]
        day = day_of(event.timestamp)
        _daily(deltas, shard, served, day, metric, 1.0)
        _daily(deltas, shard, served, day, "revenue", value)
        if served.experiment != SUMMARY:
            for key in scopes_of(served):
                exposure = _exposure(state, key, served, deltas, shard)
                bump(deltas, shard, key, exposure, metric, 1.0)
                bump(deltas, shard, key, exposure, "revenue", value)
    indicator = EVENT_INDICATOR.get(event.event)
    if indicator is not None:
        for key, exposure in state.exposures.items():
            if exposure.first <= event.timestamp:
                if not exposure.values.get(indicator):
                    bump(deltas, shard, key, exposure, indicator, 1.0)
                bump(deltas, shard, key, exposure, "revenue_all", value)
    return Method.UNATTRIBUTED if found is None else found.method
