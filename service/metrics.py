"""Service-specific Prometheus metrics, next to the HTTP metrics of Litestar's Prometheus plugin.

Created once per process on the default registry. With several workers the ``serve`` command sets up
prometheus_client's multiprocess mode, and ``/metrics`` adds up the counters of every worker.
"""

from __future__ import annotations

import logging
import time

from prometheus_client import Counter, Gauge

from service.store.base import StoreFailure

log = logging.getLogger("journeyrec.service")

EVENTS = Counter("journeyrec_events_total", "Events received by POST /v1/events", ["outcome"])
RECOMMENDATIONS = Counter(
    "journeyrec_recommendations_total", "Recommendation answers by kind", ["endpoint", "fallback"]
)
STORE_ERRORS = Counter(
    "journeyrec_store_unavailable_total",
    "Store calls that found Redis unreachable (visitor store and rate limiter), counted where they failed",
)
STORE_READ_RETRIES = Counter(
    "journeyrec_store_read_retries_total",
    "Visitor reads asked once more after a Redis timeout (a second timeout is a fallback)",
)
FALLBACKS = Counter(
    "journeyrec_fallbacks_total",
    "Non-personalised recommendation answers (fallback=true), by why the store did not answer",
    ["cause"],
)
SHED = Counter(
    "journeyrec_requests_shed_total",
    "Requests answered 503 because their worker was at JOURNEYREC_MAX_CONCURRENCY: the wait queue was "
    "full, or the request waited JOURNEYREC_QUEUE_TIMEOUT_SECONDS",
    ["reason"],
)
for _cause in StoreFailure:
    FALLBACKS.labels(_cause.value)  # every series exists from the start, at 0
for _reason in ("queue_full", "queue_timeout"):
    SHED.labels(_reason)
MODEL_RELOADS = Counter("journeyrec_model_reloads_total", "Model reload attempts", ["outcome"])
BACKGROUND_RESTARTS = Counter(
    "journeyrec_background_restarts_total", "Background tasks restarted after they failed", ["task"]
)
STAGE_TRANSITIONS = Counter(
    "journeyrec_stage_transitions_total",
    "Journey-stage transitions counted at ingest (by time or by event), by stage left and stage entered",
    ["from", "to"],
)
UNKNOWN_ITEM_EVENTS = Counter(
    "journeyrec_unknown_item_events_total",
    "Events accepted by POST /v1/events for items neither the live model nor the live catalog knows",
)
CATALOG_WRITES = Counter(
    "journeyrec_catalog_writes_total",
    "Items written to the live catalog (/v1/items), by outcome (stored, ignored_older, refused)",
    ["outcome"],
)
for _outcome in ("stored", "ignored_older", "refused"):
    CATALOG_WRITES.labels(_outcome)
CATALOG_VERSION = Gauge(
    "journeyrec_catalog_version",
    "Version of the live catalog this worker serves; one series per worker process with several workers",
    multiprocess_mode="liveall",
)
MODEL_LOADED = Gauge(
    "journeyrec_model_loaded_timestamp_seconds",
    "When the live model was loaded (POSIX s); one series per worker process with several workers",
    multiprocess_mode="liveall",
)

RULES_VERSION = Gauge(
    "journeyrec_rules_version",
    "The merchandising rule set version the live model serves (0: none); one series per worker process "
    "with several workers",
    multiprocess_mode="liveall",
)


def count_reload(changed: bool | None, loaded_at: float | None) -> None:
    """One reload attempt (by request or by following ``latest``): refused (``changed`` None), changed or
    unchanged; a successful one also records when the live model was loaded."""
    MODEL_RELOADS.labels("refused" if changed is None else "changed" if changed else "unchanged").inc()
    if changed is not None and loaded_at is not None:
        MODEL_LOADED.set(loaded_at)


#: at most one fallback log line per cause in this many seconds (a store outage would otherwise log every
#: request); the next line says how many fallbacks it stands for
FALLBACK_LOG_INTERVAL_S = 10.0
_fallback_log_due: dict[StoreFailure, float] = {}
_fallbacks_unlogged: dict[StoreFailure, int] = {}


def count_fallback(cause: StoreFailure, detail: str) -> None:
    """One non-personalised answer: counted by cause, and logged (rate-limited per cause)."""
    FALLBACKS.labels(cause.value).inc()
    unlogged = _fallbacks_unlogged.get(cause, 0) + 1
    now = time.monotonic()
    if now < _fallback_log_due.get(cause, 0.0):
        _fallbacks_unlogged[cause] = unlogged
        return
    _fallback_log_due[cause] = now + FALLBACK_LOG_INTERVAL_S
    _fallbacks_unlogged[cause] = 0
    log.warning(
        "recommendations fell back to non-personalised answers (store %s: %s): %d since the last such line",
        cause.value,
        detail,
        unlogged,
    )
