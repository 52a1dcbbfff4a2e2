"""The ingest side of feedback: impressions kept out of the journey history, events fed to attribution."""

from __future__ import annotations

from models.attribution import ATTRIBUTABLE
from models.domain import Event, EventType
from models.errors import StoreUnavailableError
from service.feedback import metrics
from service.feedback.serve import Feedback
from service.feedback.store_base import FeedbackResult


def history_of(events: list[Event]) -> list[Event]:
    """The events that are journey history: all but impressions, which are feedback only."""
    if not any(e.event is EventType.IMPRESSION for e in events):
        return events
    return [e for e in events if e.event is not EventType.IMPRESSION]


async def feed(feedback: Feedback, events: list[Event]) -> FeedbackResult:
    """Attribute and count the events (after they were stored); StoreUnavailableError when the feedback
    state could not be written (a retry with the same event ids counts nothing twice)."""
    if not any(e.event in ATTRIBUTABLE for e in events):
        return FeedbackResult()
    try:
        result = await feedback.store.record_events(events)
    except StoreUnavailableError:
        metrics.WRITE_FAILURES.labels("events").inc()
        raise
    for (kind, method), n in result.outcomes.items():
        metrics.ATTRIBUTED.labels(kind, method).inc(n)
    metrics.IMPRESSIONS.labels("counted").inc(result.impressions)
    metrics.IMPRESSIONS.labels("duplicate").inc(result.duplicates)
    return result
