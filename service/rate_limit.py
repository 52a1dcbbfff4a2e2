"""Where the rate limiter keeps its counters.

With Redis configured the counters live there (under ``<prefix>:ratelimit:<client>``), so every worker
process of every instance counts the same client: Litestar's default in-memory store would give each of N
workers its own count, and a client N times the limit. The client is the visitor store's kind: one
server's, or a Redis Cluster's for a ``redis+cluster://`` URL (``redis_store.client_from_url``), which
sends each counter's command to the master holding its slot. Every operation of the limiter is one
command or one script on one key (Litestar's ``RedisStore``: ``GET``/``SET`` and a get-and-renew script
on ``KEYS[1]``), so it stays inside one hash slot.

Failures: when Redis cannot be reached (connection refused or lost, a timeout, a cluster that has lost a
master), the limiter lets requests through, with a warning when that starts and the failure counted
(``journeyrec_store_unavailable_total``): an outage must degrade recommendations and refuse writes as
documented, not turn every request into an error. Any other failure (an error reply: a misconfigured
server, a command refused) is not a reason to let a request through uncounted: it is a ``StoreDownError``
(503 with Retry-After).
"""

from __future__ import annotations

import logging
from datetime import timedelta

from litestar.stores.base import Store
from litestar.stores.redis import RedisStore
from redis.exceptions import ClusterDownError, RedisClusterException, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import metrics
from service.settings import Settings
from service.store.base import StoreDownError, StoreFailure
from service.store.redis_store import AnyRedis, client_from_url

log = logging.getLogger("journeyrec.service")

#: the name Litestar's RateLimitConfig looks the store up by
RATE_LIMIT_STORE = "rate_limit"

#: failures that mean Redis (or the master of a counter's slot) cannot be reached: the request goes through
OUTAGES = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError, ClusterDownError)


class SharedRateLimitStore(RedisStore):
    """Litestar's Redis store, failing open on an outage only (module docstring): a read that cannot reach
    Redis finds no history, a write that cannot reach it is dropped."""

    def __init__(self, redis: AnyRedis, namespace: str) -> None:
        super().__init__(redis, namespace=namespace)  # type: ignore[arg-type]  # either client serves
        self._failing = False

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        try:
            value = await super().get(key, renew_for)
        except (RedisError, RedisClusterException, OSError) as e:
            self._failed(e)
            return None
        self._answered()
        return value

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        try:
            await super().set(key, value, expires_in)
        except (RedisError, RedisClusterException, OSError) as e:
            self._failed(e)
            return
        self._answered()

    def _failed(self, e: BaseException) -> None:
        """Let the request through on an outage (counted; a warning when one starts); raise otherwise."""
        metrics.STORE_ERRORS.inc()
        if not _is_outage(e):
            log.warning("rate limiter: redis refused a counter command: %s: %s", type(e).__name__, e)
            raise StoreDownError(
                f"the rate limiter is unavailable ({type(e).__name__}); retry later", StoreFailure.ERROR
            ) from e
        if not self._failing:
            log.warning("rate limiter: redis unavailable, requests let through uncounted: %s", e)
        self._failing = True

    def _answered(self) -> None:
        if self._failing:
            log.warning("rate limiter: redis answers again, requests counted")
        self._failing = False

    async def close(self) -> None:
        await self._redis.aclose()


def _is_outage(e: BaseException) -> bool:
    # a cluster client that reaches no node raises RedisClusterException, not a ConnectionError
    return isinstance(e, OUTAGES) or (type(e) is RedisClusterException and "connect" in str(e))


def rate_limit_stores(settings: Settings) -> dict[str, Store]:
    """The store registry entry for the limiter: shared in Redis, or none (Litestar's in-memory default,
    right for the one process the embedded store allows)."""
    if settings.rate_limit_per_minute <= 0 or not settings.redis_url:
        return {}
    client = client_from_url(settings.redis_url, socket_timeout=settings.redis_socket_timeout)
    store = SharedRateLimitStore(client, namespace=f"{settings.redis_prefix}:ratelimit")
    return {RATE_LIMIT_STORE: store}
