"""Merchandising rules: boost, bury, pin, hide and cap items, scoped by journey stage and placement.

A ``RuleSet`` is a versioned document (the service stores and audits it); ``compile_rules`` turns it into
``CompiledRules`` against one catalog (each rule's item mask, computed once over the catalog columns), and
``apply_rules`` applies the rules in scope of one request to its scored candidates and picks the top k:
numpy work of O(rules x candidates), no Python loop over items.

Scope. A rule applies to a request when it is enabled, ``valid_from <= now < valid_until`` (either bound
may be absent), the visitor's stage is one of ``stages`` and the request's placement one of
``placements`` (empty: every stage, every placement). Its ``condition`` selects the items it acts on
(categories and tags: any of those listed, case-insensitive; a price range; a kind); all given parts must
hold. No condition: every item (allowed for caps only; a pin names its item).

Actions.
- ``boost`` / ``bury`` by a factor f in (1, ``MAX_FACTOR``]. Blended scores have no fixed scale (a sum of
  weighted, partly standardised features, possibly negative), so a factor cannot multiply the score.
  It multiplies the item's weight in a softmax over the list at the list's own temperature instead: the
  weight of an item is exp(score / s), s the standard deviation of the allowed candidates' scores, so
  a boost by f adds s * ln f to the score and a bury by f subtracts it. The change is the same for any
  shift or rescaling of the scores, rules compose by multiplying their factors (adding logs), and the
  net factor of an item under several rules is held within [1 / MAX_FACTOR, MAX_FACTOR]. On a large
  catalog the candidates are the request's candidate set (``models.candidates``), so a factor acts
  relative to the spread among the items that compete for the list.
- ``pin`` an item at a 1-based position of the list. A pin never overrides what the request forbids:
  the caller's filters (category, price, stock, excluded ids) and the visitor's own exclusions (bought,
  in the cart, on screen) leave the pin out, as does a hide rule in scope. Pins are placed in the order
  of their positions, then of the rule set; a taken position moves the later pin to the next free one;
  an item pinned twice keeps its first place; a position beyond the list's length is not shown. When
  too few ranked items are left to fill the places before a pin, the list closes up around it.
- ``hide`` the selected items.
- ``cap_per_category``: at most ``max_items`` of the selected items per category (items without a
  category are not capped). Items are taken best first and an item over a cap is skipped; pinned items
  count against the caps first and are never dropped. Several caps hold together.

A rule set that would empty a list that has items without it (hide rules covering every allowed item)
is not applied to that list: the list without rules is served and the outcome says so (``fallback``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from typing import Annotated, Literal, get_args

import msgspec
import numpy as np

from models.catalog import CatalogColumns
from models.domain import STAGES, ItemKind, Stage
from models.errors import InvalidInputError
from models.request import Effect, RuleEffect
from models.scoring import positions_in, top_k_one

#: the bound of a boost's or bury's factor, and of an item's net factor under several rules
MAX_FACTOR = 10.0
#: rule ids and placement names, as the service's API spells them
RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
PLACEMENT_PATTERN = r"^[a-z][a-z_]{0,31}$"
_RULE_ID = re.compile(RULE_ID_PATTERN)
_PLACEMENT = re.compile(PLACEMENT_PATTERN)
# how many candidates per missing place the capped top-k takes first (more when caps skip too many)
_CAP_OVERSAMPLE = 4
_CACHE_SIZE = 64  # distinct sets of rules in scope kept compiled per rule set

RuleId = Annotated[str, msgspec.Meta(pattern=RULE_ID_PATTERN)]
Placement = Annotated[str, msgspec.Meta(pattern=PLACEMENT_PATTERN)]
#: the action types, as the ``type`` field of an action names them
ActionType = Literal["boost", "bury", "pin", "hide", "cap_per_category"]
ACTION_TYPES: tuple[str, ...] = get_args(ActionType)


class RuleError(InvalidInputError, ValueError):
    """A rule or rule set is invalid. A ``ValueError`` too, so that msgspec adds where in the document it
    was found (``- at `$.rules[2]```) when it decodes one."""


class ItemCondition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The items a rule acts on: every given part must hold (categories, tags: any of them)."""

    categories: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    min_price: float | None = None
    max_price: float | None = None
    kind: ItemKind | None = None

    def is_empty(self) -> bool:
        return not (
            self.categories
            or self.tags
            or self.min_price is not None
            or self.max_price is not None
            or self.kind is not None
        )


class Boost(msgspec.Struct, tag="boost", tag_field="type", frozen=True, forbid_unknown_fields=True):
    """Raise the selected items: their softmax weight times ``factor`` (module docstring)."""

    factor: float


class Bury(msgspec.Struct, tag="bury", tag_field="type", frozen=True, forbid_unknown_fields=True):
    """Lower the selected items: their softmax weight divided by ``factor``."""

    factor: float


class Pin(msgspec.Struct, tag="pin", tag_field="type", frozen=True, forbid_unknown_fields=True):
    """Show ``item_id`` at ``position`` (1 = first) when the request allows it."""

    item_id: str
    position: int


class Hide(msgspec.Struct, tag="hide", tag_field="type", frozen=True, forbid_unknown_fields=True):
    """Never show the selected items."""


class CapPerCategory(
    msgspec.Struct, tag="cap_per_category", tag_field="type", frozen=True, forbid_unknown_fields=True
):
    """At most ``max_items`` of the selected items per category."""

    max_items: int


Action = Boost | Bury | Pin | Hide | CapPerCategory


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One merchandising rule (module docstring). valid_from / valid_until: POSIX seconds, either None."""

    id: RuleId
    action: Action
    stages: tuple[Stage, ...] = ()
    placements: tuple[Placement, ...] = ()
    condition: ItemCondition | None = None
    valid_from: float | None = None
    valid_until: float | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        _check_rule(self)

    def in_scope(self, stage: Stage, placement: str, now: float) -> bool:
        """Whether the rule applies to a request at ``stage`` on ``placement`` at time ``now``."""
        return (
            self.enabled
            and (not self.stages or stage in self.stages)
            and (not self.placements or placement in self.placements)
            and (self.valid_from is None or now >= self.valid_from)
            and (self.valid_until is None or now < self.valid_until)
        )


class RuleSet(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """A version of the rules; rule ids are distinct. The order of ``rules`` settles pin conflicts."""

    version: int
    rules: tuple[Rule, ...] = ()

    def __post_init__(self) -> None:
        if self.version < 0:
            raise RuleError(f"version: must be >= 0, got {self.version}")
        seen: set[str] = set()
        for r in self.rules:
            if r.id in seen:
                raise RuleError(f"rules: the id {r.id!r} is used twice")
            seen.add(r.id)


def decode_ruleset(data: bytes | str) -> RuleSet:
    """The rule set in JSON ``data``; a ``RuleError`` naming the field and where it is otherwise."""
    try:
        return msgspec.json.decode(data, type=RuleSet)
    except msgspec.ValidationError as e:
        raise RuleError(f"rule set: {e}") from None
    except msgspec.DecodeError as e:
        raise RuleError(f"rule set: not valid JSON ({e})") from None


def _finite(x: float | None) -> bool:
    return x is None or math.isfinite(x)


def _check_rule(r: Rule) -> None:
    """Raise a ``RuleError`` naming the rule and the field when ``r`` is not a valid rule."""

    def fail(what: str) -> RuleError:
        return RuleError(f"rule {r.id!r}: {what}")

    if not _RULE_ID.match(r.id):
        raise fail(f"id must match {RULE_ID_PATTERN} (letters, digits, '_', '.', ':', '-'; at most 64)")
    a = r.action
    if isinstance(a, Boost | Bury):
        verb = "boost" if isinstance(a, Boost) else "bury"
        if not (math.isfinite(a.factor) and 1.0 < a.factor <= MAX_FACTOR):
            hint = "; bury demotes" if isinstance(a, Boost) else "; boost promotes"
            raise fail(f"action.factor must be in (1, {MAX_FACTOR:g}] for a {verb}, got {a.factor}{hint}")
    elif isinstance(a, Pin):
        if not a.item_id:
            raise fail("action.item_id must not be empty")
        if a.position < 1:
            raise fail(f"action.position must be >= 1 (1 is the first place), got {a.position}")
        if r.condition is not None:
            raise fail("condition: a pin names its item and takes no condition")
    elif isinstance(a, CapPerCategory) and a.max_items < 1:
        raise fail(f"action.max_items must be >= 1, got {a.max_items}")
    if isinstance(a, Boost | Bury | Hide) and r.condition is None:
        what = "hide every item" if isinstance(a, Hide) else "change no ranking"
        raise fail(
            f"condition: a {'hide' if isinstance(a, Hide) else 'boost or bury'} of every item would "
            f"{what}; give it a condition"
        )
    for p in r.placements:
        if not _PLACEMENT.match(p):
            raise fail(f"placements: {p!r} must match {PLACEMENT_PATTERN}")
    if len(set(r.stages)) != len(r.stages):
        raise fail("stages: a stage is listed twice")
    if not (_finite(r.valid_from) and _finite(r.valid_until)):
        raise fail("valid_from and valid_until must be finite POSIX seconds")
    if r.valid_from is not None and r.valid_until is not None and r.valid_from >= r.valid_until:
        raise fail(f"valid_until ({r.valid_until}) must be after valid_from ({r.valid_from})")
    c = r.condition
    if c is not None:
        if c.is_empty():
            raise fail("condition: selects every item; leave it out or name categories, tags, prices or kind")
        for name, values in (("categories", c.categories), ("tags", c.tags)):
            if any(not v.strip() for v in values):
                raise fail(f"condition.{name}: must not contain an empty name")
        for name, price in (("min_price", c.min_price), ("max_price", c.max_price)):
            if price is not None and not (math.isfinite(price) and price >= 0):
                raise fail(f"condition.{name} must be a finite price >= 0, got {price}")
        if c.min_price is not None and c.max_price is not None and c.min_price > c.max_price:
            raise fail(f"condition.min_price ({c.min_price}) is above condition.max_price ({c.max_price})")


# -- compiled for serving ---------------------------------------------------------------------------------


def condition_mask(catalog: CatalogColumns, c: ItemCondition) -> np.ndarray:
    """bool [n_items]: the catalog items ``c`` selects (a price range never selects an item without
    a price)."""
    m = np.ones(len(catalog), dtype=bool)
    if c.categories:
        codes = [catalog.categories[x] for x in {v.lower() for v in c.categories} if x in catalog.categories]
        m &= np.isin(catalog.category, np.array(codes, dtype=catalog.category.dtype))
    if c.tags:
        codes = [catalog.tags[x] for x in {v.lower() for v in c.tags} if x in catalog.tags]
        tagged = np.zeros(len(catalog), dtype=bool)
        t = catalog.tag_items
        for code in codes:
            tagged[t.indices[t.indptr[code] : t.indptr[code + 1]]] = True
        m &= tagged
    if c.min_price is not None:
        m &= catalog.price >= c.min_price  # NaN (no price) compares False
    if c.max_price is not None:
        m &= catalog.price <= c.max_price
    if c.kind is not None:
        m &= catalog.is_product if c.kind is ItemKind.PRODUCT else ~catalog.is_product
    return m


@dataclass(frozen=True)
class CompiledRule:
    """One rule against a catalog.

    index       its place in the rule set
    mask        bool [n_items]: the items it acts on (a pin: its item)
    effect      what it reports on the items it changes
    log_factor  boost: ln(factor), bury: -ln(factor), else 0
    row         pin: the item's catalog row (-1: not a product of the catalog), else -1
    position    pin: the item's place, else 0
    limit       cap_per_category: ``max_items``, else 0
    starts      ``valid_from`` (-inf when absent)
    ends        ``valid_until`` (inf when absent)
    """

    index: int
    rule: Rule
    type: ActionType
    mask: np.ndarray
    effect: RuleEffect
    log_factor: float = 0.0
    row: int = -1
    position: int = 0
    limit: int = 0
    starts: float = -math.inf
    ends: float = math.inf


@dataclass(frozen=True)
class ActiveRules:
    """The rules in scope of a request, by action, with what they do to every item combined.

    adjust_masks bool [n_adjust, n_items]: the masks of the boosts and buries, stacked (None: none)
    log_factor  float32 [n_items]: the net ln(factor) of the boosts and buries, clipped to
                +-ln(MAX_FACTOR); None without boosts or buries
    pins        the pin rules, by place then rule-set order, each item once (its first place)
    pin_rows    int64 [p] sorted distinct catalog rows of the pinned items
    pin_items   int64 [p], pin_places int64 [p]: each of ``pins``' item row and place
    hidden      bool [n_items]: items a hide rule selects; None without hide rules
    """

    ids: tuple[str, ...]
    adjust: tuple[CompiledRule, ...]
    adjust_masks: np.ndarray | None
    log_factor: np.ndarray | None
    hides: tuple[CompiledRule, ...]
    hidden: np.ndarray | None
    pins: tuple[CompiledRule, ...]
    pin_rows: np.ndarray
    pin_items: np.ndarray
    pin_places: np.ndarray
    caps: tuple[CompiledRule, ...]

    @classmethod
    def of(cls, rules: tuple[CompiledRule, ...], n_items: int) -> ActiveRules:
        adjust = tuple(r for r in rules if r.log_factor != 0.0)
        hides = tuple(r for r in rules if r.type == "hide")
        log_factor = hidden = adjust_masks = None
        if adjust:
            adjust_masks = np.stack([r.mask for r in adjust])
            log_factor = np.zeros(n_items, np.float32)
            for r in adjust:
                log_factor[r.mask] += r.log_factor
            cap = math.log(MAX_FACTOR)
            np.clip(log_factor, -cap, cap, out=log_factor)
        if hides:
            hidden = np.zeros(n_items, dtype=bool)
            for r in hides:
                hidden |= r.mask
        pins: list[CompiledRule] = []
        for r in sorted(
            (r for r in rules if r.type == "pin" and r.row >= 0), key=lambda r: (r.position, r.index)
        ):
            if all(p.row != r.row for p in pins):  # an item pinned twice keeps its first place
                pins.append(r)
        return cls(
            ids=tuple(r.rule.id for r in rules),
            adjust=adjust,
            adjust_masks=adjust_masks,
            log_factor=log_factor,
            hides=hides,
            hidden=hidden,
            pins=tuple(pins),
            pin_rows=np.unique(np.array([r.row for r in pins], dtype=np.int64)),
            pin_items=np.array([r.row for r in pins], dtype=np.int64),
            pin_places=np.array([r.position for r in pins], dtype=np.int64),
            caps=tuple(r for r in rules if r.type == "cap_per_category"),
        )


@dataclass
class CompiledRules:
    """A rule set compiled against one catalog (``compile_rules``); serve it with that catalog only.

    unresolved  rule id -> why a pin rule cannot place its item on this catalog (unknown item, content)
    """

    ruleset: RuleSet
    catalog: CatalogColumns
    rules: tuple[CompiledRule, ...]
    unresolved: dict[str, str]
    by_stage: tuple[tuple[CompiledRule, ...], ...]
    _cache: dict[tuple[int, ...], ActiveRules] = field(default_factory=dict, repr=False)

    @property
    def version(self) -> int:
        return self.ruleset.version

    def active(self, stage: Stage, placement: str, now: float) -> ActiveRules:
        """The rules in scope of a request (``Rule.in_scope``), combined; kept for the next request that
        has the same rules in scope."""
        rules = tuple(
            r
            for r in self.by_stage[stage.index]
            if r.starts <= now < r.ends and (not r.rule.placements or placement in r.rule.placements)
        )
        key = tuple(r.index for r in rules)
        got = self._cache.get(key)
        if got is None:
            got = ActiveRules.of(rules, len(self.catalog))
            if len(self._cache) >= _CACHE_SIZE:
                self._cache.clear()
            self._cache[key] = got
        return got

    def pinned_rows(self, stage: Stage, placement: str, now: float) -> np.ndarray:
        """int64 [p] sorted distinct catalog rows the pins in scope of a request place: a candidate set
        must hold them for the pins to work (``apply_rules`` places pins among its ``rows`` only)."""
        return self.active(stage, placement, now).pin_rows


def compile_rules(ruleset: RuleSet, catalog: CatalogColumns) -> CompiledRules:
    """Each rule's item mask over ``catalog`` (vectorised over its columns) and the rules by stage."""
    compiled: list[CompiledRule] = []
    unresolved: dict[str, str] = {}
    n = len(catalog)
    for i, rule in enumerate(ruleset.rules):
        a = rule.action
        mask = np.ones(n, dtype=bool) if rule.condition is None else condition_mask(catalog, rule.condition)
        typ, effect = _TYPES[type(a)]
        c = CompiledRule(i, rule, typ, mask, RuleEffect(rule.id, effect))
        c = replace(
            c,
            starts=-math.inf if rule.valid_from is None else rule.valid_from,
            ends=math.inf if rule.valid_until is None else rule.valid_until,
        )
        if isinstance(a, Boost | Bury):
            c = replace(c, log_factor=math.log(a.factor) if isinstance(a, Boost) else -math.log(a.factor))
        elif isinstance(a, CapPerCategory):
            c = replace(c, limit=a.max_items)
        elif isinstance(a, Pin):
            row = catalog.index.get(a.item_id, -1)
            if row < 0:
                unresolved[rule.id] = f"item {a.item_id!r} is not in the catalog"
            elif not catalog.is_product[row]:
                unresolved[rule.id] = f"item {a.item_id!r} is content, not a product"
                row = -1
            mask = np.zeros(n, dtype=bool)
            mask[max(row, 0) : row + 1] = True
            c = replace(c, mask=mask, row=row, position=a.position)
        compiled.append(c)
    by_stage = tuple(
        tuple(r for r in compiled if r.rule.enabled and (not r.rule.stages or s in r.rule.stages))
        for s in STAGES
    )
    return CompiledRules(ruleset, catalog, tuple(compiled), unresolved, by_stage)


_TYPES: dict[type, tuple[ActionType, Effect]] = {
    Boost: ("boost", "boosted"),
    Bury: ("bury", "buried"),
    Pin: ("pin", "pinned"),
    Hide: ("hide", "hidden"),
    CapPerCategory: ("cap_per_category", "capped"),
}


# -- one request ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleOutcome:
    """The list under the rules.

    positions  int64 [m <= k]: the list, as positions into the request's ``rows``, first place first
    score      float32 [c]: the scores after boosts and buries (the input scores when none applies)
    effects    per place of the list, the rules that changed that item (pinned, boosted, buried)
    removed    (position into ``rows``, effect): items a hide or cap rule kept out of the list that it
               would otherwise have held at their score (hidden, capped)
    fallback   the rules would have emptied the list: it is the list without rules
    applied    the ids of the rules in scope (empty on fallback)
    """

    positions: np.ndarray
    score: np.ndarray
    effects: list[tuple[RuleEffect, ...]]
    removed: list[tuple[int, RuleEffect]]
    fallback: bool
    applied: tuple[str, ...]


def apply_rules(
    compiled: CompiledRules,
    rows: np.ndarray,
    score: np.ndarray,
    allowed: np.ndarray,
    stage: Stage,
    placement: str,
    now: float,
    k: int,
    removed: bool = False,
) -> RuleOutcome:
    """The top ``k`` of a request under the rules in scope (module docstring).

    rows int64 [c] sorted distinct catalog rows of the candidates (every row: ``arange(n_items)``);
    score float32 [c] their blended scores; allowed bool [c] what the request allows (filters minus the
    visitor's exclusions). Pins place their item only when it is among ``rows``
    (``CompiledRules.pinned_rows``). ``removed``: also find the items hide and cap rules kept out
    (``RuleOutcome.removed``; one more partial sort, for previews, not for serving).
    """
    act = compiled.active(stage, placement, now)
    every = len(rows) == len(compiled.catalog)  # sorted distinct: every row, in order

    def col(a: np.ndarray) -> np.ndarray:
        return a if every else a[rows]

    adj = score
    if act.log_factor is not None:
        adj = score + np.float32(score_spread(score, allowed)) * col(act.log_factor)
    ok = allowed if act.hidden is None else allowed & ~col(act.hidden)
    pin_pos, slots, pin_rules = _place_pins(act, rows, ok, k)
    need = k - len(pin_pos)
    free = ok
    if len(pin_pos):
        free = ok.copy()
        free[pin_pos] = False
    capped: list[tuple[int, RuleEffect]] = []
    if act.caps:
        ranked, capped = _capped_top(compiled.catalog, act.caps, rows, adj, free, need, pin_pos, removed)
    else:
        ranked = _top(adj, need, free)
    positions = _merge(pin_pos, slots, ranked, k)
    if len(positions) == 0 and allowed.any():
        plain = _top(score, k, allowed)
        return RuleOutcome(plain, score, [()] * len(plain), [], True, ())
    effects: list[list[RuleEffect]] = [[] for _ in range(len(positions))]
    for p, r in zip(pin_pos.tolist(), pin_rules, strict=True):  # every placed pin is in the list
        effects[int(np.flatnonzero(positions == p)[0])].append(r.effect)
    if act.adjust_masks is not None:  # which boosts and buries select the shown items: one gather
        for j, i in zip(*np.nonzero(act.adjust_masks[:, rows[positions]]), strict=True):
            effects[int(i)].append(act.adjust[int(j)].effect)
    out: list[tuple[int, RuleEffect]] = []
    if removed:
        out = capped
        if act.hidden is not None:
            out = _hidden_out(act, rows, adj, allowed & ~ok, ranked, need, k) + out
    return RuleOutcome(positions, adj, [tuple(e) for e in effects], out, False, act.ids)


#: the spread of a list's scores is estimated from at most this many of them
SPREAD_SAMPLE = 4096


def score_spread(score: np.ndarray, allowed: np.ndarray) -> float:
    """The standard deviation of the allowed scores (float32 [c], bool [c]): the softmax temperature of
    boosts and buries; over an even sample of ``SPREAD_SAMPLE`` of the candidates on larger sets; 1.0
    when the scores do not spread (a step of any size then breaks the ties the right way)."""
    step = max(1, len(score) // SPREAD_SAMPLE)
    sample = score[::step][allowed[::step]] if step > 1 else score[allowed]
    if len(sample) < 2:
        sample = score[allowed]
    n = len(sample)
    spread = 0.0
    if n > 1:
        x = sample.astype(np.float64)
        mean = float(x.sum()) / n
        spread = math.sqrt(max(float(x @ x) / n - mean * mean, 0.0))
    return spread if math.isfinite(spread) and spread > 1e-9 else 1.0


def _top(score: np.ndarray, k: int, allowed: np.ndarray) -> np.ndarray:
    """int64 [m <= k] positions of the best allowed scores, best first."""
    if k <= 0:
        return np.zeros(0, np.int64)
    pos = top_k_one(score, k, allowed)
    return pos[pos >= 0].astype(np.int64)


def _place_pins(
    act: ActiveRules, rows: np.ndarray, ok: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray, list[CompiledRule]]:
    """(int64 [p] positions into ``rows`` of the pinned items shown, int64 [p] their 1-based places,
    the pin rule of each), in the order of their places."""
    empty = np.zeros(0, np.int64)
    if not act.pins:
        return empty, empty, []
    at, hit = positions_in(rows, act.pin_items)
    hit[hit] &= ok[at[hit]]
    live = np.flatnonzero(hit)
    wanted = act.pin_places[live]
    n = np.arange(len(live))
    slots = np.maximum.accumulate(wanted - n) + n if len(live) else empty  # a taken place: the next one
    show = live[slots <= k]
    return at[show], slots[slots <= k], [act.pins[int(i)] for i in show]


def _merge(pin_pos: np.ndarray, slots: np.ndarray, ranked: np.ndarray, k: int) -> np.ndarray:
    """int64 [m <= k]: pins at their places, ranked items in the other places in order, closed up."""
    if len(pin_pos) == 0:
        return ranked
    out = np.full(k, -1, np.int64)
    out[slots - 1] = pin_pos
    free = np.flatnonzero(out < 0)[: len(ranked)]
    out[free] = ranked[: len(free)]
    return out[out >= 0]


def earlier_in_group(group: np.ndarray, counted: np.ndarray) -> np.ndarray:
    """int64 [m]: for each element, how many earlier elements of its group are ``counted`` (bool [m]):
    a stable sort by group, a running count, and a reset at each group's start."""
    order = np.argsort(group, kind="stable")
    g = group[order]
    c = counted[order].astype(np.int64)
    run = np.cumsum(c) - c  # counted elements before each one, over all groups
    start = np.ones(len(g), dtype=bool)
    np.not_equal(g[1:], g[:-1], out=start[1:])
    # the running count where each group starts, carried over the group (the count never decreases)
    base = np.maximum.accumulate(np.where(start, run, 0))
    out = np.empty(len(g), np.int64)
    out[order] = run - base
    return out


def capped_keep(
    group: np.ndarray, members: list[np.ndarray], limits: list[int], forced: np.ndarray
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Best-first selection under per-group caps: element i (in order) is kept when, for every cap j it
    is a member of (``members[j]`` bool [m]), fewer than ``limits[j]`` kept elements of its group come
    before it; ``forced`` elements are always kept (and counted).

    Returns (bool [m] kept, per cap the bool [m] elements it skipped). A fixed point of the rule over
    the whole sequence: each pass settles at least the next undecided element, and one pass suffices
    with one cap (dropping an element never changes an earlier one's count).
    """
    kept = np.ones(len(group), dtype=bool)
    while True:
        over = [
            m & (earlier_in_group(group, m & kept) >= n) & ~forced
            for m, n in zip(members, limits, strict=True)
        ]
        now = ~np.logical_or.reduce(over) if over else kept
        if np.array_equal(now, kept) or len(members) == 1:
            return now, over
        kept = now


def _capped_top(
    catalog: CatalogColumns,
    caps: tuple[CompiledRule, ...],
    rows: np.ndarray,
    adj: np.ndarray,
    free: np.ndarray,
    need: int,
    pin_pos: np.ndarray,
    removed: bool,
) -> tuple[np.ndarray, list[tuple[int, RuleEffect]]]:
    """(int64 [m <= need] the best ``free`` positions by ``adj`` under the caps, the capped items that
    ranked before the last one taken). The best need x 4 are tried first, four times more while the
    caps skip too many."""
    if need <= 0:
        return np.zeros(0, np.int64), []
    n_free = int(free.sum())
    uncategorised = catalog.categories.get("")
    take = min(need * _CAP_OVERSAMPLE, n_free)
    while True:
        cand = _top(adj, take, free)
        seq = np.concatenate([pin_pos, cand])
        seq_rows = rows[seq]
        group = catalog.category[seq_rows]
        has_cat = group != uncategorised if uncategorised is not None else np.ones(len(seq), bool)
        members = [has_cat & r.mask[seq_rows] for r in caps]
        limits = [r.limit for r in caps]
        forced = np.zeros(len(seq), dtype=bool)
        forced[: len(pin_pos)] = True
        kept, over = capped_keep(group, members, limits, forced)
        ranked_kept = np.flatnonzero(kept[len(pin_pos) :])
        if len(ranked_kept) >= need or take >= n_free:
            break
        take = min(take * _CAP_OVERSAMPLE, n_free)
    taken = ranked_kept[:need]
    if not removed:
        return cand[taken], []
    last = int(taken[-1]) + len(pin_pos) if len(taken) else len(seq) - 1
    out = [
        (int(seq[i]), r.effect)
        for r, o in zip(caps, over, strict=True)
        for i in np.flatnonzero(o[: last + 1]).tolist()
    ]
    return cand[taken], out


def _hidden_out(
    act: ActiveRules,
    rows: np.ndarray,
    adj: np.ndarray,
    hidden: np.ndarray,
    ranked: np.ndarray,
    need: int,
    k: int,
) -> list[tuple[int, RuleEffect]]:
    """The hidden items (bool [c]) that would have ranked among the shown ones: above the last ranked
    item when the ranked places are full, else all of them; at most k, best first."""
    if len(ranked) >= need and len(ranked):
        hidden = hidden & (adj > adj[ranked[-1]])
    pos = _top(adj, k, hidden)
    out = []
    for r in act.hides:
        sel = pos[r.mask[rows[pos]]]
        out += [(int(p), r.effect) for p in sel.tolist()]
    return out
