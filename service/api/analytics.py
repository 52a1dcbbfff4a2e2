"""``GET /v1/analytics/journey``: how visitors move between journey stages over a range of hours or days."""

from __future__ import annotations

import time
from typing import Annotated

from litestar import Controller, get
from litestar.di import NamedDependency
from litestar.params import Parameter, QueryParameter

from service.analytics.report import check_query, journey_report
from service.analytics.schemas import JourneyAnalyticsOut
from service.analytics.tracker import JourneyTracker
from service.api.deps import Services
from service.auth import Scope, scopes


class AnalyticsController(Controller):
    path = "/analytics"
    tags = ["analytics"]  # noqa: RUF012 (Litestar reads a class attribute)

    @get(
        "/journey",
        opt=scopes(Scope.READ),
        summary="Stage distribution, transitions, time in stage, funnel and recommendation impact",
        description=(
            "Over the periods (UTC hours or days) that overlap [from, to): distinct visitors seen in each "
            "stage per period, the transition matrix with counts and row-normalised rates, the median time "
            "in each stage (read from bucketed counts), the funnel awareness -> consideration -> decision "
            "-> retention -> advocacy with the drop-off at each step, and the stage-advance rate of "
            "visitors who clicked a recommendation vs those who did not (descriptive, not causal). "
            "`channel` keeps the transitions of events through that channel and the visitors who came "
            "through it. Transitions by time alone (an abandoned cart expiring, a customer lapsing) are "
            "counted when they take effect, by a sweep every JOURNEYREC_JOURNEY_SWEEP_SECONDS, or at the "
            "visitor's next event if that comes first."
        ),
    )
    async def journey(
        self,
        svc: NamedDependency[Services],
        journey: NamedDependency[JourneyTracker],
        start: Annotated[
            str | None,
            QueryParameter(
                name="from",
                max_length=64,
                description="ISO-8601 (no offset: UTC) or POSIX seconds; default: `to` minus 1 day (hour) "
                "or 7 days (day)",
            ),
        ] = None,
        end: Annotated[
            str | None, QueryParameter(name="to", max_length=64, description="exclusive; default: now")
        ] = None,
        granularity: Annotated[str, Parameter(max_length=16, description="hour or day")] = "day",
        channel: Annotated[
            str | None,
            Parameter(max_length=16, description="email, ad, search, social, direct, referral or none"),
        ] = None,
    ) -> JourneyAnalyticsOut:
        s = svc.settings
        frm, to, g = check_query(
            start,
            end,
            granularity,
            channel,
            {"hour": s.analytics_hourly_days, "day": s.analytics_daily_days},
            time.time(),
        )
        return await journey_report(journey.store, frm, to, g, channel)
