"""Stores built from the service settings: one place that knows which constructor arguments they take."""

from __future__ import annotations

from service.settings import Settings
from service.store.base import VisitorStore
from service.store.catalog_base import CatalogStore
from service.store.experiments_base import ExperimentStore
from service.store.experiments_memory import MemoryExperimentStore
from service.store.experiments_redis import RedisExperimentStore
from service.store.fleet_base import FleetStore, MemoryFleet
from service.store.fleet_redis import RedisFleet
from service.store.memory_catalog import MemoryCatalog
from service.store.memory_store import MemoryStore
from service.store.redis_catalog import RedisCatalog
from service.store.redis_store import RedisStore
from service.store.rules_base import RulesStore
from service.store.rules_memory import MemoryRulesStore
from service.store.rules_redis import RedisRulesStore

#: connections of a worker's Redis pool beyond ``max_concurrency``: for the requests the admission limit
#: does not count (``/health/ready`` pings the store; the rules and live catalog followers read their
#: versions; the heartbeat writes the worker's beat)
UNCOUNTED_CONNECTIONS = 6


def pool_size(settings: Settings) -> int:
    """Redis connections per worker process: one for every request admitted at once (a request holds at
    most one at a time), plus ``UNCOUNTED_CONNECTIONS``. An admitted request then never waits for one."""
    return settings.max_concurrency + UNCOUNTED_CONNECTIONS


def redis_store(settings: Settings, *, socket_timeout: float | None = None) -> RedisStore:
    """The Redis store of ``settings.redis_url`` (which must be set): one server, or a Redis Cluster for a
    ``redis+cluster://`` URL (``pool_size`` commands in flight per worker, as many connections per master
    at most). ``socket_timeout``: instead of ``settings.redis_socket_timeout`` (the request path's), for
    an offline command whose replies are large (``service.export``)."""
    if not settings.redis_url:
        raise ValueError("redis_store needs settings.redis_url")
    return RedisStore.from_url(
        settings.redis_url,
        prefix=settings.redis_prefix,
        visitor_ttl=settings.visitor_ttl,
        recent_events=settings.recent_events,
        stream_maxlen=settings.stream_maxlen,
        socket_timeout=settings.redis_socket_timeout if socket_timeout is None else socket_timeout,
        max_connections=pool_size(settings),
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


def build_rules_store(store: VisitorStore) -> RulesStore:
    """The rules store beside ``store``: in the same Redis (sharing its connection pool) or, beside the
    embedded store, in this process's memory."""
    if isinstance(store, RedisStore):
        return RedisRulesStore(store.client, prefix=store.prefix)
    return MemoryRulesStore()


def build_catalog(store: VisitorStore) -> CatalogStore:
    """The live catalog beside ``store``: in the same Redis (on its connection pool) when ``store`` is the
    Redis store, else the embedded one (one process only)."""
    if isinstance(store, RedisStore):
        return RedisCatalog(store.client, prefix=store.prefix)
    return MemoryCatalog()


def build_experiments_store(store: VisitorStore) -> ExperimentStore:
    """The experiments store beside ``store``: in the same Redis (on its connection pool), else in this
    process's memory."""
    if isinstance(store, RedisStore):
        return RedisExperimentStore(store.client, prefix=store.prefix)
    return MemoryExperimentStore()


#: a worker not heard from for this many heartbeat intervals is no longer listed
HEARTBEATS_KEPT = 3


def build_fleet(store: VisitorStore, settings: Settings) -> FleetStore:
    """The workers' heartbeats beside ``store``: in the same Redis (on its connection pool), else in this
    process's memory (its own workers only); a beat is kept ``HEARTBEATS_KEPT`` heartbeat intervals."""
    ttl = HEARTBEATS_KEPT * settings.heartbeat_seconds
    if isinstance(store, RedisStore):
        return RedisFleet(store.client, prefix=store.prefix, ttl=ttl)
    return MemoryFleet(ttl)
