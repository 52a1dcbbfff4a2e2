"""models.attribution: known answers, a naive reference, and invariants."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from models.attribution import ATTRIBUTABLE, Attribution, Method, ServedList, Windows, attribute
from models.domain import Event, EventType

E = EventType
W = Windows(click=100.0, impression=10.0)


def lst(rid: str, items: Sequence[str], at: float = 0.0, **touches: dict[str, float]) -> ServedList:
    return ServedList(
        recommendation_id=rid, served_at=at, stage="awareness", placement="home", items=list(items), **touches
    )


def ev(kind: EventType, item: str, t: float, rid: str | None = None) -> Event:
    return Event(visitor_id="v", item_id=item, event=kind, timestamp=t, recommendation_id=rid)


def naive(lists: Sequence[ServedList], event: Event, windows: Windows) -> tuple[str, Method] | None:
    """The rule written out as plainly as possible: every candidate listed, sorted, the last one taken."""
    if event.event not in ATTRIBUTABLE:
        return None
    if event.recommendation_id is not None:
        same = [s for s in lists if s.recommendation_id == event.recommendation_id]
        if same and event.item_id in same[0].items:
            return same[0].recommendation_id, Method.DIRECT
        return None
    if event.event is not E.PURCHASE:
        return None
    for touches_of, window in (
        (lambda s: s.clicks, windows.click),
        (lambda s: s.impressions, windows.impression),
    ):
        candidates = sorted(
            (touches_of(s)[event.item_id], s.recommendation_id)
            for s in lists
            if event.item_id in touches_of(s)
            and event.timestamp - window <= touches_of(s)[event.item_id] <= event.timestamp
        )
        if candidates:
            return candidates[-1][1], Method.LAST_TOUCH
    return None


def result(a: Attribution | None) -> tuple[str, Method] | None:
    return None if a is None else (a.served.recommendation_id, a.method)


def test_direct_needs_a_kept_list_that_holds_the_item() -> None:
    lists = [lst("A", ["x", "y"]), lst("B", ["z"])]
    for kind in (E.IMPRESSION, E.PRODUCT_VIEW, E.ADD_TO_CART, E.PURCHASE):
        assert result(attribute(lists, ev(kind, "y", 5, "A"), W)) == ("A", Method.DIRECT)
    assert attribute(lists, ev(E.PRODUCT_VIEW, "z", 5, "A"), W) is None  # not in list A
    assert attribute(lists, ev(E.PRODUCT_VIEW, "x", 5, "gone"), W) is None  # unknown or expired id
    assert attribute(lists, ev(E.PAGE_VIEW, "x", 5, "A"), W) is None  # not an attributable kind


def test_an_unknown_id_never_falls_back_to_last_touch() -> None:
    lists = [lst("A", ["x"], clicks={"x": 1.0})]
    assert attribute(lists, ev(E.PURCHASE, "x", 5, "gone"), W) is None
    assert result(attribute(lists, ev(E.PURCHASE, "x", 5), W)) == ("A", Method.LAST_TOUCH)


def test_last_touch_prefers_a_click_in_its_window_to_a_later_impression() -> None:
    lists = [
        lst("A", ["x"], clicks={"x": 10.0}),
        lst("B", ["x"], at=20, impressions={"x": 95.0}),
    ]
    assert result(attribute(lists, ev(E.PURCHASE, "x", 100), W)) == ("A", Method.LAST_TOUCH)
    # the click is 111 s old: outside the 100 s click window; the impression 16 s: outside 10 s
    assert attribute(lists, ev(E.PURCHASE, "x", 121), W) is None
    # the click is out of its window, an impression 7 s old is within its own
    later = [lists[0], lst("B", ["x"], at=20, impressions={"x": 105.0})]
    assert result(attribute(later, ev(E.PURCHASE, "x", 112), W)) == ("B", Method.LAST_TOUCH)
    only_impression = [lists[1]]
    assert result(attribute(only_impression, ev(E.PURCHASE, "x", 100), W)) == ("B", Method.LAST_TOUCH)


def test_last_touch_takes_the_latest_touch_and_ignores_touches_after_the_purchase() -> None:
    lists = [
        lst("A", ["x"], clicks={"x": 30.0}),
        lst("B", ["x"], clicks={"x": 20.0}),
        lst("C", ["x"], clicks={"x": 60.0}),  # after the purchase at 50
    ]
    assert result(attribute(lists, ev(E.PURCHASE, "x", 50), W)) == ("A", Method.LAST_TOUCH)
    # only purchases are credited by last touch
    assert attribute(lists, ev(E.ADD_TO_CART, "x", 50), W) is None
    # a tie goes to the later list id
    tied = [lst("A", ["x"], clicks={"x": 30.0}), lst("B", ["x"], clicks={"x": 30.0})]
    assert result(attribute(tied, ev(E.PURCHASE, "x", 50), W)) == ("B", Method.LAST_TOUCH)


def test_windows_keep_lists_for_the_longer_one() -> None:
    assert Windows(click=7.0, impression=1.0).retention == 7.0
    assert Windows(click=1.0, impression=3.0).retention == 3.0


RIDS = ["A", "B", "C", "D"]
ITEMS = ["w", "x", "y", "z"]
times = st.floats(min_value=0, max_value=100, allow_nan=False)


@st.composite
def served_lists(draw: st.DrawFn) -> list[ServedList]:
    rids = draw(st.lists(st.sampled_from(RIDS), unique=True, max_size=4))
    out = []
    for rid in rids:
        items = draw(st.lists(st.sampled_from(ITEMS), unique=True, min_size=1, max_size=4))
        clicks = draw(st.dictionaries(st.sampled_from(items), times, max_size=len(items)))
        impressions = draw(st.dictionaries(st.sampled_from(items), times, max_size=len(items)))
        out.append(lst(rid, items, clicks=clicks, impressions=impressions))
    return out


events = st.builds(
    ev,
    st.sampled_from([E.IMPRESSION, E.PRODUCT_VIEW, E.ADD_TO_CART, E.PURCHASE, E.PAGE_VIEW]),
    st.sampled_from(ITEMS),
    st.floats(min_value=0, max_value=130, allow_nan=False),
    st.one_of(st.none(), st.sampled_from([*RIDS, "unknown"])),
)
windows = st.builds(
    Windows,
    st.floats(min_value=0.5, max_value=60, allow_nan=False),
    st.floats(min_value=0.5, max_value=60, allow_nan=False),
)


@settings(max_examples=200, deadline=None)
@given(served_lists(), events, windows)
def test_attribute_matches_the_naive_reference(lists: list[ServedList], event: Event, w: Windows) -> None:
    assert result(attribute(lists, event, w)) == naive(lists, event, w)


@settings(max_examples=150, deadline=None)
@given(served_lists(), events, windows)
def test_invariants(lists: list[ServedList], event: Event, w: Windows) -> None:
    found = attribute(lists, event, w)
    # the order the lists are passed in never matters
    assert result(attribute(lists[::-1], event, w)) == result(found)
    if found is None:
        return
    assert event.item_id in found.served.items
    if found.method is Method.DIRECT:
        assert found.served.recommendation_id == event.recommendation_id
        return
    assert event.event is E.PURCHASE
    assert event.recommendation_id is None
    click = found.served.clicks.get(event.item_id)
    by_click = click is not None and 0 <= event.timestamp - click <= w.click
    any_click = any(
        0 <= event.timestamp - s.clicks[event.item_id] <= w.click for s in lists if event.item_id in s.clicks
    )
    assert by_click == any_click  # a click in its window always wins over impressions
    if not by_click:
        seen = found.served.impressions[event.item_id]
        assert 0 <= event.timestamp - seen <= w.impression
