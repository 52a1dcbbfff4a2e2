"""The workers' heartbeats in Redis, shared by every worker of every instance. Semantics in
``service.store.fleet_base``.

Keys (``P`` the configured prefix; the hash tag ``{fleet}`` puts them in one cluster slot, so a beat is
one MULTI and the read one MGET):

- ``P:{fleet}:w:<worker>``  string: the worker's last beat (msgspec JSON), expiring ``ttl`` after it
- ``P:{fleet}:workers``     sorted set: worker ids scored by their last beat, so a read finds the beats
  without scanning the key space; older members are dropped by every beat; it expires ``ttl`` after the
  last beat of any worker

A worker that stops without leaving is gone from the read once its last beat is ``ttl`` old (by the
reader's clock; the members' scores are the writers' clocks, which a deployment keeps in step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import msgspec

from service.store.fleet_base import WorkerBeat, check_ttl
from service.store.redis_store import AnyRedis, unavailable

STORE = "fleet store"


class RedisFleet:
    """FleetStore on Redis (keys above); shares the visitor store's client and connection pool."""

    def __init__(
        self, client: AnyRedis, *, prefix: str, ttl: float, clock: Callable[[], float] = time.time
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"redis key prefix {prefix!r} must be non-empty and without braces")
        self.ttl = check_ttl(ttl)
        self._r = client
        self._clock = clock
        self._base = f"{prefix}:{{fleet}}"
        self.index_key = f"{self._base}:workers"
        self._decode = msgspec.json.Decoder(WorkerBeat).decode

    def worker_key(self, worker: str) -> str:
        return f"{self._base}:w:{worker}"

    async def beat(self, beat: WorkerBeat) -> None:
        ttl_ms = max(1, math.ceil(self.ttl * 1000))
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(self.worker_key(beat.worker), msgspec.json.encode(beat), px=ttl_ms)
            pipe.zadd(self.index_key, {beat.worker: beat.last_seen})
            pipe.zremrangebyscore(self.index_key, "-inf", self._clock() - self.ttl)
            pipe.pexpire(self.index_key, ttl_ms)
            with unavailable("heartbeat", STORE):
                await pipe.execute()

    async def leave(self, worker: str) -> None:
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.delete(self.worker_key(worker))
            pipe.zrem(self.index_key, worker)
            with unavailable("leave", STORE):
                await pipe.execute()

    async def workers(self) -> list[WorkerBeat]:
        oldest = self._clock() - self.ttl
        with unavailable("read workers", STORE):
            members: Any = await self._r.zrangebyscore(self.index_key, f"({oldest}", "+inf")
            ids = sorted(m.decode() for m in members or ())
            if not ids:
                return []
            raw: Any = await self._r.mget([self.worker_key(w) for w in ids])
        beats = [self._decode(r) for r in raw if r is not None]
        return [b for b in beats if b.last_seen > oldest]
