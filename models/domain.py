"""Domain vocabulary: journey stages, event names, item kinds, and the boundary Structs (events, catalog).

Timestamps are POSIX seconds (float, UTC) everywhere inside journeyrec; loaders convert on the way in.
"""

from __future__ import annotations

import enum

import msgspec

HOUR = 3_600.0  # seconds
DAY = 86_400.0  # seconds


class Stage(enum.Enum):
    """Customer-journey stages, in journey order."""

    AWARENESS = "awareness"
    CONSIDERATION = "consideration"
    DECISION = "decision"
    RETENTION = "retention"
    ADVOCACY = "advocacy"

    index: int  # position in journey order (``STAGES``): a plain attribute, read on every request

    def __init__(self, _value: str) -> None:  # Enum passes each member its value
        self.index = len(type(self)._member_names_)


STAGES: tuple[Stage, ...] = tuple(Stage)


class EventType(enum.Enum):
    """The native event vocabulary."""

    PAGE_VIEW = "page_view"
    CONTENT_VIEW = "content_view"
    PRODUCT_VIEW = "product_view"
    SEARCH = "search"
    COMPARE = "compare"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    CHECKOUT = "checkout"
    PURCHASE = "purchase"
    CANCEL = "cancel"
    REVIEW = "review"
    SHARE = "share"
    REFERRAL = "referral"
    WISHLIST = "wishlist"
    # an item shown to the visitor from a served list (``Event.recommendation_id`` names the list): feedback
    # for attribution and experiments, not journey history (the stores keep it out of the visitor's events)
    IMPRESSION = "impression"

    # small integer code used in columnar arrays (int8): the position in ``EVENT_TYPES``. A plain attribute
    # set as each member is created: a request reads it for every stored event, and a property plus a dict
    # lookup (Enum.__hash__ is Python code) cost a few microseconds each time
    code: int

    def __init__(self, _value: str) -> None:  # Enum passes each member its value
        self.code = len(type(self)._member_names_)


EVENT_TYPES: tuple[EventType, ...] = tuple(EventType)
#: the events a visitor's purchase log keeps (the stores write it; buy-again and ownership read it)
PURCHASE_LOG_EVENTS: frozenset[EventType] = frozenset({EventType.PURCHASE, EventType.CANCEL})
EVENT_NAMES: frozenset[str] = frozenset(e.value for e in EventType)


class Channel(enum.Enum):
    """Touchpoint a visit came through."""

    EMAIL = "email"
    AD = "ad"
    SEARCH = "search"
    SOCIAL = "social"
    DIRECT = "direct"
    REFERRAL = "referral"


class ItemKind(enum.Enum):
    PRODUCT = "product"
    CONTENT = "content"


class Source(enum.StrEnum):
    """Why an item is recommended: the candidate source that explains it (reported with every item).

    personalized, buy_again, recently_viewed, in_cart, complement, similar, popular, trending: the blend
    feature that contributed most to the item's score (``models.blend.FEATURES``), or the page's anchors
    (complement, similar); content: a content item for the stage; abandoned_cart, browsed: retargeting;
    new: an item the model never saw, added by the live catalog (``models.overlay``) and scored from its
    features. A ``str`` enum: members compare and encode as their values.
    """

    PERSONALIZED = "personalized"
    BUY_AGAIN = "buy_again"
    RECENTLY_VIEWED = "recently_viewed"
    IN_CART = "in_cart"
    COMPLEMENT = "complement"
    SIMILAR = "similar"
    POPULAR = "popular"
    TRENDING = "trending"
    CONTENT = "content"
    ABANDONED_CART = "abandoned_cart"
    BROWSED = "browsed"
    NEW = "new"


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False, omit_defaults=True):
    """One interaction of a visitor with an item (native format).

    ``gc=False``: events hold only strings, numbers and enums (no cycles are possible), and a request
    decodes hundreds of them; keeping them out of the cyclic collector avoids its pauses on the hot path.
    ``omit_defaults=True``: unset optional fields are left out of the JSON, which halves what Redis keeps
    per event (the recent-events list and the stream: 103 instead of 196 bytes for a product view) and what
    a request reads back; decoding fills in the defaults as before.
    """

    visitor_id: str
    item_id: str
    event: EventType
    timestamp: float
    # Client-supplied id that makes retries idempotent (service); None in offline files.
    event_id: str | None = None
    session_id: str | None = None
    channel: Channel | None = None
    quantity: float | None = None
    value: float | None = None
    country: str | None = None
    # the served list this event answers (``recommendation_id`` of a list answer): set on an impression,
    # and on a view, add-to-cart or purchase that came from a recommendation (direct attribution)
    recommendation_id: str | None = None


class CatalogItem(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One catalog entry. ``stages`` lists the journey stages a content item serves (empty: any).

    ``gc=False`` as for ``Event``: strings, numbers, enums and tuples of them cannot form cycles.
    """

    item_id: str
    kind: ItemKind = ItemKind.PRODUCT
    title: str = ""
    category: str = ""
    price: float | None = None
    tags: tuple[str, ...] = ()
    stages: tuple[Stage, ...] = ()
    in_stock: bool = True
    # Repeatable items (consumables) may be recommended again after purchase.
    repeatable: bool = False
