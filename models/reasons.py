"""Human-readable reasons for recommended items, tied to the source and the visitor's stage."""

from __future__ import annotations

import datetime as dt

from models.domain import DAY, Source, Stage


def duration(seconds: float) -> str:
    """'5 min', '3 h', '1 day', '12 days' (whole units, rounded down; at least 1 min)."""
    if seconds < 3600:
        return f"{max(1, int(seconds // 60))} min"
    if seconds < DAY:
        return f"{int(seconds // 3600)} h"
    d = int(seconds // DAY)
    return f"{d} day{'s' if d != 1 else ''}"


def ago(seconds: float) -> str:
    """'3 days ago', '5 h ago', 'just now'."""
    return "just now" if seconds < 120 else f"{duration(seconds)} ago"


_PERSONALIZED = {
    Stage.AWARENESS: "a good place to start for shoppers like you",
    Stage.CONSIDERATION: "matches what you have been comparing",
    Stage.DECISION: "a strong alternative to what is in your cart",
    Stage.RETENTION: "picked for you based on your purchases",
    Stage.ADVOCACY: "you might enjoy this next",
}

_CONTENT = {
    Stage.AWARENESS: "guide to get you started",
    Stage.CONSIDERATION: "helps you compare options",
    Stage.DECISION: "answers last questions before you buy",
    Stage.RETENTION: "get the most out of your purchase",
    Stage.ADVOCACY: "share your experience",
}


def trending(data_until: float | None, now: float | None) -> str:
    """What "trending" means for a model whose data ends at ``data_until`` (epoch seconds; None: unknown),
    asked at ``now``: "this week" only while the data is current (it ends within a day of ``now``), else
    the week it is true of, by date."""
    if data_until is None:
        return "trending lately"
    if now is not None and now - data_until <= DAY:
        return "trending this week"
    # the data ends just after its last event: that event's day closes the week
    day = dt.datetime.fromtimestamp(data_until - 1.0, dt.UTC).date().isoformat()
    return f"trending in the week to {day}"


def new_in(category: str) -> str:
    """The reason of an item the model never saw (``Source.NEW``): "new in kettles"."""
    return f"new in {category}" if category else "new in the shop"


def relation(*, on_page: bool, in_cart: bool, bought: bool) -> str:
    """How the visitor met an anchor item, for "similar to the kettle <relation>"."""
    if on_page:
        return "you are viewing"
    if in_cart:
        return "in your cart"
    if bought:
        return "you bought"
    return "you looked at"


def reason_for(
    source: Source,
    stage: Stage,
    *,
    anchor_title: str = "",
    anchor_relation: str = "",
    age_s: float | None = None,
    count: int = 0,
    data_until: float | None = None,
    now: float | None = None,
) -> str:
    """One sentence explaining why an item is shown. ``anchor_title`` names the item it relates to and
    ``anchor_relation`` how the visitor met that item ("in your cart", "you bought", ...; see
    ``relation``), or "" to let the stage decide; for a new item (``Source.NEW``) it is the category.
    ``data_until`` (the end of the model's data) and ``now`` date a "trending" reason (``trending``)."""
    if source is Source.BUY_AGAIN:
        when = f" {ago(age_s)}" if age_s is not None else ""
        times = f" {count} times" if count > 1 else ""
        if stage is Stage.RETENTION:
            return f"you bought this{times}{when} — time to restock?"
        # "you bought this 5 days ago", or "before" when the time is unknown (never both)
        return f"you bought this{times}{when or ' before'}"
    if source is Source.COMPLEMENT:
        where = anchor_relation or ("in your cart" if stage is Stage.DECISION else "you bought")
        return f"complements the {anchor_title} {where}" if anchor_title else "goes well with your items"
    if source is Source.SIMILAR:
        return (
            f"similar to the {anchor_title} {anchor_relation or 'you looked at'}"
            if anchor_title
            else "similar to what you looked at"
        )
    if source is Source.RECENTLY_VIEWED:
        when = f" {ago(age_s)}" if age_s is not None else ""
        if stage is Stage.DECISION:
            return f"you viewed this{when} — still deciding?"
        return f"you viewed this{when}"
    if source is Source.IN_CART:
        return "waiting in your cart"
    if source is Source.TRENDING:
        return trending(data_until, now)
    if source is Source.POPULAR:
        return "popular with shoppers" if stage is Stage.AWARENESS else "a popular choice"
    if source is Source.NEW:
        return new_in(anchor_title)
    if source is Source.CONTENT:
        topic = f" about {anchor_title}" if anchor_title else ""
        return f"{_CONTENT[stage]}{topic}"
    return _PERSONALIZED[stage]
