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
STORE_ERRORS = Counter(
    "journeyrec_store_unavailable_total",
    "Store calls that found Redis unreachable (visitor store and rate limiter), counted where they failed",
)
MODEL_RELOADS = Counter("journeyrec_model_reloads_total", "Model reload attempts", ["outcome"])
BACKGROUND_RESTARTS = Counter(
    "journeyrec_background_restarts_total", "Background tasks restarted after they failed", ["task"]
)
MODEL_LOADED = Gauge(
    "journeyrec_model_loaded_timestamp_seconds",
    "When the live model was loaded (POSIX s); one series per worker process with several workers",
    multiprocess_mode="liveall",
)


def count_reload(changed: bool | None, loaded_at: float | None) -> None:
    """One reload attempt (by request or by following ``latest``): refused (``changed`` None), changed or
    unchanged; a successful one also records when the live model was loaded."""
    MODEL_RELOADS.labels("refused" if changed is None else "changed" if changed else "unchanged").inc()
    if changed is not None and loaded_at is not None:
        MODEL_LOADED.set(loaded_at)
