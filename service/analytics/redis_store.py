"""The Redis journey analytics store, shared by every worker. Semantics in
``service.analytics.store_base``.

Keys (``P`` the prefix, ``{v:H}`` the visitor's tag of ``service.store.redis_store``, ``I`` a period id
``h:YYYYMMDDHH`` or ``d:YYYYMMDD``, see ``service.analytics.periods``):

- ``P:{v:H}:journey``  hash: ``s`` stage, ``since``, ``n`` version, ``p`` last sighting; expires
                       ``visitor_ttl`` after the visitor was last evaluated, as the visitor's other keys do
                       after their last event
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

from models.domain import Channel, EventType, Stage
from service.analytics.periods import GRANULARITIES, Granularity, member_of, period_id
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
    channel_name,
)
from service.store.redis_store import RedisStore, unavailable

STORE = "journey analytics store"
CHUNK = 1000  # members or fields per SADD / ZADD call inside a script

# KEYS: journey, events. ARGV: ttl. Returns {stage, since, n, p} and the stored events; refreshes the
# record's ttl (the visitor was evaluated: the record lives as long as the visitor's events).
_SNAPSHOT = """
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {redis.call('HMGET', KEYS[1], 's', 'since', 'n', 'p'), redis.call('LRANGE', KEYS[2], 0, -1)}
"""

# KEYS: journey. ARGV: expected version, stage, since, ttl. Returns 1 when written, 0 when the version moved.
_COMMIT = """
local n = tonumber(redis.call('HGET', KEYS[1], 'n') or '0')
if n ~= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 's', ARGV[2], 'since', ARGV[3], 'n', n + 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: journey. ARGV: the sighting. Only an existing record is written (erase may have removed it).
_MARK = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'p', ARGV[1]) end
return 1
"""

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

_STAGES = {s.value.encode(): s for s in Stage}


class _StageEvent(msgspec.Struct, frozen=True, gc=False):
    """The fields of a stored event the stage walk reads (the decoder skips the others)."""

    timestamp: float
    event: EventType
    channel: Channel | None = None


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
        self._mark = self._r.register_script(_MARK)
        self._scripts = (self._snapshot, self._commit, self._add, self._mark)
        self._decode = msgspec.json.Decoder(list[_StageEvent]).decode

    def _period_base(self, pid: str) -> str:
        return f"{self._prefix}:{{jr:{pid}}}"

    async def snapshot(self, visitor_ids: Sequence[str]) -> Snapshot:
        commands = []
        ttl = str(self._ttl)
        for v in visitor_ids:
            base = self._visitors.visitor_base(v)
            commands.append(evalsha(self._snapshot, [f"{base}:journey", f"{base}:events"], [ttl]))
        with unavailable("read journey records", STORE):
            replies = await run(self._r, commands, self._scripts)
        records: list[JourneyRecord | None] = []
        raw: list[bytes] = []
        counts = np.zeros(len(visitor_ids), dtype=np.int64)
        for i, ((stage, since, n, seen), events) in enumerate(replies):
            records.append(
                JourneyRecord(_STAGES[stage], float(since), int(n), seen.decode() if seen else "")
                if stage is not None
                else None
            )
            counts[i] = len(events)
            raw.extend(events)
        # the stored events are JSON objects: one decoder call over them as a JSON array
        evs = self._decode(b"[" + b",".join(raw) + b"]")
        return Snapshot(
            records=records,
            counts=counts,
            ts=np.array([e.timestamp for e in evs], dtype=np.float64),
            codes=np.array([e.event.code for e in evs], dtype=np.int8),
            channel=lambda i: channel_name(evs[i].channel),
        )

    async def commit(self, writes: Sequence[RecordWrite]) -> list[bool]:
        if not writes:
            return []
        ttl = str(self._ttl)
        commands = [
            evalsha(
                self._commit,
                [f"{self._visitors.visitor_base(w.visitor_id)}:journey"],
                [str(w.expected), w.stage.value, repr(w.since), ttl],
            )
            for w in writes
        ]
        with unavailable("write journey records", STORE):
            replies = await run(self._r, commands, self._scripts)
        return [bool(int(r)) for r in replies]

    async def mark_seen(self, sightings: Sequence[tuple[str, str]]) -> None:
        commands = [
            evalsha(self._mark, [f"{self._visitors.visitor_base(v)}:journey"], [seen])
            for v, seen in sightings
        ]
        with unavailable("write journey sightings", STORE):
            await run(self._r, commands, self._scripts)

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
        now = time.time()
        commands: list[list[Arg]] = [["DEL", f"{self._visitors.visitor_base(visitor_id)}:journey"]]
        for g in GRANULARITIES:
            for start in self.retention.sets_alive(g, now):
                base = self._period_base(period_id(g, start))
                commands += [["SREM", f"{base}:s:{name}", member] for name in SET_NAMES]
        with unavailable("erase journey records", STORE):
            replies = await run(self._r, commands, ())
        return sum(int(r) for r in replies)

    async def close(self) -> None:
        return None  # the client belongs to the visitor store, which closes it
