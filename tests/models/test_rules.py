"""Merchandising rules: validation, the compiled masks, each action's known answer, the capped top-k
against a plain-Python reference, and the rules in the recommender's request path."""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from models.candidates import CandidateSettings
from models.catalog import CatalogColumns
from models.domain import STAGES, CatalogItem, Event, EventType, ItemKind, Stage
from models.errors import InvalidInputError
from models.recommender import Recommender
from models.request import Filters, Recommendations, RuleEffect, VisitorContext
from models.rules import (
    MAX_FACTOR,
    Boost,
    Bury,
    CapPerCategory,
    Hide,
    ItemCondition,
    Pin,
    Rule,
    RuleError,
    RuleSet,
    apply_rules,
    capped_keep,
    compile_rules,
    condition_mask,
    decode_ruleset,
    score_spread,
)
from tests.storefront import OUT_OF_STOCK_TITLE, product_id

NOW = 1_750_000_000.0
K = Stage.CONSIDERATION


def _catalog() -> CatalogColumns:
    """Six items: two kettles (categories differ in case), two teas (one without a price), one product
    without a category, one content page."""
    return CatalogColumns.build(
        [
            CatalogItem(item_id="k0", category="kettles", price=10.0, tags=("Red",)),
            CatalogItem(item_id="k1", category="Kettles", price=20.0, tags=("blue",)),
            CatalogItem(item_id="t0", category="tea", price=5.0, tags=("red", "sale")),
            CatalogItem(item_id="t1", category="tea", price=None),
            CatalogItem(item_id="u0", category="", price=30.0),
            CatalogItem(item_id="n0", kind=ItemKind.CONTENT, category="tea"),
        ]
    )


def _rules(*rules: Rule, version: int = 1) -> RuleSet:
    return RuleSet(version=version, rules=rules)


def _run(
    catalog: CatalogColumns,
    rules: RuleSet,
    score: Sequence[float],
    k: int,
    allowed: Sequence[bool] | None = None,
    rows: Sequence[int] | None = None,
    stage: Stage = K,
    placement: str = "home",
    now: float = NOW,
    removed: bool = False,
) -> tuple[list[str], object]:
    r = np.arange(len(catalog), dtype=np.int64) if rows is None else np.asarray(rows, np.int64)
    s = np.asarray(score, np.float32)
    a = np.ones(len(r), bool) if allowed is None else np.asarray(allowed, bool)
    out = apply_rules(compile_rules(rules, catalog), r, s, a, stage, placement, now, k, removed=removed)
    return [catalog.items[int(r[p])].item_id for p in out.positions], out


def _cond(**kw: object) -> ItemCondition:
    return ItemCondition(**kw)  # type: ignore[arg-type]


RED = _cond(tags=("red",))
SCORES = [4.0, 3.0, 2.0, 1.0, 0.0, -1.0]  # k0 k1 t0 t1 u0 n0
PRODUCTS = [True, True, True, True, True, False]


# -- validation -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("doc", "names"),
    [
        (
            {"id": "spring", "action": {"type": "boost", "factor": 12}, "condition": {"tags": ["x"]}},
            ["'spring'", "action.factor", "(1, 10]", "$.rules[0]"],
        ),
        (
            {"id": "s", "action": {"type": "boost", "factor": 0.5}, "condition": {"tags": ["x"]}},
            ["action.factor", "bury demotes"],
        ),
        (
            {"id": "s", "action": {"type": "bury", "factor": 1.0}, "condition": {"tags": ["x"]}},
            ["action.factor", "bury"],
        ),
        ({"id": "s", "action": {"type": "pin", "item_id": "a", "position": 0}}, ["action.position", ">= 1"]),
        (
            {
                "id": "s",
                "action": {"type": "pin", "item_id": "a", "position": 1},
                "condition": {"tags": ["x"]},
            },
            ["condition", "pin"],
        ),
        ({"id": "s", "action": {"type": "hide"}}, ["condition", "hide every item"]),
        ({"id": "s", "action": {"type": "boost", "factor": 2}}, ["condition", "change no ranking"]),
        ({"id": "s", "action": {"type": "cap_per_category", "max_items": 0}}, ["action.max_items"]),
        ({"id": "s", "action": {"type": "hide"}, "condition": {}}, ["condition", "every item"]),
        (
            {"id": "s", "action": {"type": "hide"}, "condition": {"min_price": 5, "max_price": 2}},
            ["condition.min_price", "condition.max_price"],
        ),
        ({"id": "s", "action": {"type": "hide"}, "condition": {"min_price": -1}}, ["condition.min_price"]),
        ({"id": "s", "action": {"type": "hide"}, "condition": {"tags": [" "]}}, ["condition.tags"]),
        (
            {"id": "s", "action": {"type": "cap_per_category", "max_items": 1}, "stages": ["checkout"]},
            ["'checkout'", "$.rules[0].stages[0]"],
        ),
        (
            {"id": "s", "action": {"type": "cap_per_category", "max_items": 1}, "placements": ["Home"]},
            ["$.rules[0].placements[0]", "^[a-z]"],
        ),
        (
            {
                "id": "s",
                "action": {"type": "cap_per_category", "max_items": 1},
                "valid_from": 5,
                "valid_until": 5,
            },
            ["valid_until", "valid_from"],
        ),
        ({"id": "s", "action": {"type": "promote"}}, ["'promote'", "$.rules[0].action.type"]),
        ({"id": "s", "action": {"type": "hide", "factor": 2}}, ["unknown field `factor`"]),
        ({"id": "s", "colour": 1, "action": {"type": "hide"}}, ["unknown field `colour`"]),
        (
            {"id": "bad id!", "action": {"type": "cap_per_category", "max_items": 1}},
            ["$.rules[0].id", "matching regex"],
        ),
    ],
)
def test_an_invalid_rule_is_refused_with_a_message_naming_the_field(
    doc: dict[str, object], names: list[str]
) -> None:
    with pytest.raises(RuleError) as e:
        decode_ruleset(msgspec.json.encode({"version": 1, "rules": [doc]}))
    assert isinstance(e.value, InvalidInputError)
    for name in names:
        assert name in str(e.value)


def test_rule_sets_refuse_duplicate_ids_negative_versions_and_non_json() -> None:
    cap = {"id": "c", "action": {"type": "cap_per_category", "max_items": 2}}
    with pytest.raises(RuleError, match="'c' is used twice"):
        decode_ruleset(msgspec.json.encode({"version": 1, "rules": [cap, cap]}))
    with pytest.raises(RuleError, match="version: must be >= 0"):
        decode_ruleset(b'{"version": -1}')
    with pytest.raises(RuleError, match="not valid JSON"):
        decode_ruleset(b"{")
    # built in Python, not decoded: the same error, from the same check
    with pytest.raises(RuleError, match=r"rule 'b': action\.factor"):
        Rule(id="b", action=Boost(factor=MAX_FACTOR + 1), condition=RED)
    with pytest.raises(RuleError, match="id must match"):
        Rule(id="bad id!", action=Hide(), condition=RED)
    with pytest.raises(RuleError, match="placements: 'Home' must match"):
        Rule(id="p", action=Hide(), condition=RED, placements=("Home",))


def test_a_rule_set_round_trips_through_json() -> None:
    rs = _rules(
        Rule(id="a", action=Boost(factor=2.5), condition=_cond(categories=("Kettles",), max_price=50.0)),
        Rule(id="b", action=Pin(item_id="k1", position=3), stages=(Stage.DECISION,), placements=("cart",)),
        Rule(id="c", action=Hide(), condition=_cond(kind=ItemKind.CONTENT), valid_from=1.0, valid_until=2.0),
        Rule(id="d", action=CapPerCategory(max_items=2), enabled=False),
        version=7,
    )
    data = msgspec.json.encode(rs)
    assert b'"type":"pin"' in data
    assert decode_ruleset(data) == rs


# -- the compiled masks -----------------------------------------------------------------------------------


def test_item_conditions_select_by_category_tag_price_and_kind() -> None:
    c = _catalog()

    def ids(cond: ItemCondition) -> list[str]:
        return [c.items[i].item_id for i in np.flatnonzero(condition_mask(c, cond))]

    assert ids(_cond(categories=("KETTLES",))) == ["k0", "k1"]  # case-insensitive, as filters are
    assert ids(_cond(categories=("tea", "nowhere"))) == ["t0", "t1", "n0"]
    assert ids(_cond(tags=("RED",))) == ["k0", "t0"]
    assert ids(_cond(tags=("blue", "sale"))) == ["k1", "t0"]  # any of the tags
    assert ids(_cond(tags=("none",))) == []
    assert ids(_cond(min_price=5.0, max_price=10.0)) == ["k0", "t0"]  # no price: never in a range
    assert ids(_cond(kind=ItemKind.CONTENT)) == ["n0"]
    assert ids(_cond(categories=("tea",), kind=ItemKind.PRODUCT, max_price=100.0)) == ["t0"]  # all parts


def test_an_extended_catalog_has_the_tags_of_a_catalog_built_whole() -> None:
    old = [CatalogItem(item_id="a", tags=("Red", "sale")), CatalogItem(item_id="b")]
    new = [CatalogItem(item_id="c", tags=("blue", "red")), CatalogItem(item_id="d", tags=("SALE",))]
    got = CatalogColumns.build(old).extend(new)
    want = CatalogColumns.build(old + new)
    assert got.tags == want.tags
    assert (got.tag_items != want.tag_items).nnz == 0
    assert condition_mask(got, _cond(tags=("sale",))).tolist() == [True, False, False, True]


def test_compiling_reports_pins_it_cannot_place() -> None:
    rs = _rules(
        Rule(id="gone", action=Pin(item_id="zz", position=1)),
        Rule(id="page", action=Pin(item_id="n0", position=1)),
        Rule(id="ok", action=Pin(item_id="t1", position=1)),
    )
    compiled = compile_rules(rs, _catalog())
    assert compiled.unresolved == {
        "gone": "item 'zz' is not in the catalog",
        "page": "item 'n0' is content, not a product",
    }
    assert compiled.pinned_rows(K, "home", NOW).tolist() == [3]


# -- each action's known answer ---------------------------------------------------------------------------


def test_a_boost_adds_the_spread_times_the_log_of_its_factor() -> None:
    c = _catalog()
    spread = float(np.std(SCORES[:5]))  # the allowed candidates' scores
    rs = _rules(Rule(id="spring-sale", action=Boost(factor=10.0), condition=_cond(min_price=25.0)))  # u0
    got, out = _run(c, rs, SCORES, 3, PRODUCTS)
    assert out.score[4] == pytest.approx(0.0 + spread * math.log(10.0), rel=1e-5)  # 3.256: second place
    assert got == ["k0", "u0", "k1"]
    assert out.effects == [(), (RuleEffect("spring-sale", "boosted"),), ()]
    assert out.applied == ("spring-sale",)
    # the same change for any shift and scale of the scores
    got2, _ = _run(c, rs, [7.0 * s - 100.0 for s in SCORES], 3, PRODUCTS)
    assert got2 == got


def test_a_bury_subtracts_it_and_factors_compose_within_the_cap() -> None:
    c = _catalog()
    bury = Rule(id="old-stock", action=Bury(factor=10.0), condition=_cond(tags=("red",)))
    got, out = _run(c, _rules(bury), SCORES, 5, PRODUCTS)
    assert got == ["k1", "t1", "k0", "u0", "t0"]  # k0: 4 - 3.256, t0: 2 - 3.256
    assert out.effects[2] == (RuleEffect("old-stock", "buried"),)
    assert out.effects[4] == (RuleEffect("old-stock", "buried"),)
    # two boosts of 10 on one item: its net factor is held at the cap, 10
    two = _rules(
        Rule(id="a", action=Boost(factor=10.0), condition=_cond(min_price=25.0)),
        Rule(id="b", action=Boost(factor=10.0), condition=_cond(min_price=28.0, max_price=35.0)),
    )
    one = _rules(two.rules[0])
    _, both = _run(c, two, SCORES, 3, PRODUCTS)
    _, single = _run(c, one, SCORES, 3, PRODUCTS)
    assert both.score[4] == pytest.approx(single.score[4])
    assert both.effects[1] == (RuleEffect("a", "boosted"), RuleEffect("b", "boosted"))
    # a boost and a bury of the same factor cancel
    cancel = Rule(id="c", action=Bury(factor=10.0), condition=_cond(min_price=25.0))
    _, even = _run(c, _rules(two.rules[0], cancel), SCORES, 3, PRODUCTS)
    assert even.score[4] == pytest.approx(0.0, abs=1e-6)


def test_the_spread_of_equal_scores_still_orders_boosted_items_first() -> None:
    assert score_spread(np.zeros(5, np.float32), np.ones(5, bool)) == 1.0
    rs = _rules(Rule(id="b", action=Boost(factor=2.0), condition=_cond(tags=("sale",))))
    got, _ = _run(_catalog(), rs, [1.0] * 6, 1, PRODUCTS)
    assert got == ["t0"]


def test_a_pin_places_its_item_and_later_pins_take_the_next_free_place() -> None:
    c = _catalog()
    rs = _rules(
        Rule(id="p-u0", action=Pin(item_id="u0", position=2)),
        Rule(id="p-t1", action=Pin(item_id="t1", position=2)),  # same place: moves to 3
        Rule(id="p-k1", action=Pin(item_id="k1", position=9)),  # beyond the list: not shown
        Rule(id="p-u0-again", action=Pin(item_id="u0", position=4)),  # pinned twice: first place wins
    )
    got, out = _run(c, rs, SCORES, 4, PRODUCTS)
    assert got == ["k0", "u0", "t1", "k1"]
    assert out.effects == [
        (),
        (RuleEffect("p-u0", "pinned"),),
        (RuleEffect("p-t1", "pinned"),),
        (),  # k1 is there by its score: its pin at 9 did nothing
    ]


def test_a_list_closes_up_around_a_pin_when_too_few_items_are_left() -> None:
    rs = _rules(Rule(id="p", action=Pin(item_id="t1", position=5)))
    got, _ = _run(_catalog(), rs, SCORES, 10, [True, True, False, True, False, False])
    assert got == ["k0", "k1", "t1"]


def test_a_pin_never_shows_what_the_request_forbids_or_a_hide_rule_hides() -> None:
    c = _catalog()
    pin = Rule(id="p", action=Pin(item_id="t1", position=1))
    # t1 not allowed (a filter, or the visitor owns it): the pin is left out
    got, out = _run(c, _rules(pin), SCORES, 3, [True, True, True, False, True, False])
    assert got == ["k0", "k1", "t0"]
    assert all(e == () for e in out.effects)
    # a hide rule wins over the pin
    hide = Rule(id="h", action=Hide(), condition=_cond(categories=("tea",)))
    got, _ = _run(c, _rules(pin, hide), SCORES, 3, PRODUCTS)
    assert got == ["k0", "k1", "u0"]
    # not among the candidate rows: not placed (the recommender adds pinned rows to its candidates)
    got, _ = _run(c, _rules(pin), [4.0, 3.0, 2.0], 3, rows=[0, 1, 2])
    assert got == ["k0", "k1", "t0"]


def test_hide_removes_the_selected_items_and_says_which_ones_it_kept_out() -> None:
    c = _catalog()
    hide = Rule(id="no-red", action=Hide(), condition=RED)
    got, out = _run(c, _rules(hide), SCORES, 2, PRODUCTS, removed=True)
    assert got == ["k1", "t1"]
    # k0 and t0 would have been shown; both are reported
    assert [(c.items[p].item_id, e) for p, e in out.removed] == [
        ("k0", RuleEffect("no-red", "hidden")),
        ("t0", RuleEffect("no-red", "hidden")),
    ]
    _, quiet = _run(c, _rules(hide), SCORES, 2, PRODUCTS)
    assert quiet.removed == []  # only asked for previews


def test_a_cap_keeps_at_most_n_per_category_and_not_the_uncategorised() -> None:
    c = CatalogColumns.build(
        [CatalogItem(item_id=f"{cat or 'none'}{i}", category=cat) for cat in ("a", "b", "") for i in range(3)]
    )
    score = [9, 8, 7, 6, 5, 4, 3, 2, 1]  # a0 a1 a2 b0 b1 b2 none0 none1 none2
    cap = Rule(id="two-each", action=CapPerCategory(max_items=1))
    got, out = _run(c, _rules(cap), score, 6, removed=True)
    assert got == ["a0", "b0", "none0", "none1", "none2"]  # only five items fit the cap
    assert {c.items[p].item_id for p, _ in out.removed} == {"a1", "a2", "b1", "b2"}
    # a pinned item counts against the cap and is kept
    pin = Rule(id="p", action=Pin(item_id="a2", position=3))
    got, _ = _run(c, _rules(cap, pin), score, 4)
    assert got == ["b0", "none0", "a2", "none1"]


def test_a_rule_set_that_would_empty_the_list_falls_back_to_the_list_without_it() -> None:
    c = _catalog()
    rs = _rules(
        Rule(id="all", action=Hide(), condition=_cond(kind=ItemKind.PRODUCT)),
        Rule(id="b", action=Boost(factor=3.0), condition=_cond(tags=("sale",))),
    )
    got, out = _run(c, rs, SCORES, 2, PRODUCTS)
    assert got == ["k0", "k1"]
    assert out.fallback
    assert out.applied == ()
    assert out.effects == [(), ()]
    assert np.array_equal(out.score, np.asarray(SCORES, np.float32))
    # an empty list without rules is no fallback
    _, none = _run(c, rs, SCORES, 2, [False] * 6)
    assert not none.fallback
    assert len(none.positions) == 0


def test_scope_stage_placement_window_and_enabled() -> None:
    c = _catalog()
    base = Rule(id="r", action=Hide(), condition=_cond(categories=("kettles",)))

    def shown(rule: Rule, **kw: object) -> list[str]:
        return _run(c, _rules(rule), SCORES, 2, PRODUCTS, **kw)[0]  # type: ignore[arg-type]

    plain = ["k0", "k1"]
    hidden = ["t0", "t1"]
    decision = msgspec.structs.replace(base, stages=(Stage.DECISION, Stage.RETENTION))
    assert [shown(decision, stage=s) == hidden for s in STAGES] == [False, False, True, True, False]
    cart = msgspec.structs.replace(base, placements=("cart", "checkout"))
    assert shown(cart, placement="cart") == hidden
    assert shown(cart, placement="home") == plain
    window = msgspec.structs.replace(base, valid_from=NOW, valid_until=NOW + 10)
    assert shown(window, now=NOW) == hidden
    assert shown(window, now=NOW + 9.9) == hidden
    assert shown(window, now=NOW + 10) == plain  # the end is not part of the window
    assert shown(window, now=NOW - 1) == plain
    assert shown(msgspec.structs.replace(base, enabled=False)) == plain
    # Rule.in_scope says the same
    assert window.in_scope(K, "home", NOW)
    assert not window.in_scope(K, "home", NOW + 10)
    assert not decision.in_scope(Stage.AWARENESS, "home", NOW)
    assert cart.in_scope(K, "checkout", NOW)
    assert not cart.in_scope(K, "home", NOW)
    assert not msgspec.structs.replace(base, enabled=False).in_scope(K, "home", NOW)


# -- the capped top-k against plain Python ----------------------------------------------------------------


def _naive(
    cats: list[str],
    tags: list[set[str]],
    score: list[float],
    allowed: list[bool],
    caps: list[tuple[str, int]],
    pins: list[tuple[int, int]],
    k: int,
) -> list[int]:
    """The module docstring's rules, item by item: pins (item, position) in rule order; caps (tag, limit):
    at most limit items carrying tag per (non-empty) category."""
    placed: list[tuple[int, int]] = []
    pinned: set[int] = set()
    taken: set[int] = set()  # shown by a pin
    last = 0
    for _, (item, pos) in sorted(enumerate(pins), key=lambda t: (t[1][1], t[0])):
        if not allowed[item] or item in pinned:
            continue
        slot = max(pos, last + 1)
        last = slot
        pinned.add(item)
        if slot <= k:
            placed.append((slot, item))
            taken.add(item)
    counts = [dict[str, int]() for _ in caps]

    def count(item: int) -> None:
        for j, (tag, _) in enumerate(caps):
            if cats[item] and tag in tags[item]:
                counts[j][cats[item]] = counts[j].get(cats[item], 0) + 1

    for _, item in placed:
        count(item)
    ranked: list[int] = []
    for item in sorted(range(len(score)), key=lambda i: -score[i]):
        if len(ranked) == k - len(placed):
            break
        if not allowed[item] or item in taken:
            continue
        if any(
            cats[item] and tag in tags[item] and counts[j].get(cats[item], 0) >= n
            for j, (tag, n) in enumerate(caps)
        ):
            continue
        ranked.append(item)
        count(item)
    slots: list[int | None] = [None] * k
    for slot, item in placed:
        slots[slot - 1] = item
    fill = iter(ranked)
    out = [s if s is not None else next(fill, None) for s in slots]
    return [i for i in out if i is not None]


@st.composite
def _cap_cases(draw: st.DrawFn) -> tuple[object, ...]:
    n = draw(st.integers(1, 24))
    cats = draw(st.lists(st.sampled_from(["", "a", "b", "c"]), min_size=n, max_size=n))
    tags = draw(st.lists(st.sets(st.sampled_from(["x", "y"])), min_size=n, max_size=n))
    order = draw(st.permutations(range(n)))
    allowed = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    caps = draw(st.lists(st.tuples(st.sampled_from(["x", "y"]), st.integers(1, 3)), max_size=3))
    pins = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(1, 8)), max_size=3))
    k = draw(st.integers(1, 10))
    return cats, tags, [float(o) for o in order], allowed, caps, pins, k


# two caps where a later item is kept because the cap that skipped an earlier one is not its own
_TWO_CAPS = (
    ["a", "a", "a"],
    [{"y"}, {"x", "y"}, {"x"}],
    [3.0, 2.0, 1.0],
    [True] * 3,
    [("x", 1), ("y", 1)],
    [],
    3,
)

# a pin over one cap still counts against the other: one more ranked item, not two
_PINS_COUNT = (
    ["a"] * 4,
    [{"y"}, {"x", "y"}, {"x"}, {"x"}],
    [4.0, 3.0, 2.0, 1.0],
    [True] * 4,
    [("x", 2), ("y", 1)],
    [(0, 1), (1, 2)],
    4,
)


@settings(max_examples=300, deadline=None)
@given(_cap_cases())
@example(_TWO_CAPS)
@example(_PINS_COUNT)
def test_pins_and_caps_match_a_plain_python_reference(case: tuple[object, ...]) -> None:
    cats, tags, score, allowed, caps, pins, k = case
    assert isinstance(cats, list)
    assert isinstance(tags, list)
    assert isinstance(score, list)
    assert isinstance(allowed, list)
    assert isinstance(caps, list)
    assert isinstance(pins, list)
    assert isinstance(k, int)
    catalog = CatalogColumns.build(
        [CatalogItem(item_id=f"i{i}", category=cats[i], tags=tuple(tags[i])) for i in range(len(cats))]
    )
    rules = [
        Rule(id=f"cap{j}", action=CapPerCategory(max_items=n), condition=_cond(tags=(t,)))
        for j, (t, n) in enumerate(caps)
    ]
    rules += [Rule(id=f"pin{j}", action=Pin(item_id=f"i{i}", position=p)) for j, (i, p) in enumerate(pins)]
    got, _ = _run(catalog, _rules(*rules), score, k, allowed)
    want = _naive(cats, tags, score, allowed, caps, pins, k)
    assert got == [f"i{i}" for i in want]


@settings(max_examples=200, deadline=None)
@example(
    [0, 0, 0],
    [([False, True, True] + [False] * 37, 1), ([True, True, False] + [False] * 37, 1)],
    [False] * 40,
)
@given(
    st.lists(st.integers(0, 3), min_size=1, max_size=40),
    st.lists(
        st.tuples(st.lists(st.booleans(), min_size=40, max_size=40), st.integers(1, 3)),
        min_size=1,
        max_size=3,
    ),
    st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_capped_keep_is_the_greedy_selection(
    group: list[int], caps: list[tuple[list[bool], int]], forced_all: list[bool]
) -> None:
    n = len(group)
    members = [np.array(m[:n]) for m, _ in caps]
    limits = [lim for _, lim in caps]
    forced = np.array(forced_all[:n])
    order = sorted(range(n), key=lambda i: (not forced[i], i))  # forced ones are counted first
    kept = [False] * n
    counts = [dict[int, int]() for _ in caps]
    for i in order:
        ok = forced[i] or all(
            not members[j][i] or counts[j].get(group[i], 0) < limits[j] for j in range(len(caps))
        )
        if ok:
            kept[i] = True
            for j in range(len(caps)):
                if members[j][i]:
                    counts[j][group[i]] = counts[j].get(group[i], 0) + 1
    # the function sees forced elements first, as apply_rules orders them (pins, then ranked items)
    perm = np.array(order)
    got, _ = capped_keep(np.array(group)[perm], [m[perm] for m in members], limits, forced[perm])
    assert got.tolist() == [kept[i] for i in order]


# -- in the recommender -----------------------------------------------------------------------------------


@pytest.fixture
def rec(recommender: Recommender) -> Recommender:
    """A recommender of its own: installing rules must not change the shared one."""
    return Recommender(recommender.bundle)


def _visitor(bought: str | None = None) -> VisitorContext:
    events = [
        Event(
            visitor_id="w", item_id=product_id("Teapot"), event=EventType.PRODUCT_VIEW, timestamp=NOW - 600
        ),
        Event(
            visitor_id="w", item_id=product_id("Mug set"), event=EventType.PRODUCT_VIEW, timestamp=NOW - 300
        ),
    ]
    purchases = {}
    if bought is not None:
        events.append(Event(visitor_id="w", item_id=bought, event=EventType.PURCHASE, timestamp=NOW - 100))
        purchases[bought] = NOW - 100
    return VisitorContext(visitor_id="w", events=events, cart={}, purchases=purchases, now=NOW)


def _ids(answer: object) -> list[str]:
    return [p.item_id for p in answer.products]  # type: ignore[attr-defined]


def _encoded(answer: Recommendations) -> bytes:
    return msgspec.json.encode(answer)


def test_without_rules_the_answer_is_what_it_was(rec: Recommender) -> None:
    f = Filters()
    ctx = _visitor()
    plain = rec.recommend(ctx, 6, f)  # no rules argument, none installed
    doc = msgspec.json.decode(_encoded(plain))
    assert doc["rules_version"] is None
    assert doc["rules_fallback"] is False
    assert all(set(p) == {"item_id", "score", "source", "reason"} for p in doc["products"] + doc["content"])
    # rules in scope of another stage only: the same items and scores, and the rules' version
    other = next(s for s in STAGES if s is not rec.stage_of(ctx).stage)
    rs = _rules(
        Rule(id="x", stages=(other,), action=Hide(), condition=_cond(kind=ItemKind.PRODUCT)), version=4
    )
    rec.install_rules(rs)
    scoped = rec.recommend(ctx, 6, f)
    assert scoped.rules_version == 4
    assert _encoded(msgspec.structs.replace(scoped, rules_version=None)) == _encoded(plain)
    # uninstalled: byte for byte the answer without rules
    rec.install_rules(None)
    assert _encoded(rec.recommend(ctx, 6, f)) == _encoded(plain)


def test_a_stage_scoped_boost_changes_lists_only_in_its_stage(rec: Recommender) -> None:
    f = Filters()
    boost = Rule(
        id="garden-week",
        stages=(Stage.DECISION,),
        action=Boost(factor=MAX_FACTOR),
        condition=_cond(categories=("garden",)),
    )
    compiled = rec.compile_rules(_rules(boost))
    for stage in STAGES:
        ctx = msgspec.structs.replace(_visitor(), stage_override=stage)
        plain = rec.recommend(ctx, 5, f)
        ruled = rec.recommend(ctx, 5, f, rules=compiled)
        assert ruled.rules_version == 1
        if stage is Stage.DECISION:
            assert _ids(ruled) != _ids(plain)
            garden = [p for p in ruled.products if p.item_id.startswith("p-garden")]
            assert len(garden) > sum(p.item_id.startswith("p-garden") for p in plain.products)
            assert all(p.rules == (RuleEffect("garden-week", "boosted"),) for p in garden)
        else:
            assert ruled.products == plain.products


def test_pins_in_the_request_path_respect_the_filters_and_what_the_visitor_owns(rec: Recommender) -> None:
    tent, lantern = product_id("Tent"), product_id(OUT_OF_STOCK_TITLE)
    rs = _rules(
        Rule(id="tent-at-2", action=Pin(item_id=tent, position=2)),
        Rule(id="lantern-first", action=Pin(item_id=lantern, position=1)),  # out of stock
    )
    rec.install_rules(rs)
    got = rec.recommend(_visitor(), 5, Filters())
    assert _ids(got)[1] == tent
    assert lantern not in _ids(got)
    assert got.products[1].rules == (RuleEffect("tent-at-2", "pinned"),)
    assert rec.recommend(_visitor(bought=tent), 5, Filters()).products[1].item_id != tent  # owned
    assert tent not in _ids(rec.recommend(_visitor(), 5, Filters(max_price=100.0)))  # filtered out
    assert tent not in _ids(rec.recommend(_visitor(), 5, Filters(exclude=frozenset({tent}))))
    # placement scope: the same pin for the cart page only
    rec.install_rules(_rules(msgspec.structs.replace(rs.rules[0], placements=("cart",))))
    assert _ids(rec.recommend(msgspec.structs.replace(_visitor(), placement="cart"), 5, Filters()))[1] == tent
    assert _ids(rec.recommend(_visitor(), 5, Filters()))[1] != tent


def test_a_pin_outside_the_candidate_set_joins_it_and_is_placed(
    recommender: Recommender, monkeypatch: pytest.MonkeyPatch
) -> None:
    exhaustive = Recommender(recommender.bundle)
    partial = Recommender(
        recommender.bundle,
        CandidateSettings(exhaustive_max_items=0, probe_items=6, items_per_cluster=3, crowd_items=2),
    )
    assert exhaustive.candidates is None
    assert partial.candidates is not None
    candidates: list[np.ndarray] = []
    select = partial._candidates

    def spy(*args: object) -> tuple[np.ndarray, np.ndarray] | None:
        picked = select(*args)  # type: ignore[arg-type]
        assert picked is not None
        candidates.append(picked[0])
        return picked

    monkeypatch.setattr(partial, "_candidates", spy)
    ctx = _visitor()
    partial.recommend(ctx, 3, Filters())
    c = partial.catalog
    outside = next(
        c.items[i].item_id
        for i in np.flatnonzero(c.products_in_stock)
        if i not in set(candidates[-1].tolist())
    )
    rs = _rules(Rule(id="first", action=Pin(item_id=outside, position=1)))
    got = partial.recommend(ctx, 3, Filters(), rules=partial.compile_rules(rs))
    assert c.index[outside] in set(candidates[-1].tolist())
    assert _ids(got)[0] == outside
    assert got.products[0].rules == (RuleEffect("first", "pinned"),)
    want = exhaustive.recommend(ctx, 3, Filters(), rules=exhaustive.compile_rules(rs))
    assert got.products[0].score == pytest.approx(want.products[0].score, abs=1e-5)


def test_a_rule_set_that_empties_the_list_is_served_without_and_says_so(rec: Recommender) -> None:
    rec.install_rules(
        _rules(Rule(id="all", action=Hide(), condition=_cond(kind=ItemKind.PRODUCT)), version=9)
    )
    got = rec.recommend(_visitor(), 4, Filters())
    rec.install_rules(None)
    plain = rec.recommend(_visitor(), 4, Filters())
    assert got.rules_version == 9
    assert got.rules_fallback
    assert got.products == plain.products
    assert b'"rules_fallback":true' in _encoded(got)


def test_rules_compiled_for_another_catalog_are_compiled_again(
    rec: Recommender, recommender: Recommender
) -> None:
    foreign = compile_rules(
        _rules(Rule(id="no-kitchen", action=Hide(), condition=_cond(categories=("kitchen",)))), _catalog()
    )
    got = rec.recommend(_visitor(), 5, Filters(), rules=foreign)
    assert got.products
    assert not any(p.item_id.startswith("p-kitchen") for p in got.products)
    # installed for a catalog the model no longer serves: compiled again once, and kept
    rec.merchandising = foreign
    assert rec.recommend(_visitor(), 5, Filters()).products == got.products
    assert rec.merchandising is not foreign
    assert rec.merchandising.catalog is rec.catalog


def test_the_non_personalised_answer_follows_the_rules_too(rec: Recommender) -> None:
    ctx = VisitorContext(visitor_id="gone", events=[], cart={}, purchases={}, now=NOW)
    plain = rec.fallback(ctx, 5, Filters())
    assert plain.rules_version is None
    top = plain.products[0].item_id
    tent = product_id("Tent") if not top.startswith("p-outdoor") else product_id("Kettle")
    rs = _rules(
        Rule(id="no-top", action=Hide(), condition=_cond(categories=(top.split("-")[1],))),
        Rule(id="tent-first", action=Pin(item_id=tent, position=1)),
        version=2,
    )
    rec.install_rules(rs)
    got = rec.fallback(ctx, 5, Filters())
    assert got.fallback
    assert got.rules_version == 2
    assert _ids(got)[0] == tent
    assert got.products[0].rules == (RuleEffect("tent-first", "pinned"),)
    assert not any(p.item_id.split("-")[1] == top.split("-")[1] for p in got.products)
    rec.install_rules(None)
    assert rec.fallback(ctx, 5, Filters()) == plain
