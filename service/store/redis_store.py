"""The Redis visitor store: live visitor state and the event stream, shared by every worker process.

Semantics are those documented in ``service.store.memory_store`` (the contract tests run both stores).

Key layout (``P`` is the configured prefix; ``H`` the lowercase hex of the visitor id's UTF-8 bytes, so any
visitor id, braces and colons included, gives one well-formed key and one hash tag; ``C`` the hex of a
campaign name). Every visitor key carries the hash tag ``{v:H}``, so a visitor's keys share one cluster slot:

- ``P:{v:H}:events``     list: the last ``recent_events`` stored events, msgspec JSON, oldest first
- ``P:{v:H}:cart``       hash: item_id -> POSIX seconds of the add_to_cart that put it there
- ``P:{v:H}:purchases``  hash: item_id -> POSIX seconds of the item's latest purchase
- ``P:{v:H}:ids``        sorted set: event_id -> server ms it was stored (idempotency; pruned after the ttl)
- ``P:{v:H}:sids``       list: ids of the visitor's entries in the stream, oldest first (for erase)
- ``P:{v:H}:campaigns``  set: C of every campaign with a sent set (so erase and expiry find them)
- ``P:{v:H}:buys``       list: the last ``purchase_log`` stored purchase/cancel events as
                         ``p|<ts>|<item_id>`` or ``c|<ts>|<item_id>``, oldest first
- ``P:{v:H}:sent:C``     set: item ids campaign C already sent to the visitor
- ``P:stream``           stream: one entry per stored event, field ``e`` = the event's msgspec JSON

Every visitor key expires ``visitor_ttl`` seconds after the visitor's last write (``sids``: one second
later, see below); each write refreshes all of them, so a visitor expires as a whole. The stream has no
TTL (``volatile-*`` eviction would never evict it; ``allkeys-*`` eviction must not be used): it is capped
with ``XADD MAXLEN ~ stream_maxlen`` and trimmed of entries older than ``visitor_ttl`` (``XTRIM MINID``) on
every append and erase. That age limit is what lets ``erase`` find every stream entry of a visitor through
``sids``: an entry is at most ``visitor_ttl`` old, and the ``sids`` list that names it outlives it.

Writes are Lua scripts, so each is atomic: ``append`` deduplicates and applies a whole chunk of events
(up to ``APPEND_CHUNK``; normally the whole batch) in one round trip. The scripts also touch the stream
and the sent sets named in ``campaigns``, which are not in KEYS: fine on one Redis server; on Redis Cluster
the sent sets share the visitor's slot but the stream does not (it would need one stream per slot).

Failures: a Redis that cannot be reached or does not answer becomes ``StoreDownError`` naming the cause
(``StoreFailure``: connection, timeout, error); no free connection in this process's pool within the wait
limit becomes ``StoreBusyError`` (Redis is up, this process is over-committed: never a reason to fall
back). The client never retries a command by itself (a write that timed out may have run; running it again
would store events without an event_id twice); the caller retries with the same event ids, which is
harmless.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from models.domain import Event, EventType
from models.errors import StoreUnavailableError
from service import metrics
from service.store.base import (
    PURCHASE_LOG,
    AppendResult,
    StoreBusyError,
    StoreDownError,
    StoreFailure,
    StoreLimits,
    StreamEntry,
    VisitorState,
)
from service.store.memory_store import check_count, format_id, parse_after

log = logging.getLogger("journeyrec.store")

RECENT_PAGE = 500  # stream entries per read of recent_visitors
APPEND_CHUNK = 1000  # events per script call: bounds how long one call holds the Redis server
MAX_CONNECTIONS = 64  # per process unless told; a command needs a connection only for one round trip
# order used by the scripts (KEYS[k + 0 .. k + 6] of a visitor)
_VISITOR_KEYS = ("events", "cart", "purchases", "ids", "sids", "campaigns", "buys")

# Shared Lua: refresh the ttl of one visitor's keys. KEYS[k .. k+6] are _VISITOR_KEYS; `base` is
# "P:{v:H}". sids lives one second longer than the rest: the stream keeps an entry at most `ttl` seconds
# after it was added (XTRIM MINID), so while an entry exists the sids list naming it still exists.
_TOUCH = """
local function touch(k, base, ttl)
  for j = 0, 6 do
    redis.call('EXPIRE', KEYS[k + j], j == 4 and ttl + 1 or ttl)
  end
  for _, c in ipairs(redis.call('SMEMBERS', KEYS[k + 5])) do
    redis.call('EXPIRE', base .. ':sent:' .. c, ttl)
  end
end
local function now_and_cutoff(ttl)
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  return now_ms, math.max(now_ms - ttl * 1000, 0)
end
"""

# KEYS: events, cart, purchases, buys[, sent set]. One atomic read (a consistent snapshot, as MULTI/EXEC would
# give) in one command: redis-py's transaction pipeline costs more client time than the read itself.
_READ = """
local out = {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('HGETALL', KEYS[2]),
             redis.call('HGETALL', KEYS[3]), redis.call('LRANGE', KEYS[4], 0, -1)}
if KEYS[5] then out[5] = redis.call('SMEMBERS', KEYS[5]) end
return out
"""

# KEYS[1] stream, then 7 keys per visitor group (_VISITOR_KEYS order).
# ARGV: ttl, maxlen, recent, purchase_log, n_groups, base of each group, then 6 per event in batch order:
#       group, kind, item, ts (Python repr of the float), "+"..event_id or "-", json
# Returns {accepted, duplicates}.
_APPEND = (
    _TOUCH
    + """
local stream = KEYS[1]
local ttl, maxlen, recent, log_cap = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ngroups = tonumber(ARGV[5])
local now_ms, cutoff = now_and_cutoff(ttl)
redis.call('XTRIM', stream, 'MINID', cutoff)
for g = 1, ngroups do
  -- event ids older than the ttl window are forgotten: a retry that late is a new event
  redis.call('ZREMRANGEBYSCORE', KEYS[1 + (g - 1) * 7 + 4], '-inf', '(' .. cutoff)
end
local stored = {}
local accepted, duplicates = 0, 0
for i = 6 + ngroups, #ARGV, 6 do
  local g = tonumber(ARGV[i])
  local k = 1 + (g - 1) * 7 + 1
  local kind, item, ts, eid, json = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local new = true
  if string.sub(eid, 1, 1) == '+' then
    new = redis.call('ZADD', KEYS[k + 3], 'NX', now_ms, string.sub(eid, 2)) == 1
  end
  if new then
    local sid = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', json)
    redis.call('RPUSH', KEYS[k + 4], sid)
    redis.call('RPUSH', KEYS[k], json)
    local t = tonumber(ts)
    local cart, purchases = KEYS[k + 1], KEYS[k + 2]
    if kind == 'add_to_cart' then
      local old = redis.call('HGET', cart, item)
      if not old or tonumber(old) <= t then redis.call('HSET', cart, item, ts) end
    elseif kind == 'remove_from_cart' or kind == 'purchase' then
      local old = redis.call('HGET', cart, item)
      if old and tonumber(old) <= t then redis.call('HDEL', cart, item) end
      if kind == 'purchase' then
        local last = redis.call('HGET', purchases, item)
        if not last or tonumber(last) <= t then redis.call('HSET', purchases, item, ts) end
      end
    elseif kind == 'cancel' then
      local last = redis.call('HGET', purchases, item)
      if last and tonumber(last) <= t then redis.call('HDEL', purchases, item) end
    end
    if kind == 'purchase' or kind == 'cancel' then
      redis.call('RPUSH', KEYS[k + 6], string.sub(kind, 1, 1) .. '|' .. ts .. '|' .. item)
    end
    stored[g] = true
    accepted = accepted + 1
  else
    duplicates = duplicates + 1
  end
end
for g = 1, ngroups do
  if stored[g] then
    local k = 1 + (g - 1) * 7 + 1
    redis.call('LTRIM', KEYS[k], -recent, -1)
    redis.call('LTRIM', KEYS[k + 6], -log_cap, -1)
    -- forget stream ids that XTRIM MINID has removed from the stream (they are in time order)
    while true do
      local head = redis.call('LINDEX', KEYS[k + 4], 0)
      if not head or tonumber(string.match(head, '^(%d+)')) >= cutoff then break end
      redis.call('LPOP', KEYS[k + 4])
    end
    touch(k, ARGV[5 + g], ttl)
  end
end
return {accepted, duplicates}
"""
)

# KEYS: the 7 visitor keys, then the campaign's sent set. ARGV: ttl, base, C, item ids...
_MARK_SENT = (
    _TOUCH
    + """
local ttl = tonumber(ARGV[1])
for i = 4, #ARGV, 1000 do
  redis.call('SADD', KEYS[8], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('SADD', KEYS[6], ARGV[3])
touch(1, ARGV[2], ttl)
return 1
"""
)

# KEYS[1] stream, then the 7 visitor keys. ARGV: ttl, base. Returns keys + stream entries removed.
_ERASE = (
    _TOUCH
    + """
local stream = KEYS[1]
local ttl = tonumber(ARGV[1])
local _, cutoff = now_and_cutoff(ttl)
-- entries older than the ttl may belong to a visitor whose sids list has expired: drop them first
redis.call('XTRIM', stream, 'MINID', cutoff)
local removed = 0
local sids = redis.call('LRANGE', KEYS[6], 0, -1)
for i = 1, #sids, 1000 do
  removed = removed + redis.call('XDEL', stream, unpack(sids, i, math.min(i + 999, #sids)))
end
for _, c in ipairs(redis.call('SMEMBERS', KEYS[7])) do
  removed = removed + redis.call('DEL', ARGV[2] .. ':sent:' .. c)
end
return removed + redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8])
"""
)


def _hex(text: str) -> str:
    return text.encode("utf-8").hex()


class PoolExhaustedError(RedisConnectionError):
    """Every connection of the pool stayed in use for the pool's wait limit (Redis itself may be fine)."""


class AdmissionPool(BlockingConnectionPool):
    """redis-py's blocking pool, telling "no free connection" (``PoolExhaustedError``) apart from "cannot
    connect" (both are ``ConnectionError`` in redis-py; the pool's own wait is the one that ends in an
    ``asyncio.TimeoutError``)."""

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except RedisConnectionError as e:
            if isinstance(e.__cause__, asyncio.TimeoutError):
                raise PoolExhaustedError(
                    f"all {self.max_connections} connections in use for {self.timeout} s"
                ) from e
            raise


def _failure(e: BaseException) -> StoreFailure:
    # redis-py's TimeoutError is not an OSError; the built-in one is (so it is checked first)
    if isinstance(e, RedisTimeoutError | TimeoutError):
        return StoreFailure.TIMEOUT
    if isinstance(e, RedisConnectionError | OSError):
        return StoreFailure.CONNECTION
    return StoreFailure.ERROR


@contextmanager
def unavailable(what: str, store: str = "visitor store") -> Iterator[None]:
    """Redis failures -> ``StoreBusyError`` (no free pool connection) or ``StoreDownError`` (with its cause),
    with a message fit for an HTTP client (no host, no URL); the cause is logged and chained."""
    try:
        yield
    except PoolExhaustedError as e:
        log.info("redis %s: no free connection: %s", what, e)
        raise StoreBusyError(
            f"the {store} is busy ({what}: no free connection in this worker); retry later"
        ) from e
    except (RedisError, OSError) as e:
        metrics.STORE_ERRORS.inc()  # the one place store failures (visitors, catalog) are counted
        # info, not warning: the caller reports the failure (HTTP handlers log a warning; the CLI one line)
        log.info("redis %s failed: %s: %s", what, type(e).__name__, e)
        raise StoreDownError(
            f"the {store} is unavailable ({what}: {type(e).__name__}); retry later", _failure(e)
        ) from e


class RedisStore(StoreLimits):
    """VisitorStore on Redis (``redis.asyncio``; see the module docstring for the key layout)."""

    def __init__(
        self,
        client: Redis,
        *,
        prefix: str,
        visitor_ttl: int,
        recent_events: int,
        stream_maxlen: int,
        purchase_log: int = PURCHASE_LOG,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"redis key prefix {prefix!r} must be non-empty and without braces")
        super().__init__(
            visitor_ttl=visitor_ttl,
            recent_events=recent_events,
            stream_maxlen=stream_maxlen,
            purchase_log=purchase_log,
        )
        self._r = client
        self.prefix = prefix
        self.stream_key = f"{prefix}:stream"
        self._append = client.register_script(_APPEND)
        self._mark_sent = client.register_script(_MARK_SENT)
        self._erase = client.register_script(_ERASE)
        self._read = client.register_script(_READ)
        self._encode = msgspec.json.Encoder().encode
        self._decode = msgspec.json.Decoder(Event).decode
        self._decode_list = msgspec.json.Decoder(list[Event]).decode

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str,
        visitor_ttl: int,
        recent_events: int,
        stream_maxlen: int,
        socket_timeout: float,
        max_connections: int = MAX_CONNECTIONS,
        purchase_log: int = PURCHASE_LOG,
    ) -> RedisStore:
        """A store on a new connection pool (nothing connects until the first command).

        The pool blocks: beyond ``max_connections`` commands in flight a command waits up to
        ``socket_timeout`` for a free connection and then fails with ``StoreBusyError`` (redis-py's default
        pool fails at once with "Too many connections"). The service sizes the pool from the requests it
        admits at once (``service.store.factory.pool_size``), so that wait stays empty.
        """
        pool = AdmissionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            # no automatic retries: see the module docstring
            retry=Retry(NoBackoff(), 0),
        )
        return cls(
            Redis.from_pool(pool),
            prefix=prefix,
            visitor_ttl=visitor_ttl,
            recent_events=recent_events,
            stream_maxlen=stream_maxlen,
            purchase_log=purchase_log,
        )

    @property
    def client(self) -> Redis:
        """The Redis client (its connection pool is shared with the rules and live catalog stores)."""
        return self._r

    @property
    def max_connections(self) -> int:
        """Connections this store's pool opens at most."""
        return int(self._r.connection_pool.max_connections)

    # -- keys ---------------------------------------------------------------------------------------------

    def visitor_base(self, visitor_id: str) -> str:
        """``P:{v:H}``: every key of the visitor starts with this."""
        return f"{self.prefix}:{{v:{_hex(visitor_id)}}}"

    def visitor_keys(self, visitor_id: str) -> list[str]:
        """The visitor's fixed keys in the scripts' order (``_VISITOR_KEYS``)."""
        base = self.visitor_base(visitor_id)
        return [f"{base}:{name}" for name in _VISITOR_KEYS]

    def sent_key(self, visitor_id: str, campaign: str) -> str:
        return f"{self.visitor_base(visitor_id)}:sent:{_hex(campaign)}"

    # -- VisitorStore -------------------------------------------------------------------------------------

    async def ping(self) -> bool:
        try:
            return bool(await self._r.ping())
        except (RedisError, OSError):
            return False

    async def append(self, events: list[Event]) -> AppendResult:
        accepted = duplicates = 0
        for start in range(0, len(events), APPEND_CHUNK):
            keys, args = self._append_call(events[start : start + APPEND_CHUNK])
            try:
                with unavailable("append"):
                    result = await self._append(keys=keys, args=args)
            except StoreUnavailableError as e:
                if accepted or duplicates:
                    # earlier chunks are stored: say so; a retry with the same event ids skips them
                    e.args = (f"{e} (the first {start} of {len(events)} events were stored)",)
                raise
            accepted += int(result[0])
            duplicates += int(result[1])
        return AppendResult(accepted=accepted, duplicates=duplicates)

    def _append_call(self, events: Sequence[Event]) -> tuple[list[str], list[str | bytes]]:
        """KEYS and ARGV of one append script call (layout above _APPEND)."""
        groups: dict[str, int] = {}
        keys: list[str] = [self.stream_key]
        bases: list[str] = []
        per_event: list[str | bytes] = []
        for e in events:
            g = groups.get(e.visitor_id)
            if g is None:
                g = groups[e.visitor_id] = len(groups) + 1
                keys.extend(self.visitor_keys(e.visitor_id))
                bases.append(self.visitor_base(e.visitor_id))
            per_event += [
                str(g),
                e.event.value,
                e.item_id,
                repr(float(e.timestamp)),  # shortest exact text: Lua compares it, Redis stores it as is
                "-" if e.event_id is None else "+" + e.event_id,
                self._encode(e),
            ]
        head: list[str | bytes] = [
            str(self.visitor_ttl),
            str(self.stream_maxlen),
            str(self.recent_events),
            str(self.purchase_log),
            str(len(groups)),
        ]
        return keys, [*head, *bases, *per_event]

    async def visitor(self, visitor_id: str, campaign: str | None = None) -> VisitorState:
        every = self.visitor_keys(visitor_id)
        keys = [*every[:3], every[6]]  # events, cart, purchases, buys
        if campaign is not None:
            keys.append(self.sent_key(visitor_id, campaign))
        with unavailable("read visitor"):
            try:
                replies: list[Any] = await self._read(keys=keys)
            except (RedisTimeoutError, TimeoutError):
                # A reply that waited behind a busy event loop (a burst of admitted requests) times out like
                # a hung server. The read changes nothing, so it is asked once more, on a fresh connection:
                # only a second timeout makes the store count as down (and the answer a fallback).
                metrics.STORE_READ_RETRIES.inc()
                replies = await self._read(keys=keys)
        return VisitorState(
            visitor_id=visitor_id,
            # the stored events are JSON objects: one decoder call over them as a JSON array
            events=self._decode_list(b"[" + b",".join(replies[0]) + b"]"),
            cart=_float_pairs(replies[1]),
            purchases=_float_pairs(replies[2]),
            sent=frozenset(m.decode() for m in replies[4]) if campaign is not None else frozenset(),
            purchase_log=[_logged(visitor_id, raw) for raw in replies[3]],
        )

    async def mark_sent(self, visitor_id: str, campaign: str, item_ids: list[str]) -> None:
        if not item_ids:
            return
        keys = [*self.visitor_keys(visitor_id), self.sent_key(visitor_id, campaign)]
        args = [str(self.visitor_ttl), self.visitor_base(visitor_id), _hex(campaign), *item_ids]
        with unavailable("mark sent"):
            await self._mark_sent(keys=keys, args=args)

    async def erase(self, visitor_id: str) -> int:
        keys = [self.stream_key, *self.visitor_keys(visitor_id)]
        with unavailable("erase"):
            removed = await self._erase(
                keys=keys, args=[str(self.visitor_ttl), self.visitor_base(visitor_id)]
            )
        return int(removed)

    async def read_stream(self, after: str, count: int) -> list[StreamEntry]:
        ms, seq = parse_after(after)
        check_count(count)
        if (ms, seq) == (2**64 - 1, 2**64 - 1):
            return []  # nothing can follow the largest id (Redis refuses the interval)
        with unavailable("read stream"):
            rows: Any = await self._r.xrange(self.stream_key, min=f"({format_id((ms, seq))}", count=count)
        return [
            StreamEntry(entry_id=sid.decode(), event=self._decode(fields[b"e"])) for sid, fields in rows or ()
        ]

    async def recent_visitors(self, limit: int, scan: int) -> list[str]:
        seen: dict[str, None] = {}
        top, read = "+", 0
        while read < scan and len(seen) < limit:
            page = min(RECENT_PAGE, scan - read)
            with unavailable("read recent visitors"):
                rows: Any = await self._r.xrevrange(self.stream_key, max=top, min="-", count=page)
            for _sid, fields in rows or ():
                seen.setdefault(self._decode(fields[b"e"]).visitor_id)
                if len(seen) >= limit:
                    break
            read += len(rows or ())
            if len(rows or ()) < page:
                break
            top = f"({rows[-1][0].decode()}"
        return list(seen)

    async def close(self) -> None:
        """Close the connection pool; never raises (a dead server has nothing left to close)."""
        try:
            await self._r.aclose()
        except (RedisError, OSError) as e:
            log.debug("closing the redis client: %s", e)


_LOGGED = {b"p": EventType.PURCHASE, b"c": EventType.CANCEL}


def _logged(visitor_id: str, raw: bytes) -> Event:
    """One purchase-log entry (``p|<ts>|<item_id>`` or ``c|...``; the item id may hold ``|``) as an event."""
    kind, ts, item = raw.split(b"|", 2)
    return Event(visitor_id=visitor_id, item_id=item.decode(), event=_LOGGED[kind], timestamp=float(ts))


def _float_pairs(flat: list[bytes]) -> dict[str, float]:
    """A hash as Lua's HGETALL returns it ([field, value, field, value, ...]) with float values."""
    return {k.decode(): float(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
