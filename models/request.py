"""What a recommendation request carries in and out: the visitor's live state, the filters, the answer.

These Structs are the boundary between the service and the request path (``models.recommender``).
"""

from __future__ import annotations

from typing import Literal

import msgspec

from models.domain import Channel, Event, ItemKind, Source, Stage
from models.journey import StageResult


class VisitorContext(msgspec.Struct, frozen=True, kw_only=True):
    """A visitor's live state plus the request's context.

    events        the visitor's recent events, oldest first
    cart          item_id -> time it was added
    purchases     item_id -> time of its latest purchase (reaching beyond ``events``)
    purchase_log  the visitor's latest purchase and cancel events in arrival order, reaching beyond
                  ``events`` (whose purchases and cancels are its last ones): buy-again counts purchases and
                  their recency over it as the offline profiles do over the whole history
    """

    visitor_id: str
    events: list[Event]
    cart: dict[str, float]
    purchases: dict[str, float]
    now: float
    purchase_log: list[Event] = msgspec.field(default_factory=list)
    channel: Channel | None = None
    country: str | None = None
    current_item: str | None = None
    placement: str = "home"
    stage_override: Stage | None = None


class Filters(msgspec.Struct, frozen=True, kw_only=True):
    """What the caller allows: catalog attributes (category, price, stock, kind), items to leave out, and
    whether bought or carted items may come back."""

    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = True
    kind: ItemKind | None = None
    exclude: frozenset[str] = frozenset()
    include_purchased: bool = False
    include_cart: bool = False


#: the two ways items relate to each other: alike, or bought together
Relation = Literal["similar", "complement"]


#: what a merchandising rule did to an item (``models.rules``): the first three to an item in the list,
#: the last two to an item it kept out of the list
Effect = Literal["pinned", "boosted", "buried", "hidden", "capped"]


class RuleEffect(msgspec.Struct, frozen=True, gc=False):
    """``rule`` (a rule id) ``effect`` this item: "pinned by spring-sale"."""

    rule: str
    effect: Effect


class RecommendedItem(msgspec.Struct, frozen=True, omit_defaults=True):
    """One item of an answer; ``rules``: the merchandising rules that changed it; ``exploration``: a new
    item in a slot kept for exploration (``models.serving_rules.Exploration``); both left out when
    empty or false."""

    item_id: str
    score: float
    source: Source
    reason: str
    rules: tuple[RuleEffect, ...] = ()
    exploration: bool = False


class Recommendations(msgspec.Struct, frozen=True):
    """rules_version: the merchandising rule set applied (None: none); rules_fallback: it would have
    emptied the product list, which is served without it."""

    stage: StageResult
    products: list[RecommendedItem]
    content: list[RecommendedItem]
    model_version: str
    fallback: bool
    rules_version: int | None = None
    rules_fallback: bool = False
