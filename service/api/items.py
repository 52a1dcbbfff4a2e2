"""Item-to-item endpoints: similar items and complements, for one item or a list (a cart)."""

from __future__ import annotations

import logging
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter

from models.errors import NotFoundError, StoreUnavailableError
from models.recommender import Recommender
from models.request import Filters, Relation
from service import experiment_runtime, metrics
from service.api.deps import IdPath, K, Services, check_k, context_of, provide_filters
from service.auth import Scope, scopes
from service.feedback import metrics as feedback_metrics
from service.schemas import RelatedOut, items_out
from service.store.base import StoreBusyError, VisitorState

log = logging.getLogger("journeyrec.service")

ItemIds = Annotated[
    list[str],
    Parameter(min_items=1, max_items=100, description="anchor item ids, repeatable: ?item_id=a&item_id=b"),
]
VisitorId = Annotated[
    str | None,
    Parameter(
        min_length=1,
        max_length=256,
        description="the visitor asking (optional): the list is logged for attribution under their stage, "
        "and experiments on the placement `similar` or `complements` assign them a variant",
    ),
]


async def list_visitor(svc: Services, visitor_id: str | None, placement: str) -> VisitorState | None:
    """The state of the visitor an item-to-item list is asked for: read when the list is logged for
    attribution (``log_served_lists``) or an experiment runs on ``placement``. None without a visitor, when
    neither applies, or when the store is down: the list is then served but not logged (counted in
    ``journeyrec_feedback_write_failures_total{what="served"}``), and an experiment hashes the visitor id. A
    busy store raises, as everywhere."""
    if visitor_id is None or not (svc.feedback.log_lists or svc.experiments.runtime.runs_on(placement)):
        return None
    try:
        return await svc.store.visitor(visitor_id)
    except StoreBusyError:
        raise
    except StoreUnavailableError as e:  # logged and counted where the store failed
        if svc.feedback.log_lists:
            feedback_metrics.WRITE_FAILURES.labels("served").inc()
        log.info("a %s list not logged: %s", placement, e)
        return None


async def _related(
    svc: Services, item_ids: list[str], k: int, filters: Filters, which: Relation, visitor_id: str | None
) -> RelatedOut:
    check_k(k, svc.settings)
    model: Recommender = svc.holder.require()
    placement = experiment_runtime.SIMILAR if which == "similar" else experiment_runtime.COMPLEMENTS
    state = await list_visitor(svc, visitor_id, placement)
    person = state.person if state is not None else visitor_id
    served = None if person is None else await svc.experiments.runtime.serve(placement, person)
    if served is not None:
        model = served.model
    anchors = list(dict.fromkeys(item_ids))  # dedupe, keep order
    known = [i for i in anchors if model.has_item(i)]
    unknown = [i for i in anchors if not model.has_item(i)]
    if not known:
        names = ", ".join(repr(i) for i in unknown[:5])
        raise NotFoundError(f"unknown item{'s' if len(unknown) > 1 else ''} {names} (model {model.version})")
    items = experiment_runtime.related(served, model, known, k, filters, which)
    metrics.RECOMMENDATIONS.labels(which, "false").inc()
    # logged under the visitor's stage at this moment, like a page's list; without a visitor, stamped only
    stage = "" if state is None else model.stage_of(context_of(state, placement=placement)).stage.value
    tag = await svc.feedback.served(
        None if state is None else state.person,
        stage=stage,
        placement=placement,
        items=[r.item_id for r in items],
        **experiment_runtime.names(served),
    )
    return RelatedOut(
        item_ids=known,
        items=items_out(items),
        unknown=unknown,
        model_version=model.version,
        recommendation_id=tag.recommendation_id,
        experiment=tag.experiment,
        variant=tag.variant,
    )


class ItemsController(Controller):
    path = "/items"
    tags = ["items"]  # noqa: RUF012 (Litestar reads a class attribute)
    dependencies = {"filters": Provide(provide_filters)}  # noqa: RUF012

    @get("/{item_id:str}/similar", opt=scopes(Scope.READ), summary="Items similar to one item")
    async def similar_one(
        self,
        svc: NamedDependency[Services],
        filters: NamedDependency[Filters],
        item_id: IdPath,
        k: K = 10,
        visitor_id: VisitorId = None,
    ) -> RelatedOut:
        return await _related(svc, [item_id], k, filters, "similar", visitor_id)

    @get("/{item_id:str}/complements", opt=scopes(Scope.READ), summary="Complements of one item")
    async def complements_one(
        self,
        svc: NamedDependency[Services],
        filters: NamedDependency[Filters],
        item_id: IdPath,
        k: K = 10,
        visitor_id: VisitorId = None,
    ) -> RelatedOut:
        return await _related(svc, [item_id], k, filters, "complement", visitor_id)

    @get(
        "/similar",
        opt=scopes(Scope.READ),
        summary="Items similar to a list of items",
        description="Anchors the model does not know are listed in `unknown`; 404 if it knows none.",
    )
    async def similar_many(
        self,
        svc: NamedDependency[Services],
        filters: NamedDependency[Filters],
        item_id: ItemIds,
        k: K = 10,
        visitor_id: VisitorId = None,
    ) -> RelatedOut:
        return await _related(svc, item_id, k, filters, "similar", visitor_id)

    @get(
        "/complements",
        opt=scopes(Scope.READ),
        summary="Complements of a list of items (e.g. the cart)",
        description="Anchors the model does not know are listed in `unknown`; 404 if it knows none.",
    )
    async def complements_many(
        self,
        svc: NamedDependency[Services],
        filters: NamedDependency[Filters],
        item_id: ItemIds,
        k: K = 10,
        visitor_id: VisitorId = None,
    ) -> RelatedOut:
        return await _related(svc, item_id, k, filters, "complement", visitor_id)
