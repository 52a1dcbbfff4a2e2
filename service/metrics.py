"""Service-specific Prometheus metrics, next to the HTTP metrics of Litestar's Prometheus plugin.

Created once per process on the default registry (which ``/metrics`` exposes). With several workers each
process keeps its own counters; a scrape sees the worker that answered it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

EVENTS = Counter("journeyrec_events_total", "Events received by POST /v1/events", ["outcome"])
RECOMMENDATIONS = Counter(
    "journeyrec_recommendations_total", "Recommendation answers by kind", ["endpoint", "fallback"]
)
STORE_ERRORS = Counter("journeyrec_store_unavailable_total", "Requests that found the store unreachable")
MODEL_RELOADS = Counter("journeyrec_model_reloads_total", "Model reload attempts", ["outcome"])
MODEL_LOADED = Gauge("journeyrec_model_loaded_timestamp_seconds", "When the live model was loaded (POSIX s)")
