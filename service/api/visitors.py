"""Per-visitor endpoints: recommendations, retargeting, journey, linked identities, erase (GDPR)."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get
from litestar.di import NamedDependency, Provide
from litestar.params import Parameter
from litestar.status_codes import HTTP_200_OK

from models.domain import STAGES, Channel, Stage
from models.errors import StoreUnavailableError
from models.journey import stages_after_events
from models.referrer import channel_from_referrer
from models.request import Filters
from service import experiment_runtime, metrics
from service.analytics.tracker import JourneyTracker
from service.api.deps import (
    IdPath,
    K,
    Services,
    check_k,
    check_mark_sent,
    context_of,
    empty_state,
    provide_filters,
    retarget_logged,
)
from service.auth import Scope, scopes
from service.schemas import (
    ErasedOut,
    IdentitiesOut,
    JourneyOut,
    RecommendationsOut,
    RetargetingOut,
    StageOut,
    items_out,
    touchpoint,
)
from service.store.base import StoreBusyError, failure_of

Placement = Annotated[
    str,
    Parameter(
        pattern=r"^[a-z][a-z_]{0,31}$",
        description="page or channel asking: home, product, cart, checkout, email, ad, ...",
    ),
]
Country = Annotated[str | None, Parameter(min_length=2, max_length=64, description="visitor's country")]


class VisitorsController(Controller):
    path = "/visitors/{visitor_id:str}"
    tags = ["visitors"]  # noqa: RUF012 (Litestar reads a class attribute)
    dependencies = {"filters": Provide(provide_filters)}  # noqa: RUF012

    @get(
        "/recommendations",
        opt=scopes(Scope.READ),
        summary="Stage-aware products and content for a visitor",
        description=(
            "Unknown visitors get a cold-start answer from context and stage. When the state store is "
            "unreachable the answer is non-personalized and flagged fallback=true; when the service is busy "
            "the answer is 503 with Retry-After."
        ),
    )
    async def recommendations(
        self,
        svc: NamedDependency[Services],
        filters: NamedDependency[Filters],
        visitor_id: IdPath,
        k: K = 10,
        n_content: Annotated[int, Parameter(ge=0, le=50, description="number of content items")] = 3,
        placement: Placement = "home",
        item_id: Annotated[str | None, Parameter(max_length=256, description="item on screen")] = None,
        channel: Annotated[Channel | None, Parameter(description="touchpoint of this visit")] = None,
        referrer: Annotated[
            str | None,
            Parameter(
                max_length=2048,
                description="referring URL of this visit; sets the channel when none is given "
                "(search engine -> search, social network -> social, webmail -> email, utm_medium=cpc -> ad, "
                "another site -> referral, empty -> direct)",
            ),
        ] = None,
        country: Country = None,
        stage: Annotated[Stage | None, Parameter(description="override the inferred stage")] = None,
        preview: Annotated[
            bool,
            Parameter(
                description="a look at what the visitor would get (the console's), not shown to them: the "
                "answer is not logged for attribution nor counted in an experiment"
            ),
        ] = False,
    ) -> RecommendationsOut:
        check_k(k, svc.settings)
        model = svc.holder.require()  # read once: a concurrent reload cannot change it mid-request
        try:
            state = await svc.store.visitor(visitor_id)
            personalized = True
        except StoreBusyError:
            raise  # the store is up: 503 with Retry-After, never a silently worse answer
        except StoreUnavailableError as e:  # counted where the store failed
            metrics.count_fallback(failure_of(e), str(e))
            state, personalized = empty_state(visitor_id), False
        ctx = context_of(
            state,
            channel=channel if channel is not None or referrer is None else channel_from_referrer(referrer),
            country=country,
            current_item=item_id,
            placement=placement,
            stage_override=stage,
        )
        served = await svc.experiments.runtime.serve(placement, state.person)
        rec = experiment_runtime.recommend(
            served, model, ctx, k, filters, n_content, personalized=personalized
        )
        metrics.RECOMMENDATIONS.labels("recommendations", str(rec.fallback).lower()).inc()
        tag = await svc.feedback.served(
            # a store that is down cannot log it either
            state.person if personalized and not preview else None,
            stage=rec.stage.stage.value,
            placement=placement,
            items=[r.item_id for r in (*rec.products, *rec.content)],
            **experiment_runtime.names(served),
        )
        return RecommendationsOut(
            visitor_id=visitor_id,
            stage=StageOut.of(rec.stage),
            products=items_out(rec.products),
            content=items_out(rec.content),
            model_version=rec.model_version,
            fallback=rec.fallback,
            rules_version=rec.rules_version,
            rules_fallback=rec.rules_fallback,
            recommendation_id=tag.recommendation_id,
            experiment=tag.experiment,
            variant=tag.variant,
        )

    @get(
        "/retargeting",
        opt=scopes(Scope.READ),
        summary="Items to bring a visitor back (abandoned cart, browsed, complements)",
        description=(
            "Deduplicated against purchases, out-of-stock items and what `campaign` already sent. "
            "`mark_sent` (default false): with `mark_sent=true` and a `campaign`, the returned "
            "items are recorded as sent by that campaign, so later calls for the same campaign skip them; "
            "this writes visitor state, so it also needs the `ingest` scope (403 otherwise), and a "
            "campaign (400 without one)."
        ),
    )
    async def retargeting(
        self,
        request: Request[Any, Any, Any],
        svc: NamedDependency[Services],
        filters: NamedDependency[Filters],
        visitor_id: IdPath,
        k: K = 10,
        campaign: Annotated[str | None, Parameter(min_length=1, max_length=128)] = None,
        mark_sent: Annotated[
            bool,
            Parameter(description="record the returned items as sent by `campaign` (needs the ingest scope)"),
        ] = False,
    ) -> RetargetingOut:
        check_k(k, svc.settings)
        if mark_sent:
            check_mark_sent(request, campaign, "query parameter 'mark_sent'")
        model = svc.holder.require()
        state = await svc.store.visitor(visitor_id, campaign)
        items, version, tag = await retarget_logged(
            svc,
            model,
            visitor_id,
            state,
            k,
            filters,
            campaign=campaign,
            mark_sent=mark_sent,
            placement="retargeting",
        )
        metrics.RECOMMENDATIONS.labels("retargeting", "false").inc()
        return RetargetingOut(
            visitor_id,
            campaign,
            items_out(items),
            version,
            tag.recommendation_id,
            tag.experiment,
            tag.variant,
        )

    @get(
        "/journey",
        opt=scopes(Scope.READ),
        summary="Journey stage, signals and recent touchpoints",
        description=(
            "The visitor's stage now, with its confidence and signals; the most recent stored events, "
            "newest first, each with `stage`: the stage the visitor was in just after it (the stage engine "
            "over the events up to it, asked at its time); the cart and the purchases."
        ),
    )
    async def journey(
        self,
        svc: NamedDependency[Services],
        visitor_id: IdPath,
        limit: Annotated[int, Parameter(ge=0, le=500, description="touchpoints, newest first")] = 20,
    ) -> JourneyOut:
        model = svc.holder.require()
        state = await svc.store.visitor(visitor_id)
        result = model.stage_of(context_of(state))
        # the stage after each stored event, all in one vectorised pass over the visitor's history
        after, _ = stages_after_events(state.events, model.rules)
        newest_first = range(len(state.events) - 1, -1, -1)[:limit]
        return JourneyOut(
            visitor_id=visitor_id,
            stage=StageOut.of(result),
            touchpoints=[touchpoint(state.events[i], STAGES[after[i]]) for i in newest_first],
            cart=sorted(state.cart, key=lambda i: -state.cart[i]),
            purchases=sorted(state.purchases, key=lambda i: -state.purchases[i]),
            model_version=model.version,
        )

    @get(
        "/identities",
        opt=scopes(Scope.READ),
        summary="The ids linked to a visitor through logins",
        description=(
            "`user_id`: the user this id is linked to (null when it is not a linked anonymous id); "
            "`anonymous_ids`: the anonymous ids linked to that user, or to this id when it is a user "
            "(empty for a visitor nothing is linked to). Unknown ids answer the empty links, never 404."
        ),
    )
    async def identities(self, svc: NamedDependency[Services], visitor_id: IdPath) -> IdentitiesOut:
        user = await svc.store.resolve(visitor_id)
        anonymous = await svc.store.linked(user)
        return IdentitiesOut(visitor_id, user if user != visitor_id else None, anonymous)

    @delete(
        "/",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.ADMIN),
        summary="Erase everything held about a visitor (GDPR)",
    )
    async def erase(
        self, svc: NamedDependency[Services], journey: NamedDependency[JourneyTracker], visitor_id: IdPath
    ) -> ErasedOut:
        # the user's erase cascades to its linked anonymous ids: their journey records and served lists
        # go too (the visitor store's erase, last, removes the links themselves)
        await svc.feedback.drain()  # this worker's queued counts first: none lands after the erase
        removed = 0
        linked = [*await svc.store.linked(visitor_id), visitor_id]
        for v in linked:
            removed += await journey.store.erase(v) + await svc.feedback.store.erase(v)
        # the served lists and feedback are kept per person: a user's is its first anonymous visitor's
        for person in set((await svc.store.persons_of([visitor_id])).values()) - set(linked):
            removed += await svc.feedback.store.erase(person)
        removed += await svc.store.erase(visitor_id)
        return ErasedOut(visitor_id=visitor_id, erased=True, records_removed=removed)
