"""Where the rate limiter keeps its counters.

With Redis configured the counters live there (under ``<prefix>:ratelimit``), so every worker process counts
the same client: Litestar's default in-memory store would give each of N workers its own count, and a
client N times the limit. When Redis does not answer, the limiter lets requests through: an outage must
degrade recommendations and refuse writes as documented, not turn every request into a 500.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from litestar.stores.base import Store
from litestar.stores.redis import RedisStore
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from service import metrics
from service.settings import Settings

log = logging.getLogger("journeyrec.service")

#: the name Litestar's RateLimitConfig looks the store up by
RATE_LIMIT_STORE = "rate_limit"


class SharedRateLimitStore(RedisStore):
    """Litestar's Redis store, failing open: a read that fails finds no history, a write that fails is
    dropped (and counted as a store error)."""

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        try:
            return await super().get(key, renew_for)
        except RedisError as e:
            _unavailable(e)
            return None

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        try:
            await super().set(key, value, expires_in)
        except RedisError as e:
            _unavailable(e)

    async def close(self) -> None:
        await self._redis.aclose()


def _unavailable(e: RedisError) -> None:
    metrics.STORE_ERRORS.inc()
    log.debug("rate limiter: redis unavailable, request let through: %s", e)


def rate_limit_stores(settings: Settings) -> dict[str, Store]:
    """The store registry entry for the limiter: shared in Redis, or none (Litestar's in-memory default,
    right for the one process the embedded store allows)."""
    if settings.rate_limit_per_minute <= 0 or not settings.redis_url:
        return {}
    timeout = settings.redis_socket_timeout
    client = Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )
    store = SharedRateLimitStore(client, namespace=f"{settings.redis_prefix}:ratelimit")
    return {RATE_LIMIT_STORE: store}
