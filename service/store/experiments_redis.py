"""The Redis experiments store, shared by every worker of every instance. Semantics in
``service.store.experiments_base``.

Keys (``P`` the configured prefix; the hash tag ``{exp}`` puts both in one cluster slot, so the one script
that writes them is cluster-safe):

- ``P:{exp}:docs``     hash: experiment id -> the experiment's msgspec JSON
- ``P:{exp}:version``  integer, incremented by every change

A change is one Lua script: it compares the stored document with the one the change was computed from,
writes (or deletes) it and increments the version, atomically. Neither key expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from models.experiments import Experiment
from service.store.experiments_base import ExperimentWriter, decode_all
from service.store.redis_store import AnyRedis, unavailable

STORE = "experiments store"

# KEYS: docs, version. ARGV: id, the stored JSON the change was computed from ("" for none), the new
# JSON ("" to delete). Returns 1 when it wrote, 0 when the stored document had moved.
_CAS = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if (cur or '') ~= ARGV[2] then return 0 end
if ARGV[3] == '' then redis.call('HDEL', KEYS[1], ARGV[1])
else redis.call('HSET', KEYS[1], ARGV[1], ARGV[3]) end
redis.call('INCR', KEYS[2])
return 1
"""


class RedisExperimentStore(ExperimentWriter):
    """ExperimentStore on Redis (keys above); shares the visitor store's client and connection pool."""

    def __init__(self, client: AnyRedis, *, prefix: str, clock: Callable[[], float] = time.time) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"redis key prefix {prefix!r} must be non-empty and without braces")
        super().__init__(clock=clock)
        self._r = client
        self.docs_key = f"{prefix}:{{exp}}:docs"
        self.version_key = f"{prefix}:{{exp}}:version"
        self._cas_script = client.register_script(_CAS)

    async def version(self) -> int:
        with unavailable("read the experiments version", STORE):
            raw: Any = await self._r.get(self.version_key)
        return int(raw) if raw is not None else 0

    async def list(self) -> list[Experiment]:
        with unavailable("read the experiments", STORE):
            raws: Any = await self._r.hvals(self.docs_key)
        return decode_all(list(raws))

    async def _raw(self, experiment_id: str) -> bytes | None:
        with unavailable("read an experiment", STORE):
            raw: Any = await self._r.hget(self.docs_key, experiment_id)
        return None if raw is None else bytes(raw)

    async def _cas(self, experiment_id: str, old: bytes | None, new: bytes | None) -> bool:
        args: list[str | bytes] = [experiment_id, old or b"", new or b""]
        with unavailable("write an experiment", STORE):
            done = await self._cas_script(keys=[self.docs_key, self.version_key], args=args)
        return bool(int(done))

    async def close(self) -> None:
        return None  # the client belongs to the visitor store, which closes it
