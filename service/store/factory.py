"""Stores built from the service settings: one place that knows which constructor arguments they take."""

from __future__ import annotations

from service.settings import Settings
from service.store.base import VisitorStore
from service.store.memory_store import MemoryStore
from service.store.redis_store import RedisStore


def redis_store(settings: Settings) -> RedisStore:
    """The Redis store of ``settings.redis_url`` (which must be set)."""
    if not settings.redis_url:
        raise ValueError("redis_store needs settings.redis_url")
    return RedisStore.from_url(
        settings.redis_url,
        prefix=settings.redis_prefix,
        visitor_ttl=settings.visitor_ttl,
        recent_events=settings.recent_events,
        stream_maxlen=settings.stream_maxlen,
        socket_timeout=settings.redis_socket_timeout,
    )


def build_store(settings: Settings) -> VisitorStore:
    """Redis when a URL is configured, else the embedded in-process store (one process only)."""
    if settings.redis_url:
        return redis_store(settings)
    return MemoryStore(
        visitor_ttl=settings.visitor_ttl,
        recent_events=settings.recent_events,
        stream_maxlen=settings.stream_maxlen,
    )
