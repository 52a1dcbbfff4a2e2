"""The Redis live catalog store, shared by every worker process of every instance.

Semantics are those of ``service.store.catalog_base`` (the contract tests run this store and the memory
one). Key layout (``P`` is the configured prefix; every key carries the hash tag ``{cat}``, so the script
that writes both keys is valid on a Redis Cluster):

- ``P:{cat}:items``    hash: item id -> the item's ``models.overlay.LiveItem`` as msgspec JSON
- ``P:{cat}:version``  string: the number of updates stored so far

One Lua script applies a write: for each item it reads the stored entry, compares ``updated_at`` and the
``retired`` flag (``catalog_base.outcome_of``), writes the winners and adds their number to the version, all
in one atomic step, so a follower that sees a version also sees every write it counts. Nothing expires:
the catalog lives until items are retired (retired entries are kept so that no later write revives them).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import msgspec
from redis.exceptions import RedisError

from models.overlay import CatalogOverlay, LiveItem
from service.store.catalog_base import PutAnswer, PutResult, WriteOutcome, check_based_on
from service.store.redis_store import AnyRedis, client_from_url, unavailable

log = logging.getLogger("journeyrec.store")

STORE = "catalog store"
#: items per script call: bounds how long one call holds the Redis server (a batch is a few calls)
PUT_CHUNK = 1000
_CODES = (WriteOutcome.STORED, WriteOutcome.IGNORED_OLDER, WriteOutcome.REFUSED, WriteOutcome.MOVED)

# KEYS: items hash, version. ARGV: 4 per item: item id, updated_at, base, LiveItem JSON. base: '*' for an
# unconditional write, '-' when it expects no stored entry, else the stored updated_at it expects (text of
# the same float). Returns {version, code of each item} with codes indexing _CODES (0-based).
_PUT = """
local stored = 0
local out = {0}
for i = 1, #ARGV, 4 do
  local id, t, base, json = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local raw = redis.call('HGET', KEYS[1], id)
  local code = 0
  if raw then
    local old = cjson.decode(raw)
    if old.retired == true then
      code = 2
    elseif base ~= '*' and (base == '-' or tonumber(base) ~= old.updated_at) then
      code = 3
    elseif not (t > old.updated_at) then
      code = 1
    end
  elseif base ~= '*' and base ~= '-' then
    code = 3
  end
  if code == 0 then
    redis.call('HSET', KEYS[1], id, json)
    stored = stored + 1
  end
  out[#out + 1] = code
end
if stored > 0 then
  out[1] = redis.call('INCRBY', KEYS[2], stored)
else
  out[1] = tonumber(redis.call('GET', KEYS[2]) or '0')
end
return out
"""


def _base(based_on: Sequence[float | None] | None, i: int) -> str:
    if based_on is None:
        return "*"
    b = based_on[i]
    return "-" if b is None else repr(float(b))


class RedisCatalog:
    """CatalogStore on Redis (see the module docstring for the key layout)."""

    def __init__(self, client: AnyRedis, *, prefix: str, owns_client: bool = False) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"redis key prefix {prefix!r} must be non-empty and without braces")
        self._r = client
        self._owns_client = owns_client
        self.items_key = f"{prefix}:{{cat}}:items"
        self.version_key = f"{prefix}:{{cat}}:version"
        self._put = client.register_script(_PUT)
        self._encode = msgspec.json.Encoder().encode
        self._decode_list = msgspec.json.Decoder(list[LiveItem]).decode
        self._decode = msgspec.json.Decoder(LiveItem).decode

    @classmethod
    def from_url(cls, url: str, *, prefix: str, socket_timeout: float) -> RedisCatalog:
        """A store on a client of its own (closed by ``close``): one server's, or a Redis Cluster's for a
        ``redis+cluster://`` URL."""
        client = client_from_url(url, socket_timeout=socket_timeout)
        return cls(client, prefix=prefix, owns_client=True)

    async def put(
        self, items: Sequence[LiveItem], *, based_on: Sequence[float | None] | None = None
    ) -> PutAnswer:
        check_based_on(items, based_on)
        results: list[PutResult] = []
        version = None
        for start in range(0, len(items), PUT_CHUNK):
            args: list[str | bytes] = []
            chunk = items[start : start + PUT_CHUNK]
            for i, update in enumerate(chunk, start=start):
                args += [update.item.item_id, repr(float(update.updated_at)), _base(based_on, i)]
                args.append(self._encode(update))
            try:
                with unavailable("catalog write", STORE):
                    reply: list[Any] = await self._put(keys=[self.items_key, self.version_key], args=args)
            except Exception as e:
                if results:  # earlier chunks are stored: say so (a retry finds them ignored_older)
                    e.args = (f"{e} (the first {start} of {len(items)} items were written)",)
                raise
            version = int(reply[0])
            results += [
                PutResult(u.item.item_id, _CODES[int(c)]) for u, c in zip(chunk, reply[1:], strict=True)
            ]
        if version is None:
            version = await self.version()
        return PutAnswer(version, results)

    async def get(self, item_id: str) -> LiveItem | None:
        with unavailable("catalog read", STORE):
            raw = await self._r.hget(self.items_key, item_id)
        return None if raw is None else self._decode(raw)

    async def overlay(self) -> CatalogOverlay:
        with unavailable("catalog read", STORE):
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.hvals(self.items_key)
                pipe.get(self.version_key)
                values, version = await pipe.execute()
        # the stored entries are JSON objects: one decoder call over them as a JSON array
        items = self._decode_list(b"[" + b",".join(values) + b"]")
        return CatalogOverlay(int(version or 0), {live.item.item_id: live for live in items})

    async def version(self) -> int:
        with unavailable("catalog version", STORE):
            raw = await self._r.get(self.version_key)
        return int(raw or 0)

    async def close(self) -> None:
        """Close the client if this store made it (a shared one is closed by its owner); never raises."""
        if not self._owns_client:
            return
        try:
            await self._r.aclose()
        except (RedisError, OSError) as e:
            log.debug("closing the redis client: %s", e)
