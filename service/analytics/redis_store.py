"""The Redis journey analytics store, shared by every worker. Semantics in
``service.analytics.store_base``.

Keys (``P`` the prefix, ``{v:H}`` the visitor's tag of ``service.store.redis_store``, ``I`` a period id
``h:YYYYMMDDHH`` or ``d:YYYYMMDD``, see ``service.analytics.periods``):

- ``P:{v:H}:journey``  hash: ``s`` stage, ``since``, ``at``, ``n`` version; expires with the visitor
- ``P:{v:H}:jmarks``   sorted set: ``I`` of every period whose visitor sets the visitor was counted in,
                       scored by those sets' expiry (for erase); expires with the visitor
- ``P:{jr:I}:n``       hash: the period's counters (``t|from|to|channel`` transitions, ``e|stage|channel``
                       stage entries, ``d|stage|channel|bucket`` time in stage)
- ``P:{jr:I}:s:<name>`` set: visitor pseudonyms (``store_base.SET_NAMES``)

Every script keeps to one slot: the record scripts to the visitor's tag, the rollup script to the period's
tag ``{jr:I}``. Reads and writes of many visitors or periods go in one round trip
(``service.analytics.resp``), never as one script over several slots.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import numpy as np
from redis.asyncio import Redis

from models.domain import EventType, Stage
from service.analytics.periods import Granularity, member_of, period_id
from service.analytics.resp import Arg, evalsha, run
from service.analytics.store_base import (
    SET_NAMES,
    JourneyRecord,
    Period,
    PeriodData,
    PeriodDelta,
    RecordWrite,
    Retention,
    Snapshot,
)
from service.store.redis_store import RedisStore, unavailable

STORE = "journey analytics store"
CHUNK = 1000  # members or fields per SADD / ZADD call inside a script

# KEYS: journey, events. Returns {stage, since, at, n} and the stored events.
_SNAPSHOT = """
return {redis.call('HMGET', KEYS[1], 's', 'since', 'at', 'n'), redis.call('LRANGE', KEYS[2], 0, -1)}
"""

# KEYS: journey, jmarks. ARGV: expected version, stage, since, at, ttl, now, then (expiry, period id) pairs.
# Returns 1 when written, 0 when the version moved.
_COMMIT = """
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if n ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'since', ARGV[3], 'at', ARGV[4], 'n', n + 1)
redis.call('EXPIRE', KEYS[1], ARGV[5])
if #ARGV > 6 then
  for i = 7, #ARGV, 2 * CHUNK do
    redis.call('ZADD', KEYS[2], unpack(ARGV, i, math.min(i + 2 * CHUNK - 1, #ARGV)))
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[6])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
return 1
""".replace("CHUNK", str(CHUNK))

# KEYS: the counters hash, then one set per group below. ARGV: counters' expiry, sets' expiry, number of
# counter fields F, F (field, increment) pairs, then per set: number of members M and the M members.
_ADD = """
local nf = tonumber(ARGV[3])
local i = 4
for _ = 1, nf do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if nf > 0 then redis.call('EXPIREAT', KEYS[1], ARGV[1]) end
for k = 2, #KEYS do
  local m = tonumber(ARGV[i])
  for j = i + 1, i + m, CHUNK do
    redis.call('SADD', KEYS[k], unpack(ARGV, j, math.min(j + CHUNK - 1, i + m)))
  end
  redis.call('EXPIREAT', KEYS[k], ARGV[2])
  i = i + m + 1
end
return 1
""".replace("CHUNK", str(CHUNK))

# KEYS: journey, jmarks. ARGV: the key prefix "P:{jr:", the member. Returns what it removed. The rollup sets
# are in other slots: this script only reads the marks and deletes the visitor's keys; the caller then
# removes the member from each set, one command per set.
_TAKE_MARKS = """
local marks = redis.call('ZRANGE', KEYS[2], 0, -1)
local removed = redis.call('DEL', KEYS[1], KEYS[2])
return {removed, marks}
"""

_STAGES = {s.value.encode(): s for s in Stage}


class _StageEvent(msgspec.Struct, frozen=True, gc=False):
    """The two fields of a stored event the stage engine reads (the decoder skips the others)."""

    timestamp: float
    event: EventType


class RedisAnalyticsStore:
    """AnalyticsStore on Redis (keys above), on the visitor store's client and key layout."""

    def __init__(self, visitors: RedisStore, retention: Retention) -> None:
        self.retention = retention
        self._visitors = visitors
        self._r: Redis = visitors.client
        self._prefix = visitors.prefix
        self._ttl = visitors.visitor_ttl
        self._snapshot = self._r.register_script(_SNAPSHOT)
        self._commit = self._r.register_script(_COMMIT)
        self._add = self._r.register_script(_ADD)
        self._take_marks = self._r.register_script(_TAKE_MARKS)
        self._scripts = (self._snapshot, self._commit, self._add)
        self._decode = msgspec.json.Decoder(list[_StageEvent]).decode

    def _visitor_keys(self, visitor_id: str) -> list[str]:
        base = self._visitors.visitor_base(visitor_id)
        return [f"{base}:journey", f"{base}:jmarks"]

    def _period_base(self, pid: str) -> str:
        return f"{self._prefix}:{{jr:{pid}}}"

    async def snapshot(self, visitor_ids: Sequence[str]) -> Snapshot:
        commands = []
        for v in visitor_ids:
            base = self._visitors.visitor_base(v)
            commands.append(evalsha(self._snapshot, [f"{base}:journey", f"{base}:events"], ()))
        with unavailable("read journey records", STORE):
            replies = await run(self._r, commands, self._scripts)
        records: list[JourneyRecord | None] = []
        raw: list[bytes] = []
        counts = np.zeros(len(visitor_ids), dtype=np.int64)
        for i, ((stage, since, at, n), events) in enumerate(replies):
            records.append(
                JourneyRecord(_STAGES[stage], float(since), float(at), int(n)) if stage is not None else None
            )
            counts[i] = len(events)
            raw.extend(events)
        # the stored events are JSON objects: one decoder call over them as a JSON array
        evs = self._decode(b"[" + b",".join(raw) + b"]")
        return Snapshot(
            records=records,
            counts=counts,
            ts=np.fromiter((e.timestamp for e in evs), dtype=np.float64, count=len(evs)),
            codes=np.fromiter((e.event.code for e in evs), dtype=np.int8, count=len(evs)),
        )

    async def commit(self, writes: Sequence[RecordWrite]) -> list[bool]:
        if not writes:
            return []
        now = repr(time.time())
        ttl = str(self._ttl)
        commands = []
        for w in writes:
            args: list[Arg] = [str(w.expected), w.stage.value, repr(w.since), repr(w.at), ttl, now]
            for pid, expires in w.marks:
                args += [repr(expires), pid]
            commands.append(evalsha(self._commit, self._visitor_keys(w.visitor_id), args))
        with unavailable("write journey records", STORE):
            replies = await run(self._r, commands, self._scripts)
        return [bool(int(r)) for r in replies]

    async def add(self, deltas: Mapping[Period, PeriodDelta]) -> None:
        if not deltas:
            return
        commands = []
        for (granularity, start), delta in deltas.items():
            base = self._period_base(period_id(granularity, start))
            keys = [f"{base}:n"]
            args: list[Arg] = [
                str(int(self.retention.counts_expire(granularity, start))),
                str(int(self.retention.sets_expire(granularity, start))),
                str(len(delta.counts)),
            ]
            for field, n in delta.counts.items():
                args += [field, str(n)]
            for name, members in delta.members.items():
                if members:
                    keys.append(f"{base}:s:{name}")
                    args += [str(len(members)), *members]
            commands.append(evalsha(self._add, keys, args))
        with unavailable("write journey rollups", STORE):
            await run(self._r, commands, self._scripts)

    async def read(self, granularity: Granularity, starts: Sequence[float]) -> list[PeriodData]:
        with unavailable("read journey rollups", STORE):
            async with self._r.pipeline(transaction=False) as pipe:
                for start in starts:
                    base = self._period_base(period_id(granularity, start))
                    pipe.hgetall(f"{base}:n")
                    for name in SET_NAMES:
                        pipe.smembers(f"{base}:s:{name}")
                replies: list[Any] = await pipe.execute()
        out: list[PeriodData] = []
        step = 1 + len(SET_NAMES)
        for i, start in enumerate(starts):
            counts, *sets = replies[i * step : (i + 1) * step]
            out.append(
                PeriodData(
                    start,
                    {k.decode(): int(v) for k, v in counts.items()},
                    {n: {m.decode() for m in s} for n, s in zip(SET_NAMES, sets, strict=True) if s},
                )
            )
        return out

    async def erase(self, visitor_id: str) -> int:
        member = member_of(visitor_id)
        with unavailable("erase journey records", STORE):
            removed, marks = await self._take_marks(keys=self._visitor_keys(visitor_id))
            if not marks:
                return int(removed)
            async with self._r.pipeline(transaction=False) as pipe:
                for mark in marks:
                    base = self._period_base(mark.decode())
                    for name in SET_NAMES:
                        pipe.srem(f"{base}:s:{name}", member)
                replies: list[Any] = await pipe.execute()
        return int(removed) + sum(int(r) for r in replies)

    async def close(self) -> None:
        return None  # the client belongs to the visitor store, which closes it
