"""``POST /v1/events``: ingest one event or a batch; the next recommendation call sees it."""

from __future__ import annotations

import time
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.status_codes import HTTP_200_OK

from models.domain import Event, EventType
from models.errors import StoreUnavailableError
from models.journey import DEFAULT_RULES
from service import metrics
from service.analytics.tracker import JourneyTracker
from service.api.deps import Services
from service.auth import Scope, scopes
from service.feedback.ingest import feed, history_of
from service.ingest import count_unknown, decode_events
from service.openapi_body import EventsOperation
from service.schemas import IngestOut
from service.store.base import AppendResult, VisitorStore


class EventsController(Controller):
    path = "/events"
    tags = ["events"]  # noqa: RUF012 (Litestar reads a class attribute)

    @post(
        "/",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.INGEST),
        operation_class=EventsOperation,
        summary="Ingest one event or a batch",
        description=(
            'Body: one event {"event_id", "visitor_id", "item_id", "event", "timestamp", ...} or '
            '{"events": [...]}. timestamp: ISO-8601 with offset or POSIX seconds; absent = now. '
            "A repeated event_id is skipped (counted in duplicates), so retries are harmless. "
            "Events for items neither the model nor the live catalog knows are stored too, and counted in "
            "unknown_items. Events for an anonymous id linked to a user (POST /v1/identities) are stored "
            "under the user and counted in redirected. "
            'An impression {"event": "impression", "item_id": <shown item>, "recommendation_id": <list id>} '
            "(one per item shown) is counted for attribution, not stored in the visitor's history, and "
            "counted in impressions; it needs a recommendation_id (400 without). A product_view, add_to_cart "
            "or purchase carrying a recommendation_id is credited to that list. "
            "503 with Retry-After when the store cannot be reached: nothing was stored, or, when only "
            "crediting the events failed, they were stored and a retry with the same event ids stores and "
            "counts nothing twice."
        ),
    )
    async def ingest(
        self,
        request: Request[Any, Any, Any],
        svc: NamedDependency[Services],
        journey: NamedDependency[JourneyTracker],
    ) -> IngestOut:
        # the body is decoded here, not by Litestar, so its depth is checked before msgspec sees it
        body = await request.body()
        s = svc.settings
        events = decode_events(body, now=time.time(), max_batch=s.max_batch, max_depth=s.max_json_depth)
        history = history_of(events)  # impressions are feedback, not history
        try:
            result = await svc.store.append(history) if history else AppendResult(accepted=0, duplicates=0)
        except StoreUnavailableError:
            metrics.EVENTS.labels("refused").inc(len(events))
            raise
        # feedback is kept per person (``VisitorState.person``): a login does not split a visitor in two
        fed = await feed(svc.feedback, await _by_person(svc.store, events, history, result))
        metrics.EVENTS.labels("accepted").inc(result.accepted)
        metrics.EVENTS.labels("duplicate").inc(result.duplicates)
        model = svc.holder.current  # stage transitions, by the live model's journey rules
        if result.aliases:  # events of a linked anonymous id are the user's journey
            history = [
                msgspec.structs.replace(e, visitor_id=result.aliases.get(e.visitor_id, e.visitor_id))
                for e in history
            ]
        await journey.observe(history, model.rules if model is not None else DEFAULT_RULES)
        unknown = count_unknown(events, svc.holder.knows)
        metrics.UNKNOWN_ITEM_EVENTS.inc(unknown)
        redirected = result.redirected or msgspec.UNSET
        return IngestOut(
            result.accepted, result.duplicates + fed.duplicates, unknown, fed.impressions, redirected
        )


async def _by_person(
    store: VisitorStore, events: list[Event], history: list[Event], result: AppendResult
) -> list[Event]:
    """``events`` addressed to their persons: those of stored events from ``result``
    (``AppendResult.person_of``), those of impressions only (never stored) asked of the store; the same list
    when no person differs from the visitor id."""
    stored = {e.visitor_id for e in history}
    unseen = [e.visitor_id for e in events if e.event is EventType.IMPRESSION and e.visitor_id not in stored]
    asked = await store.persons_of(unseen) if unseen else {}
    if not (result.aliases or result.persons or asked):
        return events
    persons = {v: asked.get(v) or result.person_of(v) for v in {e.visitor_id for e in events}}
    return [
        e
        if persons[e.visitor_id] == e.visitor_id
        else msgspec.structs.replace(e, visitor_id=persons[e.visitor_id])
        for e in events
    ]
