"""Journey analytics, the pure parts: stage changes of many visitors at once, and the read-side maths.

Stage walk (``walk_stages``): for every visitor of an ingest request, from the stage recorded for them
(``prev_stage``, entered at ``prev_since``) to their stage at ``now``, replaying what the stored events
say happened since:

- The stage is a piecewise-constant function of time. It can change only at an event, or when a rule
  threshold is crossed: a cart action ``cart_ttl_hours`` old (an abandoned cart expires), a
  review/share/referral ``advocacy_days`` old, a purchase ``retention_days`` old (the customer lapses) or
  ``retention_grace_days`` old (a new journey may start), a consideration event ``consider_window_days``
  old (it leaves the window). The engine is asked just after each such moment inside (``prev_since``,
  ``now``) over the events before it, as ``models.journey.infer_stage`` would have answered then; each
  change is dated at its moment, caused by the event (``BY_EVENT``) or by time (``BY_TIME``).
- Then the engine at ``now`` over every stored event before ``now``; a change found only there
  (``BY_REQUEST``) is dated ``now``: events that arrived late, with times before the recorded change.
- A visitor with no record (``prev_stage`` -1) is replayed from their first stored event: the first
  change, from -1, is their first sighting (not a transition).

The walk depends only on the stored events and the record, so it can be asked again: a visitor whose stage
did not change needs no write, and a visitor two requests evaluate at once changes once (the service
writes records compare-and-set).

Every stage comes from ``models.journey.stages_of_queries``, the engine's vectorised path, in one
call for the whole request; the lexicographic sorts and searches over (visitor, time) run on complex
numbers (``_pairs``), one pass each. Time in a stage is ``at`` of the change that left it minus the time
it was entered, counted in fixed buckets (``DWELL_EDGES``) so a median can be read from counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import msgspec
import numpy as np

from models.domain import DAY, HOUR, STAGES, EventType, Stage
from models.journey import DEFAULT_RULES, JourneyRules, stages_of_queries

MINUTE = 60.0
#: lower edges (seconds) of the time-in-stage buckets; bucket i is [EDGES[i], EDGES[i + 1]), the last one
#: is open ([180 days, inf))
DWELL_EDGES: tuple[float, ...] = (
    0.0,
    MINUTE,
    5 * MINUTE,
    15 * MINUTE,
    HOUR,
    3 * HOUR,
    6 * HOUR,
    12 * HOUR,
    DAY,
    2 * DAY,
    4 * DAY,
    7 * DAY,
    14 * DAY,
    30 * DAY,
    60 * DAY,
    90 * DAY,
    180 * DAY,
)
N_BUCKETS = len(DWELL_EDGES)

_CART = (EventType.ADD_TO_CART.code, EventType.CHECKOUT.code)
_ADVOCACY = (EventType.REVIEW.code, EventType.SHARE.code, EventType.REFERRAL.code)
_PURCHASE = EventType.PURCHASE.code
# bool[code]: whether an event code is one of the kinds (a table look-up, where np.isin sorts)
_IS_CART = np.isin(np.arange(256), _CART)
_IS_ADVOCACY = np.isin(np.arange(256), _ADVOCACY)


#: what caused a change (``Walk.cause``)
BY_TIME, BY_EVENT, BY_REQUEST = 0, 1, 2


class Walk(msgspec.Struct, frozen=True):
    """Stage changes of ``m`` visitors (``c`` changes, by visitor then time).

    visitor  int64[c]    the visitor's index
    source   int8[c]     ``Stage.index`` left; -1: a first sighting (the visitor had no record)
    target   int8[c]     ``Stage.index`` entered
    at       float64[c]  when the change took effect (POSIX s)
    dwell    float64[c]  seconds spent in ``source`` (NaN for a first sighting); never negative
    cause    int8[c]     ``BY_TIME`` (a threshold crossed), ``BY_EVENT`` (the event ``row``) or
                         ``BY_REQUEST`` (found at ``now`` only: a first sighting, or events that arrived
                         with times before the record's)
    row      int64[c]    the index (into the arrays passed in) of the event of a ``BY_EVENT`` change, else -1
    stage    int8[m]     each visitor's stage at ``now``
    since    float64[m]  when each visitor entered it
    due      float64[m]  when each visitor's stage next changes by time alone, if no event comes first (a
                         threshold ahead of ``now``; inf: never), or a lower bound of it (``exact_due``)
    """

    visitor: np.ndarray
    source: np.ndarray
    target: np.ndarray
    at: np.ndarray
    dwell: np.ndarray
    cause: np.ndarray
    row: np.ndarray
    stage: np.ndarray
    since: np.ndarray
    due: np.ndarray


def _pairs(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """complex128[n]: ``major + minor i``, built part by part (exact: no product is formed, so an infinite
    ``minor`` stays itself). numpy orders complex numbers by real part, then imaginary part: one sort or
    binary search over these is a lexicographic one over (major, minor), where ``np.lexsort`` takes one
    sorting pass per key and no binary search exists."""
    out = np.empty(len(major), dtype=np.complex128)
    out.real = major
    out.imag = minor
    return out


def _lex_order(major: np.ndarray, minor: np.ndarray) -> np.ndarray:
    """``np.lexsort((minor, major))``: the stable order by (major, minor), ties in input order."""
    return np.argsort(_pairs(major, minor), kind="stable")


def _rows_before(v: np.ndarray, t: np.ndarray, qv: np.ndarray, qt: np.ndarray) -> np.ndarray:
    """int64[q]: for each query, the end (exclusive, global row index) of visitor ``qv``'s rows with
    ``t < qt`` in a log sorted by (v, t)."""
    return np.searchsorted(_pairs(v, t), _pairs(qv, qt), side="left").astype(np.int64)


def _thresholds(t: np.ndarray, c: np.ndarray, rules: JourneyRules) -> tuple[np.ndarray, np.ndarray]:
    """(int64[k] row, float64[k] time): each moment a row's rule threshold is crossed."""
    weight = rules.consider_vector()[c] if len(c) else np.zeros(0)
    purchase = c == _PURCHASE
    parts = [
        (_IS_CART[c], rules.cart_ttl_hours * HOUR),
        (_IS_ADVOCACY[c], rules.advocacy_days * DAY),
        (purchase, rules.retention_days * DAY),
        (purchase, rules.retention_grace_days * DAY),
        (weight > 0, rules.consider_window_days * DAY),
    ]
    rows = np.concatenate([np.flatnonzero(mask) for mask, _ in parts]).astype(np.int64)
    times = np.concatenate([t[mask] + delay for mask, delay in parts])
    return rows, times


def walk_stages(
    owner: np.ndarray,
    ts: np.ndarray,
    codes: np.ndarray,
    prev_stage: np.ndarray,
    prev_since: np.ndarray,
    now: float,
    rules: JourneyRules = DEFAULT_RULES,
    *,
    exact_due: bool = True,
) -> Walk:
    """The stage changes of ``m`` visitors from their recorded stage to ``now`` (module docstring).

    ``exact_due``: ``Walk.due`` is the next change by time; false: a lower bound of it, the first
    threshold ahead, which costs no stage evaluation (a walk at that time finds the exact one).

    owner int[n]: the visitor index (0..m-1) of each stored event; ts float64[n]; codes int[n]
    (``EventType.code``), in any order. prev_stage int[m] (``Stage.index``, -1: no record), prev_since
    float64[m]: when the recorded stage was entered (ignored where there is no record).
    """
    m = len(prev_stage)
    prev_stage = np.asarray(prev_stage, dtype=np.int8)
    # a visitor with no record is replayed from their first stored event
    since0 = np.where(prev_stage >= 0, np.asarray(prev_since, dtype=np.float64), -np.inf)
    v, t = np.asarray(owner, dtype=np.int64), np.asarray(ts, dtype=np.float64)
    # the stores hand the log over grouped by visitor in time order: then it is its own sort
    step = v[1:] - v[:-1]
    in_order = bool(np.all((step > 0) | ((step == 0) & (t[1:] >= t[:-1]))))
    order = np.arange(len(v)) if in_order else _lex_order(v, t)
    v, t = v[order], t[order]
    c = np.asarray(codes, dtype=np.int8)[order]
    everyone = np.arange(m, dtype=np.int64)
    # the moments the stage may change after the record's: each event, and each threshold it crosses
    th_rows, th_times = _thresholds(t, c, rules)
    all_rows = np.concatenate([np.arange(len(t), dtype=np.int64), th_rows])
    all_t = np.concatenate([t, th_times])
    is_event = np.concatenate([np.ones(len(t), np.int8), np.zeros(len(th_rows), np.int8)])
    inside = (all_t > since0[v[all_rows]]) & (all_t < now)
    cand_row, cand_t, cand_event = all_rows[inside], all_t[inside], is_event[inside]
    cand_v = v[cand_row]
    if len(cand_v):  # one query per (visitor, moment); an event (first in all_t) before a threshold
        o = _lex_order(cand_v, cand_t)
        cand_v, cand_t, cand_row, cand_event = cand_v[o], cand_t[o], cand_row[o], cand_event[o]
        first = np.r_[True, (cand_v[1:] != cand_v[:-1]) | (cand_t[1:] != cand_t[:-1])]
        cand_v, cand_t, cand_row, cand_event = (
            cand_v[first],
            cand_t[first],
            cand_row[first],
            cand_event[first],
        )
    # a stage holds at the moment itself (the thresholds are "<=") and an event counts from its own time:
    # each moment is asked just after it, over the events before that
    # (and the thresholds still ahead, for ``due``)
    ahead = th_times >= now
    fut_v, fut_t = v[th_rows[ahead]], th_times[ahead]
    due = np.full(m, np.inf)
    if not exact_due:
        np.minimum.at(due, fut_v, fut_t)
        fut_v, fut_t = fut_v[:0], fut_t[:0]
    q_time = np.concatenate([np.nextafter(cand_t, np.inf), np.full(m, now), np.nextafter(fut_t, np.inf)])
    q_v = np.concatenate([cand_v, everyone, fut_v])
    q_end = _rows_before(v, t, q_v, q_time)
    stage, _ = stages_of_queries(v, t, c, q_v, q_end, q_time, rules, confidence=False)
    final = stage[len(cand_v) : len(cand_v) + m]
    if exact_due:  # the first threshold ahead after which the stage is no longer the one at now
        turns = stage[len(cand_v) + m :] != final[fut_v]
        np.minimum.at(due, fut_v[turns], fut_t[turns])

    # the walk: each visitor's recorded stage, then the stage at each moment, then the stage at now
    w_v = np.concatenate([everyone, cand_v, everyone])
    # dated now, or when the record's stage was entered if another worker's clock was ahead of this one
    w_t = np.concatenate(
        [np.full(m, -np.inf), cand_t, np.maximum(now, np.where(np.isfinite(since0), since0, now))]
    )
    w_s = np.concatenate([prev_stage, stage[: len(cand_v)], final])
    w_k = np.concatenate([np.full(m, -1, np.int8), cand_event, np.full(m, BY_REQUEST, np.int8)])
    w_r = np.concatenate([np.full(m, -1), np.where(cand_event == 1, order[cand_row], -1), np.full(m, -1)])
    o = _lex_order(w_v, w_t)  # at equal (visitor, time): record, moments, now, as concatenated
    w_v, w_t, w_s, w_k, w_r = w_v[o], w_t[o], w_s[o], w_k[o], w_r[o]
    change = np.flatnonzero((w_v[1:] == w_v[:-1]) & (w_s[1:] != w_s[:-1])) + 1
    ch_v, ch_at, source = w_v[change], w_t[change], w_s[change - 1]
    same = np.r_[False, ch_v[1:] == ch_v[:-1]]
    entered = np.where(same, np.r_[np.nan, ch_at[:-1]], prev_since[ch_v] if m else np.zeros(0))
    dwell = np.where(source < 0, np.nan, np.maximum(ch_at - entered, 0.0))
    since = np.asarray(prev_since, dtype=np.float64).copy()
    last = np.r_[ch_v[1:] != ch_v[:-1], True] if len(ch_v) else np.zeros(0, dtype=bool)
    since[ch_v[last]] = ch_at[last]
    return Walk(
        visitor=ch_v,
        source=source,
        target=w_s[change],
        at=ch_at,
        dwell=dwell,
        cause=w_k[change],
        row=w_r[change].astype(np.int64),
        stage=final,
        since=since,
        due=due,
    )


def dwell_buckets(seconds: np.ndarray) -> np.ndarray:
    """int64[c]: the ``DWELL_EDGES`` bucket of each duration (negative durations go to bucket 0)."""
    return np.maximum(np.searchsorted(DWELL_EDGES, seconds, side="right") - 1, 0).astype(np.int64)


class Median(msgspec.Struct, frozen=True):
    """A median read from bucketed counts: ``seconds`` interpolated linearly inside the bucket
    [``low``, ``high``) that holds it (``high`` None: the open last bucket, and ``seconds`` is its lower
    edge, a lower bound)."""

    seconds: float
    low: float
    high: float | None


def median_of_histogram(counts: Sequence[int], edges: Sequence[float] = DWELL_EDGES) -> Median | None:
    """The median of values counted in buckets (``counts[i]`` values in [edges[i], edges[i + 1])); None
    when nothing was counted."""
    total = sum(counts)
    if total <= 0:
        return None
    half = total / 2.0
    below = 0
    for i, n in enumerate(counts):
        if n > 0 and below + n >= half:
            low = float(edges[i])
            if i + 1 >= len(edges):
                return Median(low, low, None)
            high = float(edges[i + 1])
            return Median(low + (half - below) / n * (high - low), low, high)
        below += n
    raise AssertionError("unreachable: the counts add up to total")


def row_rates(counts: Mapping[tuple[Stage, Stage], int]) -> dict[tuple[Stage, Stage], float]:
    """Each transition's share of the transitions out of its source stage (rows of the matrix sum to 1)."""
    out_of: dict[Stage, int] = {}
    for (src, _), n in counts.items():
        out_of[src] = out_of.get(src, 0) + n
    return {k: (n / out_of[k[0]] if out_of[k[0]] else 0.0) for k, n in counts.items()}


def is_advance(source: Stage, target: Stage) -> bool:
    """A move to a later stage in journey order (awareness → ... → advocacy)."""
    return target.index > source.index


class FunnelStep(msgspec.Struct, frozen=True):
    """visitors: distinct visitors who were in ``stage`` or a later one in the period; drop_off: the share
    of the previous step's visitors not at this step (None for the first step or an empty previous step)."""

    stage: Stage
    visitors: int
    drop_off: float | None


def funnel(seen: Sequence[Iterable[str]]) -> list[FunnelStep]:
    """The funnel over ``STAGES`` from the visitors seen in each stage (``seen[i]`` for ``STAGES[i]``):
    step i counts the visitors seen in stage i or a later one, so the steps never grow."""
    if len(seen) != len(STAGES):
        raise ValueError(f"funnel needs one visitor set per stage ({len(STAGES)}), got {len(seen)}")
    reached: set[str] = set()
    at_least = [0] * len(STAGES)
    for i in range(len(STAGES) - 1, -1, -1):
        reached.update(seen[i])
        at_least[i] = len(reached)
    return drop_offs(at_least)


def drop_offs(at_least: Sequence[int]) -> list[FunnelStep]:
    """Funnel steps from the count of visitors at each step (``STAGES`` order)."""
    steps: list[FunnelStep] = []
    for i, n in enumerate(at_least):
        prev = at_least[i - 1] if i else 0
        steps.append(FunnelStep(STAGES[i], n, (1.0 - n / prev) if i and prev else None))
    return steps


def rate(part: int, whole: int) -> float | None:
    """part / whole, None when whole is 0."""
    return part / whole if whole else None
