"""Prometheus counters of the feedback loop (see ``service.metrics`` for the multiprocess set-up)."""

from __future__ import annotations

from prometheus_client import Counter

from models.attribution import ATTRIBUTABLE, Method

ATTRIBUTED = Counter(
    "journeyrec_attributed_events_total",
    "Impressions, product views, add-to-carts and purchases fed to attribution (duplicates left out), by "
    "event kind and method (direct, last_touch, unattributed)",
    ["event", "method"],
)
IMPRESSIONS = Counter(
    "journeyrec_impressions_total", "Impression events received by POST /v1/events, by outcome", ["outcome"]
)
SERVED_LISTS = Counter("journeyrec_served_lists_total", "List answers logged for attribution")
WRITE_FAILURES = Counter(
    "journeyrec_feedback_write_failures_total",
    "Feedback writes that failed or were dropped (served: keeping a list; count: counting a served list; "
    "dropped: the counting queue was full; events: feeding events)",
    ["what"],
)
for _kind in ATTRIBUTABLE:
    for _method in Method:
        ATTRIBUTED.labels(_kind.value, _method.value)
for _outcome in ("counted", "duplicate"):
    IMPRESSIONS.labels(_outcome)
for _what in ("served", "count", "dropped", "events"):
    WRITE_FAILURES.labels(_what)
