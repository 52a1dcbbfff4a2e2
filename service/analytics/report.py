"""The journey analytics answer from stored rollups: the query's range checked, the periods read, counts
summed and visitor sets united over the range (``service.analytics.schemas`` says what each figure is)."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from models.analytics import N_BUCKETS, funnel, median_of_histogram, rate, row_rates
from models.domain import STAGES, Stage
from models.errors import InvalidInputError
from service.analytics.periods import LENGTH, Granularity, covering
from service.analytics.schemas import (
    ByTimeOut,
    FunnelStepOut,
    GroupOut,
    ImpactOut,
    JourneyAnalyticsOut,
    PeriodOut,
    StageImpactOut,
    TimeInStageOut,
    TransitionOut,
)
from service.analytics.store_base import (
    ADVANCED,
    CAME,
    CHANNELS,
    CLICKED,
    SEEN,
    AnalyticsStore,
    PeriodData,
)
from service.schemas import iso_utc

DEFAULT_SPAN: dict[Granularity, float] = {"hour": 86_400.0, "day": 7 * 86_400.0}
IMPACT_NOTE = (
    "descriptive, not causal: visitors who click recommendations differ from those who do not in many ways; "
    "run an experiment to measure the effect of recommendations"
)
NOTES = [
    "time in stage is read from bucketed counts (fixed bucket edges): medians are interpolated in a bucket",
    (
        "transitions by time (an abandoned cart expiring, a customer lapsing) are counted by each worker's "
        "sweep (JOURNEYREC_JOURNEY_SWEEP_SECONDS) soon after they take effect, or when the visitor is next "
        "seen if that comes first, and dated when they took effect"
    ),
    "by_time (abandoned carts, lapsed customers) counts every visitor: a change by time has no channel",
]


def parse_time(raw: str, name: str) -> float:
    """ISO-8601 (a date, or a date and time; no offset means UTC) or POSIX seconds."""
    text = raw.strip()
    try:
        value = float(text)
    except ValueError:
        pass
    else:
        if math.isfinite(value):
            return value
        raise InvalidInputError(f"query parameter {name!r}: {raw!r} is not a finite time")
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(
            f"query parameter {name!r}: {raw!r} is not an ISO-8601 time (2026-11-30, 2026-11-30T14:00Z) "
            "or POSIX seconds"
        ) from None
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()


def check_query(
    start: str | None,
    end: str | None,
    granularity: str,
    channel: str | None,
    max_days: dict[Granularity, int],
    now: float,
) -> tuple[float, float, Granularity]:
    """(from, to, granularity) of a query, or InvalidInputError naming the parameter."""
    if granularity not in ("hour", "day"):
        raise InvalidInputError(f"query parameter 'granularity': {granularity!r} is unknown; use hour or day")
    g: Granularity = "hour" if granularity == "hour" else "day"
    if channel is not None and channel not in CHANNELS:
        raise InvalidInputError(
            f"query parameter 'channel': {channel!r} is unknown; use {', '.join(CHANNELS)}"
        )
    to = parse_time(end, "to") if end is not None else now
    frm = parse_time(start, "from") if start is not None else to - DEFAULT_SPAN[g]
    if frm >= to:
        raise InvalidInputError(f"query parameter 'from': {iso_utc(frm)} is not before 'to' ({iso_utc(to)})")
    n = len(covering(frm, to, g))
    limit = int(max_days[g] * 86_400.0 / LENGTH[g])
    if n > limit:
        raise InvalidInputError(
            f"query parameters 'from' and 'to': {n} {g}s is too long a range at granularity {g}; at most "
            f"{limit} ({max_days[g]} days, the {g}ly rollups' retention)"
        )
    return frm, to, g


async def journey_report(
    store: AnalyticsStore, frm: float, to: float, granularity: Granularity, channel: str | None
) -> JourneyAnalyticsOut:
    starts = covering(frm, to, granularity)
    periods = await store.read(granularity, starts)
    return build(periods, frm, to, granularity, channel)


def _fields(counts: dict[str, int], kind: str, channel: str | None) -> list[tuple[list[str], int]]:
    """The counter fields of one kind (``t``, ``e``, ``d``) split at "|", channel filtered (the channel
    is the last part of ``t`` and ``e`` fields, the one before the bucket in ``d`` fields)."""
    out = []
    for field, n in counts.items():
        parts = field.split("|")
        if parts[0] != kind:
            continue
        ch = parts[2] if kind == "d" else parts[-1]
        if channel is None or ch == channel:
            out.append((parts[1:], n))
    return out


def build(
    periods: list[PeriodData], frm: float, to: float, granularity: Granularity, channel: str | None
) -> JourneyAnalyticsOut:
    stage_of = {s.value: s for s in Stage}
    transitions: dict[tuple[Stage, Stage], int] = {}
    by_time: dict[tuple[Stage, Stage], int] = {}
    dwell: dict[Stage, list[int]] = {s: [0] * N_BUCKETS for s in STAGES}
    first = 0
    union: dict[str, set[str]] = {}
    series: list[PeriodOut] = []
    for p in periods:
        came = _came(p.sets, channel)
        visitors = {s.value: len(_only(p.sets.get(SEEN + s.value, set()), came)) for s in STAGES}
        entries = {s.value: 0 for s in STAGES}
        for (stage, _), n in _fields(p.counts, "e", channel):
            entries[stage] += n
        moved = 0
        for (src, dst, _), n in _fields(p.counts, "t", channel):
            key = (stage_of[src], stage_of[dst])
            transitions[key] = transitions.get(key, 0) + n
            moved += n
        first += sum(entries.values()) - moved
        for (stage, _, bucket), n in _fields(p.counts, "d", channel):
            dwell[stage_of[stage]][int(bucket)] += n
        left = {s.value: 0 for s in STAGES}  # changes by time out of each stage
        for (src, dst), n in _fields(p.counts, "x", None):
            key = (stage_of[src], stage_of[dst])
            by_time[key] = by_time.get(key, 0) + n
            left[src] += n
        series.append(
            PeriodOut(
                iso_utc(p.start),
                visitors,
                entries,
                moved,
                left[Stage.DECISION.value],
                left[Stage.RETENTION.value],
            )
        )
        for name, members in p.sets.items():
            union.setdefault(name, set()).update(members)
    rates = row_rates(transitions)
    by_time_rates = row_rates(by_time)
    order = {s: s.index for s in STAGES}
    listed = sorted(transitions, key=lambda k: (order[k[0]], order[k[1]]))
    matrix = {s.value: {t.value: transitions.get((s, t), 0) for t in STAGES} for s in STAGES}
    came = _came(union, channel)
    seen = [_only(union.get(SEEN + s.value, set()), came) for s in STAGES]
    clicked = union.get(CLICKED, set())
    impact = []
    for s, in_stage in zip(STAGES, seen, strict=True):
        advanced = _only(union.get(ADVANCED + s.value, set()), came)
        yes, no = in_stage & clicked, in_stage - clicked
        impact.append(
            StageImpactOut(
                s,
                GroupOut(len(yes), len(advanced & yes), rate(len(advanced & yes), len(yes))),
                GroupOut(len(no), len(advanced & no), rate(len(advanced & no), len(no))),
            )
        )
    times = []
    for s in STAGES:
        m = median_of_histogram(dwell[s])
        times.append(
            TimeInStageOut(
                s,
                sum(dwell[s]),
                m.seconds if m else None,
                m.low if m else None,
                m.high if m else None,
            )
        )
    return JourneyAnalyticsOut(
        from_=iso_utc(frm),
        to=iso_utc(to),
        granularity=granularity,
        channel=channel,
        periods=series,
        transitions=[TransitionOut(a, b, transitions[a, b], rates[a, b]) for a, b in listed],
        matrix=matrix,
        first_sightings=first,
        time_in_stage=times,
        funnel=[FunnelStepOut(f.stage, f.visitors, f.drop_off) for f in funnel(seen)],
        recommendation_impact=ImpactOut("descriptive", False, IMPACT_NOTE, impact),
        by_time=ByTimeOut(
            abandoned_carts=sum(p.abandoned_carts for p in series),
            lapsed=sum(p.lapsed for p in series),
            transitions=[
                TransitionOut(a, b, n, r)
                for (a, b), n, r in sorted(
                    ((k, n, by_time_rates[k]) for k, n in by_time.items()),
                    key=lambda x: (order[x[0][0]], order[x[0][1]]),
                )
            ],
        ),
        notes=NOTES,
    )


def _came(sets: dict[str, set[str]], channel: str | None) -> set[str] | None:
    """The visitors who came through ``channel`` (None: no filter)."""
    return None if channel is None else sets.get(CAME + channel, set())


def _only(members: set[str], came: set[str] | None) -> set[str]:
    return members if came is None else members & came
