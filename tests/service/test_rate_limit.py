"""The rate limiter's shared counters (``service.rate_limit``) on one Redis and on a Redis Cluster: every
client's counter is read and written on the master of its slot, an error reply refuses the request (503),
and only an outage lets requests through.

The Redis params need the test Redis and the test Redis Cluster (``tests.service.redis_fixtures``); each
test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from redis.crc import key_slot

from models.recommender import Recommender
from service.rate_limit import RATE_LIMIT_STORE, SharedRateLimitStore, rate_limit_stores
from service.store.base import StoreDownError
from tests.service.api_fixtures import H_READ, LogRecords, api_settings, delete_prefix, make_app
from tests.service.redis_fixtures import REDIS_KINDS, url_of


@pytest.fixture(params=REDIS_KINDS)
def redis_at(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """(URL, key prefix) of the test Redis or the test cluster; the prefix's keys deleted afterwards."""
    url = url_of(request, request.param)
    prefix = f"jrtest-{uuid.uuid4().hex[:10]}"
    yield url, prefix
    delete_prefix(url, prefix)


def limiter(url: str, prefix: str) -> SharedRateLimitStore:
    settings = api_settings(redis_url=url, redis_prefix=prefix, rate_limit_per_minute=5)
    store = rate_limit_stores(settings)[RATE_LIMIT_STORE]
    assert isinstance(store, SharedRateLimitStore)
    return store


async def test_every_clients_counter_is_kept_whichever_slot_it_is_in(redis_at: tuple[str, str]) -> None:
    store = limiter(*redis_at)
    clients = [f"RateLimitMiddleware::10.0.{i // 256}.{i % 256}" for i in range(300)]
    # the counters' slots cover all three thirds of the slot space (a master each on the test cluster)
    assert {key_slot(store._make_key(c).encode()) * 3 // 16384 for c in clients} == {0, 1, 2}
    try:
        for i, c in enumerate(clients):
            await store.set(c, f"history-{i}", expires_in=60)
        assert [await store.get(c) for c in clients] == [f"history-{i}".encode() for i in range(300)]
        assert await store.get(clients[7], renew_for=120) == b"history-7"  # the get-and-renew script
        assert 60 < await store.expires_in(clients[7]) <= 120  # type: ignore[operator]
        assert await store.get("never-seen") is None
    finally:
        await store.close()


async def test_an_error_reply_refuses_instead_of_letting_through(redis_at: tuple[str, str]) -> None:
    url, prefix = redis_at
    store = limiter(url, prefix)
    raw: Any = store._redis
    try:
        await raw.hset(store._make_key("client"), "not", "a counter")  # WRONGTYPE for GET
        with pytest.raises(StoreDownError, match="rate limiter is unavailable"):
            await store.get("client")
    finally:
        await store.close()


def test_through_the_app_an_error_is_503_and_counts_go_on(
    redis_at: tuple[str, str], models_dir: Path, recommender: Recommender
) -> None:
    url, prefix = redis_at
    app = make_app(models_dir, recommender, redis_url=url, redis_prefix=prefix, rate_limit_per_minute=3)
    with TestClient(app, raise_server_exceptions=False) as c:
        codes = [c.get("/v1/visitors/rl/journey", headers=H_READ).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        store = app.stores.get(RATE_LIMIT_STORE)
        assert isinstance(store, SharedRateLimitStore)
        raw: Any = store._redis
        keys = c.blocking_portal.call(_keys, raw, f"{prefix}:ratelimit*")
        assert len(keys) == 1  # one client, one counter
        c.blocking_portal.call(_wrong_type, raw, keys[0])
        r = c.get("/v1/visitors/rl/journey", headers=H_READ)
        assert r.status_code == 503, r.text
        assert int(r.headers["Retry-After"]) >= 1


async def _keys(raw: Any, pattern: str) -> list[bytes]:
    return [k async for k in raw.scan_iter(match=pattern, count=1000)]


async def _wrong_type(raw: Any, key: bytes) -> None:
    await raw.delete(key)
    await raw.hset(key, "not", "a counter")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:1/0", "redis+cluster://127.0.0.1:1,127.0.0.1:2"])
async def test_an_unreachable_redis_lets_requests_through_with_one_warning(url: str) -> None:
    store = limiter(url, "jrtest-dead")
    handler = LogRecords()
    log = logging.getLogger("journeyrec.service")
    log.addHandler(handler)
    try:
        assert [await store.get("client") for _ in range(3)] == [None] * 3
        await store.set("client", "history", expires_in=60)  # dropped
    finally:
        log.removeHandler(handler)
        await store.close()
    warnings = [r.getMessage() for r in handler.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "requests let through uncounted" in warnings[0]
