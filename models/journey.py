"""The journey-stage engine: where a visitor is in the customer journey, how sure we are, and why.

The stage is a pure function of the visitor's events and "now". It is computed from a handful of per-visitor
quantities (is a cart open and since when, the last purchase, the last review/share/referral, how much
consideration activity the recent window holds) that are evaluated *vectorised* for many (visitor, time)
queries at once: ``stages_at`` (every visitor at one moment, offline) and ``stages_before_events`` (the
stage each visitor was in just before each of their events, for training) go through ``_state`` /
``_classify``, and so does ``stages_after_events`` (the stage one visitor was in just after each of their
events, for the journey answer's touchpoints). ``infer_stage`` (one live visitor, with the human-readable
signals) goes through their plain-Python twins ``_state_one`` / ``_classify_one``, because numpy on
one-element arrays costs more than the rules; hypothesis tests check each twin against the vectorised
code, so training, evaluation and serving cannot drift apart about a stage.

Rules, in priority order (thresholds are ``JourneyRules`` fields, documented there):

1. decision       a cart is open (more adds than removes since the last purchase, or a checkout) and the last
                  cart action is younger than ``cart_ttl_hours``: an abandoned cart expires.
2. advocacy       a review, share or referral within ``advocacy_days``.
3. retention      a purchase within ``retention_days``, unless the visitor started a new journey after it
                  (consideration activity since the purchase, once ``retention_grace_days`` have passed).
                  A lapsed customer (older purchase) drifts back to consideration or awareness.
4. consideration  weighted product views / compares / wishlists / searches within ``consider_window_days``
                  reach ``consider_threshold``.
5. awareness      everything else, including a visitor with no history at all.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from operator import attrgetter

import msgspec
import numpy as np
from numpy.typing import ArrayLike

from models.dataset import EventLog
from models.domain import DAY, EVENT_TYPES, HOUR, STAGES, Event, EventType, Stage
from models.reasons import duration

_ADD = EventType.ADD_TO_CART.code
_REMOVE = EventType.REMOVE_FROM_CART.code
_CHECKOUT = EventType.CHECKOUT.code
_PURCHASE = EventType.PURCHASE.code
_ADVOCACY = (EventType.REVIEW.code, EventType.SHARE.code, EventType.REFERRAL.code)

_timestamp = attrgetter("timestamp")

DEFAULT_CONSIDER_WEIGHTS: dict[EventType, float] = {
    EventType.PRODUCT_VIEW: 1.0,
    EventType.COMPARE: 2.0,
    EventType.WISHLIST: 2.0,
    EventType.SEARCH: 0.5,
}


class JourneyRules(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds of the stage engine. Defaults are the documented ones; they are stored in every model.

    cart_ttl_hours        an open cart counts as "deciding" for this long after the last cart action (72 h)
    advocacy_days         a review/share/referral keeps a visitor an advocate this long (30 days)
    retention_days        a purchase makes a customer to retain for this long (90 days), then they lapse
    retention_grace_days  browsing right after a purchase does not end retention (3 days)
    consider_window_days  consideration activity is counted over this window (14 days)
    consider_threshold    weighted activity in the window that makes a visitor "considering" (3.0)
    consider_weights      weight of each event type in that activity (product view 1, compare 2, wishlist 2,
                          search 0.5; other events 0)
    """

    cart_ttl_hours: float = 72.0
    advocacy_days: float = 30.0
    retention_days: float = 90.0
    retention_grace_days: float = 3.0
    consider_window_days: float = 14.0
    consider_threshold: float = 3.0
    consider_weights: dict[EventType, float] = msgspec.field(
        default_factory=lambda: dict(DEFAULT_CONSIDER_WEIGHTS)
    )

    def __post_init__(self) -> None:
        for name in (
            "cart_ttl_hours",
            "advocacy_days",
            "retention_days",
            "consider_window_days",
            "consider_threshold",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"JourneyRules.{name} must be > 0, got {getattr(self, name)}")
        if self.retention_grace_days < 0:
            raise ValueError("JourneyRules.retention_grace_days must be >= 0")

    def consider_vector(self) -> np.ndarray:
        """float64[len(EventType)] consideration weight by ``EventType.code``."""
        return np.array([self.consider_weights.get(e, 0.0) for e in EVENT_TYPES], dtype=np.float64)


DEFAULT_RULES = JourneyRules()


class StageResult(msgspec.Struct, frozen=True):
    """A stage, a confidence in [0, 1] and the signals that decided it (human-readable)."""

    stage: Stage
    confidence: float
    signals: list[str]


class _State(msgspec.Struct, frozen=True):
    """The quantities the rules look at, one entry per query (all float64[q] unless noted).

    Ages are in seconds and ``inf`` when the event never happened.
    n_events       int64[q] events before the query
    cart_open      bool[q]
    cart_age       since the last cart action (add or checkout)
    purchase_age   since the last purchase
    advocacy_age   since the last review/share/referral
    consider       weighted consideration activity in the window
    consider_new   the same, counting only activity after the last purchase
    """

    n_events: np.ndarray
    cart_open: np.ndarray
    cart_age: np.ndarray
    purchase_age: np.ndarray
    advocacy_age: np.ndarray
    consider: np.ndarray
    consider_new: np.ndarray


def _last_index(mark: np.ndarray) -> np.ndarray:
    """int64[n+1]: for a prefix of length p (entry p), the index of the last marked row in it, -1 if none."""
    idx = np.where(mark, np.arange(len(mark)), -1)
    return np.concatenate([[-1], np.maximum.accumulate(idx)]) if len(mark) else np.full(1, -1)


def _state(
    visitor: np.ndarray,
    ts: np.ndarray,
    event: np.ndarray,
    q_visitor: np.ndarray,
    q_end: np.ndarray,
    q_time: np.ndarray,
    rules: JourneyRules,
) -> _State:
    """Evaluate the rule quantities for queries over an event log sorted by (visitor, ts).

    visitor int[n], ts float64[n], event int8[n]: the log, sorted by (visitor, ts).
    q_visitor int[q]: the visitor of each query; q_end int64[q]: the query sees the rows
    [first row of the visitor, q_end); q_time float64[q]: "now" of each query.
    """
    n = len(visitor)
    v = visitor.astype(np.int64)
    qv = q_visitor.astype(np.int64)
    n_vis = int(max(v.max(initial=-1), qv.max(initial=-1))) + 1
    start = np.searchsorted(v, np.arange(n_vis), side="left")[qv]
    end = np.asarray(q_end, dtype=np.int64)
    qt = np.asarray(q_time, dtype=np.float64)

    def age_of_last(mark: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        last = _last_index(mark)[end]
        has = last >= start
        age = np.where(has, qt - ts[np.clip(last, 0, max(n - 1, 0))] if n else np.inf, np.inf)
        return age, np.where(has, last, start - 1)

    purchase_age, last_purchase = age_of_last(event == _PURCHASE)
    advocacy_age, _ = age_of_last((event == _ADVOCACY[0]) | (event == _ADVOCACY[1]) | (event == _ADVOCACY[2]))
    cart_age, _ = age_of_last((event == _ADD) | (event == _CHECKOUT))
    checkout_age, last_checkout = age_of_last(event == _CHECKOUT)

    # net cart size since the last purchase (adds minus removes); a checkout after it also means "open"
    delta = np.where(event == _ADD, 1, np.where(event == _REMOVE, -1, 0)).astype(np.int64)
    c0 = np.concatenate([[0], np.cumsum(delta)])
    since = last_purchase + 1
    cart_open = ((c0[end] - c0[since]) > 0) | (last_checkout > last_purchase)
    cart_open &= np.isfinite(cart_age) | np.isfinite(checkout_age)

    # consideration activity inside (now - window, now], and inside (max(that, last purchase), now]
    w = rules.consider_vector()[event] if n else np.zeros(0)
    s0 = np.concatenate([[0.0], np.cumsum(w)])
    t0 = float(ts.min()) if n else 0.0
    span = float(max(ts.max() if n else 0.0, qt.max(initial=0.0)) - min(t0, qt.min(initial=t0))) + 1.0
    span += rules.consider_window_days * DAY + 2.0
    base = min(t0, float(qt.min(initial=t0))) - rules.consider_window_days * DAY - 1.0
    key = v * span + (ts - base)
    lo_t = qt - rules.consider_window_days * DAY
    lo = np.searchsorted(key, qv * span + (lo_t - base), side="right")
    lo = np.clip(lo, start, end)
    consider = s0[end] - s0[lo]
    consider_new = s0[end] - s0[np.maximum(lo, since)]
    return _State(
        n_events=end - start,
        cart_open=cart_open,
        cart_age=np.where(np.isfinite(cart_age), cart_age, checkout_age),
        purchase_age=purchase_age,
        advocacy_age=advocacy_age,
        consider=consider,
        consider_new=consider_new,
    )


def _state_one(ts: Sequence[float], codes: Sequence[int], now: float, rules: JourneyRules) -> _State:
    """``_state`` for one visitor and one query (every event is before ``now``, in time order), in one
    pass of plain Python: the request path asks this once per call, where ~40 numpy calls on arrays of a
    few dozen events cost more than the work. ``test_journey`` checks that both give the same quantities."""
    inf = float("inf")
    last_purchase = last_checkout = -1
    purchase_t = advocacy_t = cart_t = -inf
    weight = rules.consider_vector().tolist()
    window_start = now - rules.consider_window_days * DAY
    consider = consider_new = 0.0
    net = 0  # adds minus removes since the last purchase
    for i, (t, c) in enumerate(zip(ts, codes, strict=True)):
        if t > window_start:
            consider += weight[c]
            consider_new += weight[c]
        if c == _PURCHASE:  # a new journey starts after it (its own weight counts only in `consider`)
            last_purchase, purchase_t, net, consider_new = i, t, 0, 0.0
        elif c == _ADD:
            net += 1
            cart_t = t
        elif c == _REMOVE:
            net -= 1
        elif c == _CHECKOUT:
            last_checkout = i
            cart_t = t
        elif c in _ADVOCACY:
            advocacy_t = t
    cart_open = (net > 0 or last_checkout > last_purchase) and cart_t > -inf

    def one(x: float) -> np.ndarray:
        return np.array([x], dtype=np.float64)

    return _State(
        n_events=np.array([len(ts)], dtype=np.int64),
        cart_open=np.array([cart_open]),
        cart_age=one(now - cart_t if cart_t > -inf else inf),
        purchase_age=one(now - purchase_t if purchase_t > -inf else inf),
        advocacy_age=one(now - advocacy_t if advocacy_t > -inf else inf),
        consider=one(consider),
        consider_new=one(consider_new),
    )


def _unit(x: np.ndarray) -> np.ndarray:
    """x clipped to [0, 1] (two ufuncs: np.clip's wrapper costs more on the one-visitor path)."""
    return np.minimum(np.maximum(x, 0.0), 1.0)


class _Picker:
    """The rules' masks over the queries of a ``_State``; ``pick`` takes, per query, the value of the
    first rule that holds (in priority order), else the default."""

    def __init__(self, s: _State, rules: JourneyRules) -> None:
        self.deciding = s.cart_open & (s.cart_age <= rules.cart_ttl_hours * HOUR)
        self.advocate = s.advocacy_age <= rules.advocacy_days * DAY
        new_journey = (s.consider_new >= rules.consider_threshold) & (
            s.purchase_age > rules.retention_grace_days * DAY
        )
        self.retained = (s.purchase_age <= rules.retention_days * DAY) & ~new_journey
        self.considering = s.consider >= rules.consider_threshold

    def pick(self, d: ArrayLike, a: ArrayLike, r: ArrayLike, c: ArrayLike, default: ArrayLike) -> np.ndarray:
        # nested np.where: np.select costs more on the one-visitor path
        return np.where(
            self.deciding,
            d,
            np.where(self.advocate, a, np.where(self.retained, r, np.where(self.considering, c, default))),
        )

    def stage(self) -> np.ndarray:
        """int8[q] ``Stage.index``."""
        return self.pick(
            Stage.DECISION.index,
            Stage.ADVOCACY.index,
            Stage.RETENTION.index,
            Stage.CONSIDERATION.index,
            Stage.AWARENESS.index,
        ).astype(np.int8)


def _classify(s: _State, rules: JourneyRules) -> tuple[np.ndarray, np.ndarray]:
    """(int8[q] ``Stage.index``, float32[q] confidence in [0, 1]) from the rule quantities."""
    ttl = rules.cart_ttl_hours * HOUR
    picker = _Picker(s, rules)
    pick = picker.pick
    stage = picker.stage()

    with np.errstate(invalid="ignore"):
        conf_decision = 0.55 + 0.4 * np.exp(-s.cart_age / ttl)
        conf_advocacy = 0.6 + 0.35 * np.exp(-s.advocacy_age / (rules.advocacy_days * DAY))
        conf_retention = 0.5 + 0.45 * _unit(1.0 - s.purchase_age / (rules.retention_days * DAY))
        conf_consider = np.minimum(0.9, 0.45 + 0.45 * (s.consider / (3.0 * rules.consider_threshold)))
        # awareness: sure when there is recent browsing, unsure for a visitor we know nothing about
        conf_aware = np.where(
            s.n_events == 0,
            0.3,
            0.5 + 0.3 * _unit(1.0 - s.consider / rules.consider_threshold),
        )
    conf = pick(conf_decision, conf_advocacy, conf_retention, conf_consider, conf_aware)
    conf = np.where(np.isnan(conf), 0.5, conf)
    return stage, _unit(conf).astype(np.float32)


def _classify_one(s: _State, rules: JourneyRules) -> tuple[int, float]:
    """``_classify`` for one visitor (entry 0 of ``s``) in plain Python floats: (``Stage.index``,
    confidence rounded to float32). The request path asks this once per call, where ``_classify``'s ~30
    numpy calls on one-element arrays cost more than the rules; ``test_journey`` checks both agree."""
    cart_age, purchase_age = float(s.cart_age[0]), float(s.purchase_age[0])
    advocacy_age, consider = float(s.advocacy_age[0]), float(s.consider[0])
    ttl = rules.cart_ttl_hours * HOUR
    advocacy_s, retention_s = rules.advocacy_days * DAY, rules.retention_days * DAY
    threshold = rules.consider_threshold
    new_journey = float(s.consider_new[0]) >= threshold and purchase_age > rules.retention_grace_days * DAY
    # the rules in priority order, each with its confidence (the same formulas as ``_classify``)
    if bool(s.cart_open[0]) and cart_age <= ttl:
        stage, conf = Stage.DECISION, 0.55 + 0.4 * math.exp(-cart_age / ttl)
    elif advocacy_age <= advocacy_s:
        stage, conf = Stage.ADVOCACY, 0.6 + 0.35 * math.exp(-advocacy_age / advocacy_s)
    elif purchase_age <= retention_s and not new_journey:
        stage, conf = Stage.RETENTION, 0.5 + 0.45 * _unit_one(1.0 - purchase_age / retention_s)
    elif consider >= threshold:
        stage, conf = Stage.CONSIDERATION, min(0.9, 0.45 + 0.45 * (consider / (3.0 * threshold)))
    elif int(s.n_events[0]) == 0:
        stage, conf = Stage.AWARENESS, 0.3
    else:
        stage, conf = Stage.AWARENESS, 0.5 + 0.3 * _unit_one(1.0 - consider / threshold)
    if math.isnan(conf):
        conf = 0.5
    return stage.index, float(np.float32(_unit_one(conf)))


def _unit_one(x: float) -> float:
    return min(max(x, 0.0), 1.0)


def stages_at(
    log: EventLog, now: float, rules: JourneyRules = DEFAULT_RULES
) -> tuple[np.ndarray, np.ndarray]:
    """Every visitor's stage at ``now`` from their events strictly before ``now``.

    Returns (int8[n_visitors] ``Stage.index``, float32[n_visitors] confidence). ``log`` must be sorted by
    (visitor, ts), as ``EventLog`` always is.
    """
    q_v = np.arange(log.n_visitors, dtype=np.int64)
    # rows of visitor v before now: found by a search over (visitor, ts) keys
    t0 = float(log.ts.min()) if log.n_events else 0.0
    span = float(max(log.ts.max() if log.n_events else 0.0, now) - min(t0, now)) + 2.0
    base = min(t0, now) - 1.0
    key = log.visitor.astype(np.int64) * span + (log.ts - base)
    end = np.searchsorted(key, q_v * span + (now - base), side="left")
    s = _state(log.visitor, log.ts, log.event, q_v, end, np.full(len(q_v), now), rules)
    return _classify(s, rules)


def stages_before_events(log: EventLog, rules: JourneyRules = DEFAULT_RULES) -> tuple[np.ndarray, np.ndarray]:
    """The stage each visitor was in just before each of their events (earlier rows only).

    Returns (int8[n_events] ``Stage.index``, float32[n_events] confidence), aligned with the log's rows.
    """
    rows = np.arange(log.n_events, dtype=np.int64)
    s = _state(log.visitor, log.ts, log.event, log.visitor, rows, log.ts, rules)
    return _classify(s, rules)


def stages_after_events(
    events: Sequence[Event], rules: JourneyRules = DEFAULT_RULES
) -> tuple[np.ndarray, np.ndarray]:
    """The stage one visitor was in just after each of their events, in one vectorised pass.

    The stage after event i is the engine's answer at a moment just after its time, over the events up to
    and including it in time order (events at the same time: in the order given, so a later one of them
    is not yet history). With distinct times that is ``infer_stage(events, nextafter(t_i))``.
    Returns (int8[n] ``Stage.index``, float32[n] confidence), aligned with ``events`` as given (any order).
    """
    n = len(events)
    ts = np.fromiter((e.timestamp for e in events), dtype=np.float64, count=n)
    codes = np.fromiter((e.event.code for e in events), dtype=np.int8, count=n)
    order = np.argsort(ts, kind="stable")
    t, c = ts[order], codes[order]
    one = np.zeros(n, dtype=np.int64)  # a single visitor
    rows = np.arange(1, n + 1, dtype=np.int64)  # query i sees the rows [0, i]
    stage, conf = stages_of_queries(one, t, c, one, rows, np.nextafter(t, np.inf), rules)
    out_stage, out_conf = np.empty(n, dtype=np.int8), np.empty(n, dtype=np.float32)
    out_stage[order], out_conf[order] = stage, conf
    return out_stage, out_conf


def _signals(
    stage: Stage,
    s: _State,
    events: Sequence[Event],
    now: float,
    rules: JourneyRules,
    category_of: Mapping[str, str],
) -> list[str]:
    """Human-readable reasons for one visitor's stage (the deciding signal first)."""
    cart_age, purchase_age = float(s.cart_age[0]), float(s.purchase_age[0])
    advocacy_age, consider = float(s.advocacy_age[0]), float(s.consider[0])
    out: list[str] = []
    if s.n_events[0] == 0:
        return ["no history yet: first visit"]
    if bool(s.cart_open[0]):
        if cart_age <= rules.cart_ttl_hours * HOUR:
            out.append(f"cart not empty for {duration(cart_age)}")
        else:
            out.append(f"cart abandoned {duration(cart_age)} ago (expired after {rules.cart_ttl_hours:g} h)")
    if np.isfinite(advocacy_age):
        kind = next(
            (e.event.value for e in reversed(events) if e.event.code in _ADVOCACY and e.timestamp < now),
            "review",
        )
        out.append(f"left a {kind} {duration(advocacy_age)} ago")
    if np.isfinite(purchase_age):
        lapsed = purchase_age > rules.retention_days * DAY
        out.append(f"purchased {duration(purchase_age)} ago" + (" (lapsed customer)" if lapsed else ""))
    window = now - rules.consider_window_days * DAY
    views: Counter[str] = Counter()
    compares = content = 0
    for e in events:  # one pass over the recent window
        if window < e.timestamp < now:
            if e.event is EventType.PRODUCT_VIEW:
                views[category_of.get(e.item_id, "")] += 1
            elif e.event is EventType.COMPARE:
                compares += 1
            elif e.event is EventType.CONTENT_VIEW:
                content += 1
    views.pop("", None)
    if views:
        cat, n = views.most_common(1)[0]
        out.append(f"{n} view{'s' if n != 1 else ''} in category {cat}")
    if compares:
        out.append(f"compared {compares} time{'s' if compares != 1 else ''}")
    if consider > 0 and stage is Stage.CONSIDERATION:
        out.append(
            f"consideration activity {consider:g} ≥ {rules.consider_threshold:g} "
            f"in {rules.consider_window_days:g} days"
        )
    if content:
        out.append(f"read {content} content page{'s' if content != 1 else ''} recently")
    if not out:
        out.append(f"little recent activity ({len(events)} events)")
    # the signal that decided the stage goes first
    first = {
        Stage.DECISION: "cart",
        Stage.ADVOCACY: "left a",
        Stage.RETENTION: "purchased",
        Stage.CONSIDERATION: "view",
    }.get(stage)
    if first:
        out.sort(key=lambda m: 0 if first in m else 1)
    return out


def infer_stage(
    events: Sequence[Event],
    now: float,
    rules: JourneyRules = DEFAULT_RULES,
    category_of: Mapping[str, str] | None = None,
) -> StageResult:
    """One visitor's stage at ``now`` from their events (any order; events at or after ``now`` are ignored).

    ``category_of`` maps item ids to categories for signals such as "3 views in category kettles".
    """
    evs = sorted((e for e in events if e.timestamp < now), key=_timestamp)
    s = _state_one([e.timestamp for e in evs], [e.event.code for e in evs], now, rules)
    stage_idx, conf = _classify_one(s, rules)
    stage = STAGES[stage_idx]
    return StageResult(stage, round(conf, 4), _signals(stage, s, evs, now, rules, category_of or {}))


def with_signal(result: StageResult, signal: str, *, explains: bool) -> StageResult:
    """``result`` with one more signal from outside the event history (e.g. "cart carried over from the
    anonymous visit" after a login): first when it ``explains`` the stage, else last."""
    signals = [signal, *result.signals] if explains else [*result.signals, signal]
    return StageResult(result.stage, result.confidence, signals)


def stages_of_queries(
    visitor: np.ndarray,
    ts: np.ndarray,
    event: np.ndarray,
    q_visitor: np.ndarray,
    q_end: np.ndarray,
    q_time: np.ndarray,
    rules: JourneyRules = DEFAULT_RULES,
    *,
    confidence: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """The stage of each query over a small event log, in one vectorised pass (journey analytics asks it
    for every visitor of an ingest request at once). Arguments as for ``_state``; a query's rows at or
    after its time must be left out by ``q_end``, as ``infer_stage`` leaves them out. Returns (int8[q]
    ``Stage.index``, float32[q] confidence; empty when ``confidence`` is false, which skips its maths)."""
    state = _state(visitor, ts, event, q_visitor, q_end, q_time, rules)
    if confidence:
        return _classify(state, rules)
    return _Picker(state, rules).stage(), np.zeros(0, dtype=np.float32)
