"""Event weights and the positive-event sets: configuration, not code.

``EventWeights`` says how much one event of each type tells about a visitor's interest in the item; a
negative weight (cancel, remove_from_cart) subtracts. Defaults are documented in the class; callers
override any of them (CLI ``--weights FILE.json``).
"""

from __future__ import annotations

import msgspec
import numpy as np

from models.domain import EVENT_TYPES, EventType

DEFAULT_WEIGHTS: dict[EventType, float] = {
    EventType.PAGE_VIEW: 0.0,  # page views carry no item intent
    EventType.CONTENT_VIEW: 0.5,
    EventType.PRODUCT_VIEW: 1.0,
    EventType.SEARCH: 0.5,
    EventType.COMPARE: 1.5,
    EventType.WISHLIST: 2.0,
    EventType.ADD_TO_CART: 3.0,
    EventType.REMOVE_FROM_CART: -1.0,
    EventType.CHECKOUT: 3.0,
    EventType.PURCHASE: 5.0,
    EventType.CANCEL: -3.0,
    EventType.REVIEW: 4.0,
    EventType.SHARE: 3.0,
    EventType.REFERRAL: 3.0,
    EventType.IMPRESSION: 0.0,  # being shown an item says nothing about wanting it
}

#: Events that count as "the visitor wanted this item" when evaluating or fitting a blend.
DEFAULT_POSITIVE: frozenset[EventType] = frozenset(
    {EventType.PURCHASE, EventType.ADD_TO_CART, EventType.WISHLIST, EventType.REVIEW}
)


class EventWeights(msgspec.Struct, frozen=True, kw_only=True):
    """Per-event-type interest weights; missing types fall back to ``DEFAULT_WEIGHTS``."""

    weights: dict[EventType, float] = msgspec.field(default_factory=lambda: dict(DEFAULT_WEIGHTS))

    def vector(self) -> np.ndarray:
        """float32[len(EventType)] weight by ``EventType.code``."""
        merged = {**DEFAULT_WEIGHTS, **self.weights}
        return np.array([merged[e] for e in EVENT_TYPES], dtype=np.float32)

    def of(self, event_codes: np.ndarray) -> np.ndarray:
        """float32[n] weight of each event code (int8[n])."""
        return self.vector()[event_codes]


def positive_codes(positive: frozenset[EventType]) -> np.ndarray:
    """int8[m] codes of the positive event types (for ``np.isin``)."""
    return np.array(sorted(e.code for e in positive), dtype=np.int8)
