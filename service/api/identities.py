"""``POST /v1/identities``: a login links an anonymous visitor id to a user id
(``service.store.identity``)."""

from __future__ import annotations

from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from models.domain import Stage
from models.journey import StageResult, with_signal
from models.recommender import Recommender
from service.analytics.tracker import JourneyTracker
from service.api.deps import Services, context_of
from service.auth import Scope, scopes
from service.schemas import IdentityIn, IdentityOut, StageOut
from service.store.base import VisitorStore
from service.store.identity import LinkResult


class IdentitiesController(Controller):
    path = "/identities"
    tags = ["identities"]  # noqa: RUF012 (Litestar reads a class attribute)

    @post(
        "/",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.INGEST),
        summary="Link an anonymous visitor to a user (login)",
        description=(
            'Body {"anonymous_id", "user_id", "force"}. The anonymous visitor\'s events, cart (its adds '
            "since the user's last purchase), purchases and campaign sends join the user's, and everything "
            "later addressed to the anonymous id (events, reads) is the user's. The answer has the user's "
            "stage after the link, re-inferred at once. Linking the same pair again changes nothing "
            "(linked=false). 409 when the anonymous id belongs to another user (force=true moves it; what "
            "was merged stays with the first user), is itself a user with linked ids, or the user id is a "
            "linked anonymous id; 400 when both ids are the same."
        ),
    )
    async def link(
        self,
        svc: NamedDependency[Services],
        journey: NamedDependency[JourneyTracker],
        data: JSONBody[IdentityIn],
    ) -> IdentityOut:
        model = svc.holder.require()  # before anything changes: no model, no link (503)
        before = await _stage(svc.store, model, data.user_id)
        result = await svc.store.link(data.anonymous_id, data.user_id, force=data.force)
        if result.events_carried:  # the merged history may move the user: a transition like any other
            await journey.revisit([data.user_id], model.rules)
        after = await _stage(svc.store, model, data.user_id)
        return IdentityOut(
            anonymous_id=data.anonymous_id,
            user_id=data.user_id,
            linked=result.linked,
            previous_user_id=result.previous_user,
            events_carried=result.events_carried,
            cart_carried=result.cart_carried,
            stage=StageOut.of(_explained(after, before.stage, result)),
            stage_before=before.stage.value,
            model_version=model.version,
        )


async def _stage(store: VisitorStore, model: Recommender, visitor_id: str) -> StageResult:
    return model.stage_of(context_of(await store.visitor(visitor_id)))


def _explained(after: StageResult, before: Stage, result: LinkResult) -> StageResult:
    """The stage with a signal naming what the anonymous visit brought, first when it explains the stage."""
    if result.cart_carried:
        n = len(result.cart_carried)
        signal = f"cart carried over from the anonymous visit ({n} item{'s' if n != 1 else ''})"
        return with_signal(after, signal, explains=after.stage is Stage.DECISION)
    if result.events_carried:
        n = result.events_carried
        signal = f"history carried over from the anonymous visit ({n} event{'s' if n != 1 else ''})"
        return with_signal(after, signal, explains=after.stage is not before)
    return after
