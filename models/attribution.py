"""Attribution: which served list an event is credited to (pure: no clock, no I/O).

A *served list* is one list answer given to a visitor (``recommendation_id``, time, stage at serve time,
placement, experiment and variant, item ids), with the latest click and impression of each of its items.

The rule (``attribute``):

- **direct**: an impression, a product view (a click), an add-to-cart or a purchase carrying a
  ``recommendation_id`` is credited to that list when the list was served to the visitor, is still kept,
  and holds the event's item. Otherwise the event is unattributed (an unknown or expired id is never an
  error, and never falls back to last touch).
- **last touch**: a purchase without a ``recommendation_id`` is credited to the served list holding the
  item whose latest *click* on that item lies at most ``Windows.click`` seconds before the purchase; the
  list with the latest such click wins (a tie: the later list id, i.e. the list served later). Without
  one, the same with *impressions* and ``Windows.impression``. Touches after the purchase do not count.
- Any other event is not attributed.

Lists are kept for ``Windows.retention`` seconds after they were served (the longer of the two windows):
the caller passes only lists still kept.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

import msgspec

from models.domain import Event, EventType

#: the event kinds attribution looks at
ATTRIBUTABLE = frozenset(
    {EventType.IMPRESSION, EventType.PRODUCT_VIEW, EventType.ADD_TO_CART, EventType.PURCHASE}
)


class Method(enum.Enum):
    """How an event was credited (the ``method`` label of ``journeyrec_attributed_events_total``)."""

    DIRECT = "direct"
    LAST_TOUCH = "last_touch"
    UNATTRIBUTED = "unattributed"


class ServedList(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One list answer given to a visitor.

    served_at    POSIX seconds (server clock) the list was served
    stage        the visitor's journey stage when it was served (a ``Stage`` value)
    experiment   experiment id, ``"-"`` when none applied; variant likewise
    items        the item ids of the list (products, then content), in answer order
    clicks       item id -> POSIX seconds of the latest product view of it carrying this list's id
    impressions  item id -> POSIX seconds of the latest impression of it carrying this list's id
    """

    recommendation_id: str
    served_at: float
    stage: str
    placement: str
    items: list[str]
    experiment: str = "-"
    variant: str = "-"
    clicks: dict[str, float] = msgspec.field(default_factory=dict)
    impressions: dict[str, float] = msgspec.field(default_factory=dict)


class Windows(msgspec.Struct, frozen=True):
    """Seconds: a purchase is credited by last touch to a click at most ``click`` before it, else to an
    impression at most ``impression`` before it. A list is kept ``retention`` = the longer of the two."""

    click: float
    impression: float

    @property
    def retention(self) -> float:
        return max(self.click, self.impression)


class Attribution(msgspec.Struct, frozen=True):
    """The list an event is credited to, and how."""

    served: ServedList
    method: Method


def attribute(lists: Sequence[ServedList], event: Event, windows: Windows) -> Attribution | None:
    """The list ``event`` is credited to (see the module docstring), or None.

    ``lists``: the visitor's kept served lists, in any order. Cost: one pass over the lists.
    """
    if event.event not in ATTRIBUTABLE:
        return None
    if event.recommendation_id is not None:
        for served in lists:
            if served.recommendation_id == event.recommendation_id:
                return Attribution(served, Method.DIRECT) if event.item_id in served.items else None
        return None
    if event.event is not EventType.PURCHASE:
        return None
    touched = _last_touch(lists, event, windows.click, clicks=True)
    if touched is None:
        touched = _last_touch(lists, event, windows.impression, clicks=False)
    return None if touched is None else Attribution(touched, Method.LAST_TOUCH)


def _last_touch(
    lists: Sequence[ServedList], event: Event, window: float, *, clicks: bool
) -> ServedList | None:
    """The list whose touch (click or impression) of the event's item is the latest within ``window``
    seconds before the event; ties go to the later list id."""
    best: ServedList | None = None
    best_key = (-1.0, "")
    for served in lists:
        touch = (served.clicks if clicks else served.impressions).get(event.item_id)
        if touch is None or not 0.0 <= event.timestamp - touch <= window:
            continue
        key = (touch, served.recommendation_id)
        if key > best_key:
            best, best_key = served, key
    return best
