"""When recommendations fall back: a store that is down does (counted by cause), a busy one never does.

The app runs in process on the test's event loop (httpx.ASGITransport), against real Redis connections:
a healthy Redis whose every pool connection is held by the test (busy), a closed port (down: connection),
and a server that accepts connections but never answers (down: timeout).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from redis.exceptions import TimeoutError as RedisTimeoutError

from models.recommender import Recommender
from service import metrics
from service.store.base import StoreFailure
from service.store.factory import redis_store
from service.store.redis_store import AdmissionPool, RedisStore
from tests.conftest import REDIS_URL
from tests.service.api_fixtures import H_READ, api_settings, make_app
from tests.service.redis_fixtures import delete_prefix, raw_client
from tests.service.test_api_e2e_redis import _free_port

pytestmark = pytest.mark.redis


def _store(url: str, *, connections: int = 2, timeout: float = 0.2) -> tuple[RedisStore, AdmissionPool]:
    pool = AdmissionPool.from_url(url, max_connections=connections, timeout=timeout, socket_timeout=timeout)
    s = api_settings()
    store = RedisStore(
        Redis.from_pool(pool),
        prefix=f"jrtest-{uuid.uuid4().hex[:10]}",
        visitor_ttl=s.visitor_ttl,
        recent_events=s.recent_events,
        stream_maxlen=s.stream_maxlen,
    )
    return store, pool


async def _forget(url: str, store: RedisStore) -> None:
    """Delete what a test wrote under its store's own prefix (the served list of an answer)."""
    raw = raw_client(url)
    try:
        await delete_prefix(raw, store.prefix)
    finally:
        await raw.aclose()


def _fallbacks() -> dict[str, float]:
    return {c.value: metrics.FALLBACKS.labels(c.value)._value.get() for c in StoreFailure}


async def _recommend(models_dir: Path, recommender: Recommender, store: RedisStore) -> httpx.Response:
    app = make_app(models_dir, recommender, store=store)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get("/v1/visitors/v-1/recommendations?k=3", headers=H_READ)


async def test_a_busy_pool_is_503_never_a_fallback(
    models_dir: Path, recommender: Recommender, redis_url: str
) -> None:
    store, pool = _store(redis_url, connections=2)
    # Redis is fine; this worker has no connection left
    held = [await pool.get_connection() for _ in range(2)]
    before = _fallbacks()
    try:
        r = await _recommend(models_dir, recommender, store)
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1
        assert "busy" in r.json()["detail"]
        assert _fallbacks() == before
        for conn in held:
            await pool.release(conn)
        r = await _recommend(models_dir, recommender, store)
        assert r.status_code == 200, r.text
        assert r.json()["fallback"] is False
    finally:
        await store.close()
        await _forget(redis_url, store)


async def test_a_stopped_redis_falls_back_counted_as_connection(
    models_dir: Path, recommender: Recommender
) -> None:
    store, _ = _store(f"redis://127.0.0.1:{_free_port()}/0")  # nothing listens there
    before = _fallbacks()
    try:
        r = await _recommend(models_dir, recommender, store)
    finally:
        await store.close()
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is True
    assert len(r.json()["products"]) == 3
    assert _fallbacks() == {**before, "connection": before["connection"] + 1}


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts connections and never answers."""
    held: list[Any] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)
        await reader.read()  # until the client gives up

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0"
    server.close()
    for writer in held:
        writer.close()


async def test_a_redis_that_does_not_answer_falls_back_counted_as_timeout(
    models_dir: Path, recommender: Recommender, silent_server: str
) -> None:
    store, _ = _store(silent_server, timeout=0.05)
    before = _fallbacks()
    try:
        r = await _recommend(models_dir, recommender, store)
    finally:
        await store.close()
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is True
    assert _fallbacks() == {**before, "timeout": before["timeout"] + 1}


async def test_the_pool_holds_a_connection_for_every_admitted_request() -> None:
    for admitted in (1, 64, 500):
        store = redis_store(api_settings(redis_url=REDIS_URL, max_concurrency=admitted))
        try:
            assert store.max_connections > admitted  # and a few for the health checks
        finally:
            await store.close()


async def test_a_read_that_times_out_once_is_asked_again_not_a_fallback(
    models_dir: Path, recommender: Recommender, redis_url: str
) -> None:
    """A reply held up behind a busy event loop times out like a hung server: the read is asked once more."""
    store, _ = _store(redis_url)
    read = store._read
    calls = 0

    async def late_once(**kw: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RedisTimeoutError("Timeout reading from socket")
        return await read(**kw)

    store._read = late_once  # type: ignore[method-assign]
    before, retries = _fallbacks(), metrics.STORE_READ_RETRIES._value.get()
    try:
        r = await _recommend(models_dir, recommender, store)
    finally:
        await store.close()
        await _forget(redis_url, store)
    assert r.status_code == 200, r.text
    assert r.json()["fallback"] is False
    assert calls == 2
    assert _fallbacks() == before
    assert metrics.STORE_READ_RETRIES._value.get() == retries + 1
