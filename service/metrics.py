"""Service-specific Prometheus metrics, next to the HTTP metrics of Litestar's Prometheus plugin.

Created once per process on the default registry. With several workers the ``serve`` command sets up
prometheus_client's multiprocess mode, and ``/metrics`` adds up the counters of every worker.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter("journeyrec_events_total", "Events received by POST /v1/events", ["outcome"])
RECOMMENDATIONS = Counter(
    "journeyrec_recommendations_total", "Recommendation answers by kind", ["endpoint", "fallback"]
)
STORE_ERRORS = Counter("journeyrec_store_unavailable_total", "Requests that found the store unreachable")
MODEL_RELOADS = Counter("journeyrec_model_reloads_total", "Model reload attempts", ["outcome"])
MODEL_LOADED = Gauge(
    "journeyrec_model_loaded_timestamp_seconds",
    "When the live model was loaded (POSIX s); one series per worker process with several workers",
    multiprocess_mode="liveall",
)
