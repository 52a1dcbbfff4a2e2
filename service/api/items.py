"""Item-to-item endpoints: similar items and complements, for one item or a list (a cart)."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter

from models.errors import NotFoundError
from models.recommender import Recommender
from models.request import Filters, Relation
from service import experiment_runtime, metrics
from service.api.deps import IdPath, K, Services, check_k, provide_filters
from service.auth import Scope, scopes
from service.schemas import RelatedOut, items_out

ItemIds = Annotated[
    list[str],
    Parameter(min_items=1, max_items=100, description="anchor item ids, repeatable: ?item_id=a&item_id=b"),
]
VisitorId = Annotated[
    str | None,
    Parameter(
        min_length=1,
        max_length=256,
        description="the visitor asking (optional): experiments on the placement `similar` or "
        "`complements` assign them a variant",
    ),
]


async def _related(
    svc: Services, item_ids: list[str], k: int, filters: Filters, which: Relation, visitor_id: str | None
) -> RelatedOut:
    check_k(k, svc.settings)
    model: Recommender = svc.holder.require()
    placement = experiment_runtime.SIMILAR if which == "similar" else experiment_runtime.COMPLEMENTS
    runtime = svc.experiments.runtime
    served = None if visitor_id is None else await runtime.serve_visitor(placement, visitor_id, svc.store)
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
    # stamped, not logged: an item page's list has no stage to count it under
    tag = await svc.feedback.served(
        None, stage="", placement=which, items=(), **experiment_runtime.names(served)
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
