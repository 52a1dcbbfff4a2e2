"""Helpers of the API tests: API keys, settings, a memory store, the app over a model, a store that can go
down. The storefront and its model are in ``tests/storefront.py``; the fixtures in ``conftest.py``."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis
from litestar import Litestar
from redis.cluster import ClusterNode, RedisCluster

from models.domain import Event
from models.errors import StoreUnavailableError
from models.recommender import Recommender
from service.app import create_app
from service.auth import parse_api_keys
from service.model_holder import ModelHolder
from service.settings import Settings, load_settings
from service.store.base import AppendResult, StreamEntry, VisitorState
from service.store.memory_store import MemoryStore
from service.store.redis_url import is_cluster_url, parse_cluster_url

INGEST_KEY = "ingest-read-key-0123456789"
READ_KEY = "read-only-key-0123456789"
ADMIN_KEY = "admin-key-0123456789abcdef"
CATALOG_KEY = "catalog-key-0123456789abcdef"
KEYS_SPEC = f"{INGEST_KEY}:ingest+read;{READ_KEY}:read;{ADMIN_KEY}:admin;{CATALOG_KEY}:catalog"
H_INGEST = {"X-API-Key": INGEST_KEY}
H_READ = {"X-API-Key": READ_KEY}
H_ADMIN = {"X-API-Key": ADMIN_KEY}
H_CATALOG = {"X-API-Key": CATALOG_KEY}


def api_settings(**overrides: Any) -> Settings:
    flags: dict[str, Any] = {"api_keys": parse_api_keys(KEYS_SPEC)}
    flags.update(overrides)
    return load_settings(flags, environ={})


def memory_store(**overrides: Any) -> MemoryStore:
    s = api_settings()
    kw: dict[str, Any] = {
        "visitor_ttl": s.visitor_ttl,
        "recent_events": s.recent_events,
        "stream_maxlen": s.stream_maxlen,
    }
    kw.update(overrides)
    return MemoryStore(**kw)


def make_app(
    models_dir: Path,
    recommender: Recommender | None,
    store: Any = None,
    rules: Any = None,
    catalog: Any = None,
    **settings: Any,
) -> Litestar:
    holder = ModelHolder.with_model(recommender, models_dir) if recommender else ModelHolder(models_dir)
    return create_app(
        api_settings(models_dir=str(models_dir), **settings),
        store=store if store is not None else memory_store(),
        model_holder=holder,
        rules=rules,
        catalog=catalog,
    )


def event(visitor: str, item: str, kind: str, t: float | str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"visitor_id": visitor, "item_id": item, "event": kind, **extra}
    if t is not None:
        body["timestamp"] = t
    return body


class SwitchableStore:
    """Delegates to a real store; ``down = True`` makes every call fail as an unreachable Redis does."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.down = False

    def _check(self) -> None:
        if self.down:
            raise StoreUnavailableError("redis: connection refused")

    async def ping(self) -> bool:
        return not self.down and bool(await self.inner.ping())

    async def append(self, events: list[Event]) -> AppendResult:
        self._check()
        result: AppendResult = await self.inner.append(events)
        return result

    async def visitor(self, visitor_id: str, campaign: str | None = None) -> VisitorState:
        self._check()
        state: VisitorState = await self.inner.visitor(visitor_id, campaign)
        return state

    async def mark_sent(self, visitor_id: str, campaign: str, item_ids: list[str]) -> None:
        self._check()
        await self.inner.mark_sent(visitor_id, campaign, item_ids)

    async def erase(self, visitor_id: str) -> int:
        self._check()
        n: int = await self.inner.erase(visitor_id)
        return n

    async def read_stream(self, after: str, count: int) -> list[StreamEntry]:
        self._check()
        entries: list[StreamEntry] = await self.inner.read_stream(after, count)
        return entries

    async def recent_visitors(self, limit: int, scan: int) -> list[str]:
        self._check()
        visitors: list[str] = await self.inner.recent_visitors(limit, scan)
        return visitors

    async def close(self) -> None:
        await self.inner.close()


class LogRecords(logging.Handler):
    """Keeps the records of the service's logger (the app's logging config routes the root logger through a
    queue, out of reach of pytest's caplog)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def sync_client(redis_url: str, timeout: float = 2) -> Any:
    """A blocking client of the Redis at ``redis_url``: one server's, or a Redis Cluster's (which scans and
    deletes on every master) for a ``redis+cluster://`` URL."""
    if not is_cluster_url(redis_url):
        return redis.Redis.from_url(redis_url, socket_timeout=timeout)
    nodes = [ClusterNode(host, port) for host, port in parse_cluster_url(redis_url).nodes]
    return RedisCluster(startup_nodes=nodes, socket_timeout=timeout, socket_connect_timeout=timeout)


def delete_prefix(redis_url: str, prefix: str) -> None:
    """Delete every key under ``prefix:`` (a test's own keys) from the Redis at ``redis_url``."""
    client = sync_client(redis_url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()


def unique_prefix(redis_url: str) -> Iterator[str]:
    """A fresh key prefix for a module's tests, its keys deleted afterwards (wrap in a fixture)."""
    p = f"jrtest-{uuid.uuid4().hex[:10]}"
    yield p
    delete_prefix(redis_url, p)
