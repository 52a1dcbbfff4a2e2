"""The Litestar application: ``create_app(settings, store=..., model_holder=...)``.

Layout: ``/v1/...`` API (API-key scopes per route), ``/health/live`` and ``/health/ready`` (no key),
``/metrics`` (Prometheus, no key: bind it to a private network), OpenAPI at ``/schema``, the operator
console at ``/console`` (static files, no key; its data comes from ``/v1`` with the operator's key).
Body limits: the ingest, export and catalog batch routes accept ``settings.max_body_bytes``; everything else
64 KiB. Every worker follows the live catalog (``service.catalog_follower``) and writes a heartbeat
(``service.heartbeat``: which model version it serves, for ``GET /v1/models``).
Every JSON body's nesting depth is checked before msgspec decodes it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator
from typing import Any

from litestar import Litestar, Request, Router
from litestar.config.app import AppConfig
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.logging import LoggingConfig
from litestar.middleware.rate_limit import RateLimitConfig
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController
from litestar.types import Middleware, ReceiveMessage

from models.errors import ArtifactError
from models.serving_rules import Exploration
from service.admission import admission_middleware
from service.analytics.factory import build_tracker
from service.analytics.store_base import AnalyticsStore
from service.analytics.tracker import SWEEP_BATCH, JourneyTracker
from service.api.analytics import AnalyticsController
from service.api.catalog import CatalogBatchController, CatalogController
from service.api.console import console_router
from service.api.deps import Services
from service.api.events import EventsController
from service.api.experiments import ExperimentsController
from service.api.export import ExportController
from service.api.feedback import FeedbackController
from service.api.health import HealthController
from service.api.identities import IdentitiesController
from service.api.items import ItemsController
from service.api.model_versions import ModelsController
from service.api.rules import RulesController
from service.api.visitors import VisitorsController
from service.auth import API_KEY_HEADER, Authenticator, check_auth_configured
from service.catalog_follower import CatalogFollower
from service.errors import EXCEPTION_HANDLERS, IncompleteBodyError
from service.experiment_runtime import ExperimentFollower, ExperimentRuntime
from service.experiments_results import StatsProvider
from service.feedback.serve import build_feedback
from service.followers import Followers, every
from service.heartbeat import Heartbeat
from service.json_guard import decode_json
from service.model_holder import ModelHolder
from service.openapi_body import keep_event_components
from service.openapi_docs import document_scopes, reference_assets, reference_page
from service.process_tuning import tune_worker
from service.rate_limit import RATE_LIMIT_STORE, SharedRateLimitStore, rate_limit_stores
from service.rules_file import load_rules_file
from service.rules_follower import RulesFollower
from service.settings import Settings, settings_for_worker
from service.store.base import VisitorStore
from service.store.catalog_base import CatalogStore
from service.store.experiments_base import ExperimentStore
from service.store.factory import (
    build_catalog,
    build_experiments_store,
    build_fleet,
    build_rules_store,
    build_store,
)
from service.store.rules_base import RulesStore

log = logging.getLogger("journeyrec.service")


class MetricsController(PrometheusController):
    """``/metrics`` in the Prometheus text format: an operations endpoint, left out of the API schema (which
    would otherwise describe it as JSON)."""

    include_in_schema = False


SMALL_BODY_BYTES = 64 * 1024
API_VERSION = "1"


class GuardedRequest(Request[Any, Any, Any]):
    """Every JSON body goes through ``json_guard.decode_json`` (depth first; any decoder error a 400 naming
    the field), and a body the client did not finish (it disconnected, or its chunked encoding was
    malformed, which the server reports the same way) is an IncompleteBodyError (400), not Litestar's 500."""

    async def json(self) -> Any:
        settings: Settings = self.app.state.settings
        data = self.route_handler.parsed_data_field
        schema = data.annotation if data is not None else None
        return decode_json(await self.body() or b"null", settings.max_json_depth, schema)

    async def stream(self) -> AsyncGenerator[bytes, None]:
        receive = self.receive

        async def until_complete() -> ReceiveMessage:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise IncompleteBodyError(
                    "request body incomplete: the client disconnected or sent a malformed chunked body"
                )
            return message

        self.receive = until_complete
        try:
            async for chunk in super().stream():
                yield chunk
        finally:
            self.receive = receive


def create_app(
    settings: Settings,
    *,
    store: VisitorStore | None = None,
    model_holder: ModelHolder | None = None,
    rules: RulesStore | None = None,
    catalog: CatalogStore | None = None,
    experiments: ExperimentStore | None = None,
    stats: StatsProvider | None = None,
    analytics: AnalyticsStore | None = None,
) -> Litestar:
    """The service app. A store, holder, rules store or catalog passed in is used as is (and the stores are
    not closed on shutdown: their owner closes them); otherwise they are built from ``settings`` (the rules
    store and the live catalog beside the visitor store: ``build_rules_store``, ``build_catalog``). Raises
    ``stats``: what experiment results read (default: the feedback store's counters). Raises
    InvalidInputError when no API keys are configured and auth was not switched off, or when the rules
    file (``settings.rules_file``) is not a valid rule set."""
    check_auth_configured(settings.api_keys, settings.insecure_no_auth)
    seed = load_rules_file(settings.rules_file) if settings.rules_file else None
    if settings.insecure_no_auth:
        log.warning("API keys are OFF (--insecure-no-auth): for a local demo only")
    owns_store = store is None
    the_store = store if store is not None else build_store(settings)
    holder = model_holder if model_holder is not None else ModelHolder(settings.models_path)
    shares = settings.exploration_shares
    if shares:  # a shop's policy: a setting of the app, whichever holder serves
        holder.exploration = Exploration(shares)
    rules_follower = RulesFollower(rules if rules is not None else build_rules_store(the_store), holder)
    owns_catalog = catalog is None
    the_catalog = catalog if catalog is not None else build_catalog(the_store)
    catalog_follower = CatalogFollower(the_catalog, holder)
    experiment_follower = ExperimentFollower(
        experiments if experiments is not None else build_experiments_store(the_store),
        ExperimentRuntime(holder, settings.experiments_holdout),
    )
    feedback = build_feedback(settings, the_store)
    heartbeat = Heartbeat(build_fleet(the_store, settings), holder)
    services = Services(
        settings=settings,
        store=the_store,
        holder=holder,
        rules=rules_follower,
        catalog=the_catalog,
        experiments=experiment_follower,
        feedback=feedback,
        stats=stats if stats is not None else feedback.store,
        heartbeat=heartbeat,
    )

    tracker = build_tracker(the_store, settings, analytics)
    followers = Followers()

    async def load_model_on_startup() -> None:
        if holder.current is not None or holder.models_dir is None:
            return
        try:
            await holder.reload()
        except ArtifactError:
            # latest is refused (the holder logged why): serve what the rest of the fleet serves, else
            # nothing (/health/ready says 503) until a good version is published
            if await heartbeat.join_fleet() is None:
                log.warning("serving without a model until one is published and POST /v1/models/reload")

    async def check_latest() -> None:
        """Load ``latest`` if it moved (every worker; POST /v1/models/reload reaches only one)."""
        try:
            result = await holder.reload_if_changed()
            if result is not None and result.changed:
                await heartbeat.beat()  # the fleet sees the new version at once
        except ArtifactError:
            pass  # refused: logged, counted and recorded by the holder; the old model serves
        except OSError as e:
            log.warning("checking the models directory for a new version failed: %s", e)

    async def follow_catalog() -> None:
        await catalog_follower.step()

    async def start_followers() -> None:
        if settings.model_poll_seconds > 0 and holder.models_dir is not None:
            followers.start("follow-latest", every(settings.model_poll_seconds, check_latest))
        try:
            await catalog_follower.step()  # the live catalog applies before the first request
        except Exception:  # logged; the follower tries the next version
            log.exception("applying the live catalog failed; serving the model without it")
        followers.start("follow-catalog", every(settings.catalog_poll_seconds, follow_catalog))
        if seed is not None:
            await rules_follower.seed(seed, settings.rules_file or "")
        await rules_follower.step()  # the stored rules apply before the first request
        followers.start("follow-rules", every(settings.rules_poll_seconds, rules_follower.step))
        try:
            await experiment_follower.step()  # running experiments apply before the first request
        except Exception:  # logged; the follower tries again
            log.exception("following the experiments failed; serving without them until the next poll")
        followers.start(
            "follow-experiments", every(settings.experiments_poll_seconds, experiment_follower.step)
        )
        await heartbeat.beat()  # listed with the version it serves before the first request

        async def beat() -> None:
            await heartbeat.beat()  # a failure is logged; the next interval tries again

        followers.start("heartbeat", every(settings.heartbeat_seconds, beat))
        if settings.journey_analytics and settings.journey_sweep_seconds > 0:
            followers.start("journey-sweep", every(settings.journey_sweep_seconds, sweep))

    async def sweep() -> None:
        """Count the stage changes that came due by time (``JourneyTracker.sweep``), a batch at a time
        until none is left, by the live model's journey rules."""
        model = holder.current
        if model is None:
            return
        while await tracker.sweep(model.rules) >= SWEEP_BATCH:
            await asyncio.sleep(0)  # let requests in between batches

    async def close_store() -> None:
        await feedback.close()  # counts the served lists still queued first
        if owns_catalog:
            await the_catalog.close()
        if owns_store:
            await the_store.close()
        for limiter_store in stores.values():
            if isinstance(limiter_store, SharedRateLimitStore):
                await limiter_store.close()

    def provide_services() -> Services:
        return services

    # taking ``svc`` resolves it after ``svc``, not in a task group of its own (see ``provide_filters``)
    def provide_journey(svc: NamedDependency[Services]) -> JourneyTracker:  # noqa: ARG001
        return tracker

    prometheus = PrometheusConfig(
        app_name="journeyrec",
        prefix="journeyrec_http",
        group_path=True,  # label by route template: no visitor ids in metric labels
        exclude=["/metrics", "/health"],
    )
    middleware: list[Middleware] = [prometheus.middleware, *admission_middleware(settings)]
    stores = rate_limit_stores(settings)
    if settings.rate_limit_per_minute > 0:
        limiter = RateLimitConfig(
            rate_limit=("minute", settings.rate_limit_per_minute),
            exclude=["/health", "/metrics", "/schema"],
            store=RATE_LIMIT_STORE,
        )
        middleware.append(limiter.middleware)

    # only /v1 needs a key (health, metrics and the schema do not): document it there
    needs_key: list[dict[str, list[str]]] = [{"ApiKey": []}]
    api = Router(
        path="/v1",
        route_handlers=[
            VisitorsController,
            ItemsController,
            CatalogController,
            ModelsController,
            RulesController,
            ExperimentsController,
            IdentitiesController,
            AnalyticsController,
            FeedbackController,
        ],
        security=needs_key,
    )
    bulk = Router(
        path="/v1",
        route_handlers=[EventsController, ExportController, CatalogBatchController],
        request_max_body_size=settings.max_body_bytes,
        security=needs_key,
    )
    openapi = OpenAPIConfig(
        title="journeyrec",
        version=API_VERSION,
        description="Journey-stage-aware recommendations from live visitor state.",
        path="/schema",
        render_plugins=reference_page(),  # served from the package: works with no internet
        components=Components(
            security_schemes={
                "ApiKey": SecurityScheme(type="apiKey", name=API_KEY_HEADER, security_scheme_in="header")
            },
        ),
    )
    config = AppConfig(
        route_handlers=[
            api,
            bulk,
            HealthController,
            MetricsController,
            reference_assets(),
            console_router(),
        ],
        dependencies={
            "svc": Provide(provide_services, sync_to_thread=False),
            "journey": Provide(provide_journey, sync_to_thread=False),
        },
        guards=[Authenticator(settings.api_keys, enabled=settings.auth_enabled)],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        middleware=middleware,
        request_class=GuardedRequest,
        request_max_body_size=SMALL_BODY_BYTES,
        openapi_config=openapi,
        state=State({"settings": settings}),
        on_startup=[load_model_on_startup, start_followers],
        on_shutdown=[followers.stop, heartbeat.leave, close_store],
        stores=stores,
        logging_config=LoggingConfig(
            root={"level": settings.log_level.upper(), "handlers": ["queue_listener"]},
            log_exceptions="debug",
        ),
    )
    app = Litestar.from_config(config)
    keep_event_components(app)
    document_scopes(app)
    return app


def app_from_environment() -> Litestar:
    """Factory for Granian/Uvicorn workers: the settings the ``serve`` command validated."""
    tune_worker()
    return create_app(settings_for_worker())
