"""Shared dependencies of the controllers: the service objects, request filters, limits."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated, Any

from litestar.connection import ASGIConnection
from litestar.di import NamedDependency
from litestar.params import Parameter

from models.domain import Channel, ItemKind, Stage
from models.errors import InvalidInputError
from models.recommender import Recommender
from models.request import Filters, RecommendedItem, VisitorContext
from service import experiment_runtime
from service.auth import Scope, require_scope
from service.experiment_runtime import ExperimentFollower
from service.experiments_results import StatsProvider
from service.feedback.serve import Feedback, ServedTag
from service.heartbeat import Heartbeat
from service.model_holder import ModelHolder
from service.rules_follower import RulesFollower
from service.settings import Settings
from service.store.base import VisitorState, VisitorStore
from service.store.catalog_base import CatalogStore

IdPath = Annotated[str, Parameter(min_length=1, max_length=256, description="visitor or item id")]
# the upper bound is a server setting, checked by ``check_k``: the schema can only state it in words
K = Annotated[
    int, Parameter(description="number of items: 1 to the server's max_k (JOURNEYREC_MAX_K, 100 by default)")
]


@dataclass(frozen=True)
class Services:
    """What a request handler works with; one instance per app."""

    settings: Settings
    store: VisitorStore
    holder: ModelHolder
    rules: RulesFollower  # the rules store, and this worker's copy of the rule set it serves
    catalog: CatalogStore
    experiments: ExperimentFollower  # the experiments store, and this worker's running experiments
    stats: StatsProvider  # the feedback counters experiment results are computed from
    feedback: Feedback  # recommendation ids, the served-list log, attribution counters
    heartbeat: Heartbeat  # this worker in the fleet store: which version each worker serves


def check_mark_sent(connection: ASGIConnection[Any, Any, Any, Any], campaign: str | None, name: str) -> None:
    """``mark_sent=true`` records campaign sends: a write, so it needs the ingest scope, and a campaign."""
    require_scope(connection, Scope.INGEST, f"{name}=true (recording campaign sends)")
    if campaign is None:
        raise InvalidInputError(f"{name}: true needs a campaign (sends are recorded per campaign)")


def check_k(k: int, settings: Settings, name: str = "k") -> int:
    if not 1 <= k <= settings.max_k:
        raise InvalidInputError(f"query parameter {name!r}: {k} is out of range; use 1..{settings.max_k}")
    return k


async def provide_filters(
    # taking ``svc`` makes Litestar resolve the two dependencies one after the other: independent ones
    # are resolved in an anyio task group, which costs a task per dependency on every request
    svc: NamedDependency[Services],  # noqa: ARG001
    category: Annotated[str | None, Parameter(max_length=128, description="only this category")] = None,
    min_price: Annotated[float | None, Parameter(ge=0, description="lowest price")] = None,
    max_price: Annotated[float | None, Parameter(ge=0, description="highest price")] = None,
    in_stock_only: Annotated[bool, Parameter(description="hide out-of-stock items")] = True,
    kind: Annotated[ItemKind | None, Parameter(description="product or content (item endpoints)")] = None,
    exclude: Annotated[
        list[str] | None, Parameter(max_items=500, description="item ids to leave out (repeatable)")
    ] = None,
    include_purchased: Annotated[bool, Parameter(description="allow already-bought items")] = False,
    include_cart: Annotated[bool, Parameter(description="allow items in the cart")] = False,
) -> Filters:
    if min_price is not None and max_price is not None and min_price > max_price:
        raise InvalidInputError(f"query parameters: min_price {min_price} is above max_price {max_price}")
    return Filters(
        category=category,
        min_price=min_price,
        max_price=max_price,
        in_stock_only=in_stock_only,
        kind=kind,
        exclude=frozenset(exclude or ()),
        include_purchased=include_purchased,
        include_cart=include_cart,
    )


def empty_state(visitor_id: str) -> VisitorState:
    return VisitorState(visitor_id=visitor_id, events=[], cart={}, purchases={})


def context_of(
    state: VisitorState,
    *,
    channel: Channel | None = None,
    country: str | None = None,
    current_item: str | None = None,
    placement: str = "home",
    stage_override: Stage | None = None,
) -> VisitorContext:
    """The model's view of one visitor: stored state plus this request's context."""
    return VisitorContext(
        visitor_id=state.visitor_id,
        events=state.events,
        cart=state.cart,
        purchases=state.purchases,
        purchase_log=state.purchase_log,
        now=time.time(),
        channel=channel,
        country=country,
        current_item=current_item,
        placement=placement,
        stage_override=stage_override,
    )


async def retarget_logged(
    svc: Services,
    model: Recommender,
    visitor_id: str,
    state: VisitorState,
    k: int,
    filters: Filters,
    *,
    campaign: str | None,
    mark_sent: bool,
    placement: str,
) -> tuple[list[RecommendedItem], str, ServedTag]:
    """A retargeting list of ``visitor_id`` (``GET .../retargeting`` and each export line) from its
    ``state``: the person's experiment variant makes the items, the sends are recorded when asked (a
    ``campaign`` and ``mark_sent``), and the list is logged for attribution under ``placement``. Returns
    the items, the version of the model that made them and the answer's tag."""
    served = await svc.experiments.runtime.serve(experiment_runtime.RETARGETING, state.person)
    ctx = context_of(state)
    items = experiment_runtime.retarget(served, model, ctx, k, filters, state.sent)
    if mark_sent and campaign is not None and items:
        await svc.store.mark_sent(visitor_id, campaign, [r.item_id for r in items])
    tag = await svc.feedback.served(
        state.person,  # feedback is kept per person: a login does not split a visitor in two
        stage=model.stage_of(ctx).stage.value,
        placement=placement,
        items=[r.item_id for r in items],
        **experiment_runtime.names(served),
    )
    version = served.model.version if served is not None else model.version
    return items, version, tag
