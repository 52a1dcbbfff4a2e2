"""The Redis journey analytics store, shared by every worker. Semantics in
``service.analytics.store_base``.

Keys (``P`` the prefix, ``{v:H}`` the visitor's tag of ``service.store.redis_store``, ``I`` a period id
``h:YYYYMMDDHH`` or ``d:YYYYMMDD``, see ``service.analytics.periods``):

- ``P:{v:H}:trail``    the visitor store's packed events (``service.store.trail``): what the walk reads
- ``P:{v:H}:journey``  hash: ``s`` stage, ``since``, ``n`` version, ``p`` last sighting; expires
                       ``visitor_ttl`` after the visitor was last evaluated, as the visitor's other keys do
                       after their last event
- ``P:{jr:I}:n``       hash: the period's counters (``t|from|to|channel`` transitions, ``e|stage|channel``
                       stage entries, ``d|stage|channel|bucket`` time in stage)
- ``P:{jr:I}:s:<name>`` set: visitor pseudonyms (``store_base.SET_NAMES``)
- ``P:{jd:n}:due``     sorted set: visitor id -> due time (``store_base``), in shard ``n`` (the visitor's
                       stream shard, ``RedisStore.shard_of``)

Every script keeps to one slot: the record scripts to the visitor's tag, the rollup script to the period's
tag ``{jr:I}``, the claim script to a due shard's ``{jd:n}``. Reads and writes of many visitors or
periods go in one round trip (``redis_store.run_commands``: packed RESP on one server, one pipelined round
trip per master on a Redis Cluster), never as one script over several slots.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, cast

import numpy as np
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from models.domain import Stage
from service.analytics.periods import GRANULARITIES, Granularity, member_of, period_id
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
from service.store import trail
from service.store.redis_store import STREAM_SHARDS, AnyRedis, RedisStore, run_commands, unavailable
from service.store.resp import Arg, evalsha, round_trip_packed

STORE = "journey analytics store"
CHUNK = 1000  # members or fields per SADD / ZADD call inside a script

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

# KEYS: a due shard. ARGV: now, limit, hold until. The members due before now (earliest first, at most
# limit), their due time moved to hold until.
_CLAIM = """
local got = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, v in ipairs(got) do redis.call('ZADD', KEYS[1], ARGV[3], v) end
return got
"""

_STAGES = {s.value.encode(): s for s in Stage}


def _snapshot_text(base: str, ttl: str) -> str:
    """RESP of a visitor's three snapshot commands (``_snapshot_commands``), lengths in characters."""
    j, t = f"{base}:journey", f"{base}:trail"
    return (
        f"*6\r\n$5\r\nHMGET\r\n${len(j)}\r\n{j}\r\n$1\r\ns\r\n$5\r\nsince\r\n$1\r\nn\r\n$1\r\np\r\n"
        f"*2\r\n$3\r\nGET\r\n${len(t)}\r\n{t}\r\n"
        f"*3\r\n$6\r\nEXPIRE\r\n${len(j)}\r\n{j}\r\n${len(ttl)}\r\n{ttl}\r\n"
    )


def _snapshot_commands(visitors: RedisStore, visitor_ids: Sequence[str], ttl: str) -> list[list[Arg]]:
    commands: list[list[Arg]] = []
    for v in visitor_ids:
        base = visitors.visitor_base(v)
        journey = f"{base}:journey"
        commands += [
            ["HMGET", journey, "s", "since", "n", "p"],
            ["GET", f"{base}:trail"],
            ["EXPIRE", journey, ttl],
        ]
    return commands


class RedisAnalyticsStore:
    """AnalyticsStore on Redis (keys above), on the visitor store's client and key layout."""

    def __init__(self, visitors: RedisStore, retention: Retention) -> None:
        self.retention = retention
        self._visitors = visitors
        self._r: AnyRedis = visitors.client
        self._prefix = visitors.prefix
        self._ttl = visitors.visitor_ttl
        self._commit = self._r.register_script(_COMMIT)
        self._add = self._r.register_script(_ADD)
        self._mark = self._r.register_script(_MARK)
        self._claim = self._r.register_script(_CLAIM)
        self._scripts = (self._commit, self._add, self._mark, self._claim)

    def _period_base(self, pid: str) -> str:
        return f"{self._prefix}:{{jr:{pid}}}"

    def _due_key(self, shard: int) -> str:
        return f"{self._prefix}:{{jd:{shard}}}:due"

    def _due_commands(self, due: Mapping[str, float]) -> list[list[Arg]]:
        """One ZADD (finite times) and one ZREM (inf) per due shard written."""
        add: dict[int, list[Arg]] = {}
        drop: dict[int, list[Arg]] = {}
        for visitor_id, when in due.items():
            shard = self._visitors.shard_of(visitor_id)
            if math.isinf(when):
                drop.setdefault(shard, []).append(visitor_id)
            else:
                add.setdefault(shard, []).extend((repr(when), visitor_id))
        return [
            *(["ZADD", self._due_key(n), *pairs] for n, pairs in add.items()),
            *(["ZREM", self._due_key(n), *members] for n, members in drop.items()),
        ]

    async def snapshot(self, visitor_ids: Sequence[str]) -> Snapshot:
        # per visitor: the record, then the trail (read after the record: a record that moved in between
        # fails its compare-and-set), and the record's ttl refreshed (it lives as long as the visitor's
        # events). Plain commands (the pair need not be atomic; a script per visitor costs more), packed
        # from one template per visitor: hundreds of visitors per request made generic packing the
        # largest cost of the read.
        # On a cluster the visitors' slots live on several masters: the same commands go through the
        # cluster client's pipeline (one round trip per master).
        ttl = str(self._ttl)
        with unavailable("read journey records", STORE):
            if self._visitors.cluster:
                commands = _snapshot_commands(self._visitors, visitor_ids, ttl)
                replies = await run_commands(self._r, commands, ())
            else:
                replies = await self._snapshot_packed(visitor_ids, ttl)
        records: list[JourneyRecord | None] = []
        for stage, since, n, seen in replies[::3]:
            records.append(
                JourneyRecord(_STAGES[stage], float(since), int(n), seen.decode() if seen else "")
                if stage is not None
                else None
            )
        trails = [t or b"" for t in replies[1::3]]
        rows = trail.rows(b"".join(trails))
        channels = rows["channel"]
        return Snapshot(
            records=records,
            counts=np.array([len(t) // trail.ROW_BYTES for t in trails], dtype=np.int64),
            ts=rows["ts"].astype(np.float64),
            codes=rows["code"].astype(np.int8),
            channel=lambda i: channel_name(trail.channel_of(int(channels[i]))),
        )

    async def _snapshot_packed(self, visitor_ids: Sequence[str], ttl: str) -> list[Any]:
        """One server: the snapshot commands packed from their template, in one round trip."""
        text = "".join([_snapshot_text(self._visitors.visitor_base(v), ttl) for v in visitor_ids])
        if not text.isascii():  # a prefix beyond ASCII: lengths are bytes, not characters
            return await run_commands(self._r, _snapshot_commands(self._visitors, visitor_ids, ttl), ())
        replies = await round_trip_packed(cast("Redis", self._r), text.encode(), 3 * len(visitor_ids))
        for r in replies:
            if isinstance(r, ResponseError):
                raise r
        return replies

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
            replies = await run_commands(self._r, commands, self._scripts)
        return [bool(int(r)) for r in replies]

    async def mark_seen(self, sightings: Sequence[tuple[str, str]]) -> None:
        commands = [
            evalsha(self._mark, [f"{self._visitors.visitor_base(v)}:journey"], [seen])
            for v, seen in sightings
        ]
        with unavailable("write journey sightings", STORE):
            await run_commands(self._r, commands, self._scripts)

    async def add(self, deltas: Mapping[Period, PeriodDelta], due: Mapping[str, float] | None = None) -> None:
        commands = self._due_commands(due) if due else []
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
        if not commands:
            return
        with unavailable("write journey rollups", STORE):
            await run_commands(self._r, commands, self._scripts)

    async def claim_due(self, now: float, limit: int, hold: float) -> list[str]:
        per_shard = -(-limit // STREAM_SHARDS)
        args: list[Arg] = [repr(now), str(per_shard), repr(now + hold)]
        commands = [evalsha(self._claim, [self._due_key(n)], args) for n in range(STREAM_SHARDS)]
        with unavailable("claim due journey walks", STORE):
            replies = await run_commands(self._r, commands, self._scripts)
        return [v.decode() for got in replies for v in got]

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
        commands: list[list[Arg]] = [
            ["DEL", f"{self._visitors.visitor_base(visitor_id)}:journey"],
            ["ZREM", self._due_key(self._visitors.shard_of(visitor_id)), visitor_id],
        ]
        for g in GRANULARITIES:
            for start in self.retention.sets_alive(g, now):
                base = self._period_base(period_id(g, start))
                commands += [["SREM", f"{base}:s:{name}", member] for name in SET_NAMES]
        with unavailable("erase journey records", STORE):
            replies = await run_commands(self._r, commands, ())
        return sum(int(r) for r in replies)

    async def close(self) -> None:
        return None  # the client belongs to the visitor store, which closes it
