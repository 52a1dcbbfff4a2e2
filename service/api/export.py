"""``POST /v1/retargeting/export``: retargeting lists for many visitors as JSON Lines (email/ad jobs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import msgspec
from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream
from litestar.status_codes import HTTP_200_OK

from models.errors import InvalidInputError, StoreUnavailableError
from models.recommender import Recommender
from models.request import Filters
from service import metrics
from service.api.deps import Services, check_k, check_mark_sent, retarget_logged
from service.auth import Scope, scopes
from service.schemas import ExportIn, ExportLine, items_out

NDJSON = "application/x-ndjson"


async def _lines(svc: NamedDependency[Services], model: Recommender, req: ExportIn) -> AsyncIterator[bytes]:
    """One JSON line per visitor, in request order. A visitor the store fails on gets an ``error`` line;
    the status line has long been sent, so the failure is reported where it happened."""
    encoder = msgspec.json.Encoder()
    filters = Filters(category=req.category, exclude=frozenset(req.exclude))
    for visitor_id in dict.fromkeys(req.visitor_ids):
        try:
            state = await svc.store.visitor(visitor_id, req.campaign)
            items, _version, tag = await retarget_logged(
                svc,
                model,
                visitor_id,
                state,
                req.k,
                filters,
                campaign=req.campaign,
                mark_sent=req.mark_sent,
                placement="export",
            )
            line = ExportLine(
                visitor_id, items_out(items), None, tag.recommendation_id, tag.experiment, tag.variant
            )
        except StoreUnavailableError as e:
            line = ExportLine(visitor_id, [], error=str(e))
        metrics.RECOMMENDATIONS.labels("retargeting_export", "false").inc()
        yield encoder.encode(line) + b"\n"


class ExportController(Controller):
    path = "/retargeting/export"
    tags = ["retargeting"]  # noqa: RUF012 (Litestar reads a class attribute)

    @post(
        "/",
        status_code=HTTP_200_OK,
        opt=scopes(Scope.READ),
        media_type=NDJSON,
        summary="Retargeting lists for many visitors (JSON Lines)",
        description=(
            'Body {"visitor_ids": [...], "k", "campaign", "mark_sent", "category", "exclude"}. Answers '
            'one line {"visitor_id", "items"} per visitor (or {"visitor_id", "items": [], "error"}). '
            "`mark_sent` (default false): with `mark_sent: true` and a `campaign`, each "
            "visitor's exported items are recorded as sent by that campaign, so the next export for the "
            "same campaign skips them; this writes visitor state, so it also needs the `ingest` scope "
            "(403 otherwise), and a campaign (400 without one)."
        ),
    )
    async def export(
        self, request: Request[Any, Any, Any], svc: NamedDependency[Services], data: JSONBody[ExportIn]
    ) -> Stream:
        check_k(data.k, svc.settings, "body field 'k'")
        if data.mark_sent:
            check_mark_sent(request, data.campaign, "body field 'mark_sent'")
        limit = svc.settings.max_export_visitors
        if len(data.visitor_ids) > limit:
            raise InvalidInputError(
                f"body field 'visitor_ids': {len(data.visitor_ids)} visitors; at most {limit} per request"
            )
        model = svc.holder.require()  # one model version for the whole export
        # fail before the 200 is sent when the store is down: the caller retries the whole batch
        if not await svc.store.ping():
            raise StoreUnavailableError("the visitor store is unavailable; retry later")
        return Stream(_lines(svc, model, data), media_type=NDJSON)
