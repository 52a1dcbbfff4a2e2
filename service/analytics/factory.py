"""The journey analytics store and tracker built from the settings, beside the visitor store."""

from __future__ import annotations

from service.analytics.memory_store import MemoryAnalyticsStore
from service.analytics.redis_store import RedisAnalyticsStore
from service.analytics.store_base import AnalyticsStore, Retention
from service.analytics.tracker import JourneyTracker
from service.settings import Settings
from service.store.base import VisitorStore
from service.store.redis_store import RedisStore


def retention_of(settings: Settings) -> Retention:
    return Retention(
        hourly_days=settings.analytics_hourly_days,
        daily_days=settings.analytics_daily_days,
        sets_days=settings.analytics_visitor_sets_days,
    )


def build_analytics(store: VisitorStore, settings: Settings) -> AnalyticsStore:
    """In the same Redis as ``store`` (on its connection pool), else in this process's memory."""
    if isinstance(store, RedisStore):
        return RedisAnalyticsStore(store, retention_of(settings))
    return MemoryAnalyticsStore(store, retention_of(settings), visitor_ttl=settings.visitor_ttl)


def build_tracker(
    store: VisitorStore, settings: Settings, analytics: AnalyticsStore | None = None
) -> JourneyTracker:
    return JourneyTracker(
        analytics if analytics is not None else build_analytics(store, settings),
        enabled=settings.journey_analytics,
    )
