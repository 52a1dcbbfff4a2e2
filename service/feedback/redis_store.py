"""The Redis feedback store (``redis.asyncio``); semantics as ``service.feedback.memory``.

Key layout (``P`` the prefix, ``H`` the hex of the visitor id as in ``service.store.redis_store``, ``X`` the
hex of an experiment id, ``N`` the visitor's counter shard, ``store_base.shard_of``):

- ``P:{v:H}:served``  list: the visitor's served lists (``ServedList`` JSON without touches), oldest first,
                      at most ``cap``; expires ``retention`` seconds after the last list was served
- ``P:{v:H}:fb``      hash: ``ver`` (write counter), ``t`` (JSON: recommendation id -> [clicks, impressions]
                      of the kept lists) and the exposures, one field per (experiment, variant, scope,
                      value); expires ``visitor_ttl`` seconds after the last feedback write
- ``P:{v:H}:fbids``   sorted set: event ids counted -> ms they were counted (deduplication), pruned after
                      ``retention``; expires with it
- ``P:{fb:X:N}:c``    hash: counter name -> total (``store_base``), no expiry; once the experiment is
                      deleted, only ``store_base.RETIRED`` -> ms until which it counts nothing,
                      expiring after that long
- ``P:{fbv:N}:active`` sorted set: visitor ids of shard N that have feedback state -> ms of their last
                      feedback write; members older than ``visitor_ttl`` are pruned on writes

Every script touches the keys of one slot only: a visitor's three keys, or one counter key.

Feeding a batch of events first asks the ``active`` sets which of its visitors have any feedback state (one
``ZMSCORE`` per shard): the others (never served a list, or not for ``visitor_ttl``) have nothing to
credit, and cost no per-visitor call. A stale member only costs a read.

Writes: keeping a served list is four plain commands (``RPUSH``/``LTRIM``/``EXPIRE`` and the visitor's
``ZADD`` to its ``active`` set) written in one go; on the request path, on one server, their replies are
read after the answer has gone (``send_served``); on a Redis Cluster (the list and the active set may be
on two masters) they go through the cluster client's pipeline and are read before. Counting it and
feeding events read the visitor's state (one call per visitor, pipelined), apply ``service.feedback.ledger``
in Python, and write the state back only if its ``ver`` did not move meanwhile (else read and apply again),
then add the counter increments, one call per counter key, pipelined (on a cluster, one round trip per
master). A counter write that fails after
its visitor write loses those increments (counted in ``journeyrec_feedback_write_failures_total``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

from models.attribution import ATTRIBUTABLE, Method, ServedList, Windows
from models.domain import Event, EventType
from service.feedback import ledger
from service.feedback.memory import FeedbackLimits
from service.feedback.store_base import (
    RETIRED,
    SEP,
    SHARDS,
    SUMMARY,
    DailyCell,
    Deltas,
    FeedbackResult,
    VariantStageStats,
    count_outcome,
    shard_of,
    stats_of,
    sum_counters,
)
from service.store import resp
from service.store.redis_store import AnyRedis, run_commands, unavailable

MAX_ATTEMPTS = 20  # optimistic writes of one visitor's state before giving up (others kept writing it)

# KEYS: served, fb, fbids. ARGV: event ids. Returns {lists, fb hash, 1/0 per event id: seen}
_READ = """
local seen = {}
for i = 1, #ARGV do seen[i] = redis.call('ZSCORE', KEYS[3], ARGV[i]) and 1 or 0 end
return {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('HGETALL', KEYS[2]), seen}
"""

# KEYS: fb. The exposures only (the ``_READ`` reply without lists, touches or seen flags): all that
# counting a served list needs.
_READ_EXPOSURES = """
local flat, out = redis.call('HGETALL', KEYS[1]), {}
for i = 1, #flat, 2 do
  if flat[i] ~= 't' then
    out[#out + 1] = flat[i]
    out[#out + 1] = flat[i + 1]
  end
end
return {{}, out, {}}
"""

# KEYS: fb, fbids. ARGV: expected ver, visitor_ttl, retention, now_ms, n (exposure fields), n field/value
# pairs, touches JSON ("" keeps the stored touches), then the event ids to remember. Returns 1, or 0 when
# ver moved (nothing written).
_WRITE = """
if (redis.call('HGET', KEYS[1], 'ver') or '0') ~= ARGV[1] then return 0 end
local n = tonumber(ARGV[5])
local i = 6
for j = 1, n do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
if ARGV[i] ~= '' then redis.call('HSET', KEYS[1], 't', ARGV[i]) end
redis.call('HSET', KEYS[1], 'ver', tonumber(ARGV[1]) + 1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
local now = tonumber(ARGV[4])
if i + 1 <= #ARGV then
  for j = i + 1, #ARGV do redis.call('ZADD', KEYS[2], now, ARGV[j]) end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - tonumber(ARGV[3]) * 1000))
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return 1
"""

# KEYS: counter key. ARGV: the RETIRED field, now_ms, then name/amount pairs. A retired experiment counts
# nothing until its mark's time; then the mark goes and counting starts afresh
_ADD = """
local retired = redis.call('HGET', KEYS[1], ARGV[1])
if retired then
  if tonumber(retired) > tonumber(ARGV[2]) then return 0 end
  redis.call('DEL', KEYS[1])
end
for i = 3, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""

# KEYS: counter key. ARGV: the RETIRED field, ms until which the experiment counts nothing, the ms left
_RETIRE = """
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_Touches = dict[str, tuple[dict[str, float], dict[str, float]]]
# one visitor's change: (state, seen flags of the event ids asked) -> (deltas, event ids to remember,
# whether anything is to be written)
Change = Callable[[ledger.VisitorFeedback, list[bool]], tuple[Deltas, list[str], bool]]


def _hex(text: str) -> str:
    return text.encode("utf-8").hex()


def _done() -> Awaitable[None]:
    """The confirmation of commands whose replies were read already."""
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


class RedisFeedbackStore(FeedbackLimits):
    def __init__(
        self,
        client: AnyRedis,
        *,
        prefix: str,
        windows: Windows,
        cap: int,
        visitor_ttl: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(windows=windows, cap=cap, visitor_ttl=visitor_ttl, clock=clock)
        self._r = client
        self.prefix = prefix
        self._read = client.register_script(_READ)
        self._read_exposures = client.register_script(_READ_EXPOSURES)
        self._write = client.register_script(_WRITE)
        self._add = client.register_script(_ADD)
        self._retire = client.register_script(_RETIRE)
        self._encode = msgspec.json.Encoder().encode
        self._decode_list = msgspec.json.Decoder(list[ServedList]).decode
        self._decode_touches = msgspec.json.Decoder(_Touches).decode

    # -- keys ---------------------------------------------------------------------------------------------

    def visitor_keys(self, visitor_id: str) -> list[str]:
        """served, fb, fbids of the visitor (slot ``{v:H}``, as the visitor store's keys)."""
        base = f"{self.prefix}:{{v:{_hex(visitor_id)}}}"
        return [f"{base}:served", f"{base}:fb", f"{base}:fbids"]

    def counter_key(self, experiment: str, shard: int) -> str:
        return f"{self.prefix}:{{fb:{_hex(experiment)}:{shard}}}:c"

    def active_key(self, shard: int) -> str:
        return f"{self.prefix}:{{fbv:{shard}}}:active"

    async def _pipeline(
        self,
        calls: Sequence[tuple[AsyncScript, list[str], Sequence[str | bytes]]],
        *,
        active: Sequence[str] = (),
        prune: bool = True,
    ) -> list[Any]:
        """Script calls, then the ``ZADD`` of ``active`` visitors to their active sets (and, with ``prune``,
        the pruning of those sets), in one non-transactional pipeline: one round trip. The replies of the
        script calls come first. ``EVALSHA`` is sent directly (redis-py's pipeline would ask ``SCRIPT
        EXISTS`` first: another round trip); when the server has lost the scripts they are loaded and the
        pipeline sent once more (every script call failed then; the rest is idempotent)."""
        now_ms = int(self.clock() * 1000)
        by_shard: dict[int, dict[str, int]] = defaultdict(dict)
        for v in active:
            by_shard[shard_of(v)][v] = now_ms
        if isinstance(self._r, RedisCluster):
            return await self._cluster_pipeline(calls, by_shard, now_ms if prune else None)
        for attempt in range(2):
            async with self._r.pipeline(transaction=False) as pipe:
                for script, keys, args in calls:
                    pipe.evalsha(script.sha, len(keys), *keys, *args)
                for shard, members in by_shard.items():
                    pipe.zadd(self.active_key(shard), members)
                    if prune:
                        pipe.zremrangebyscore(
                            self.active_key(shard), "-inf", f"({now_ms - self.visitor_ttl * 1000}"
                        )
                try:
                    return list(await pipe.execute())
                except NoScriptError:
                    if attempt:
                        raise
            for script in {c[0] for c in calls}:
                await self._r.script_load(script.script)
        raise AssertionError("unreachable")

    async def _cluster_pipeline(
        self,
        calls: Sequence[tuple[AsyncScript, list[str], Sequence[str | bytes]]],
        by_shard: dict[int, dict[str, int]],
        now_ms: int | None,
    ) -> list[Any]:
        """``_pipeline`` on a cluster: the same commands through the cluster client's pipeline (one round
        trip per master; redis-py's refuses ``evalsha`` there, so the commands go as they are sent)."""
        commands: list[list[resp.Arg]] = [resp.evalsha(script, keys, args) for script, keys, args in calls]
        for shard, members in by_shard.items():
            key = self.active_key(shard)
            commands.append(["ZADD", key, *(x for v, ms in members.items() for x in (str(ms), v))])
            if now_ms is not None:
                commands.append(["ZREMRANGEBYSCORE", key, "-inf", f"({now_ms - self.visitor_ttl * 1000}"])
        return await run_commands(self._r, commands, list({c[0] for c in calls}))

    async def _active(self, visitor_ids: list[str]) -> set[str]:
        """The visitors that have feedback state (a superset: a member may have expired since)."""
        by_shard: dict[int, list[str]] = defaultdict(list)
        for v in visitor_ids:
            by_shard[shard_of(v)].append(v)
        with unavailable("read active visitors", "feedback store"):
            async with self._r.pipeline(transaction=False) as pipe:
                for shard, members in by_shard.items():
                    pipe.zmscore(self.active_key(shard), members)
                replies = await pipe.execute()
        return {
            v
            for members, scores in zip(by_shard.values(), replies, strict=True)
            for v, score in zip(members, scores, strict=True)
            if score is not None
        }

    # -- the visitor's state ------------------------------------------------------------------------------

    def _state_of(self, replies: list[Any]) -> tuple[ledger.VisitorFeedback, str, list[bool]]:
        """(state, ver, seen flags) from a _READ reply; lists no longer kept are dropped."""
        raw_lists, flat, seen = replies
        served = self._decode_list(b"[" + b",".join(raw_lists) + b"]")
        fields = {k.decode(): v for k, v in zip(flat[::2], flat[1::2], strict=True)}
        ver = fields.pop("ver", b"0").decode()
        touches = self._decode_touches(fields.pop("t")) if "t" in fields else {}
        exposures: dict[str, ledger.Exposure] = {}
        for name, value in fields.items():
            key, _, metric = name.rpartition(SEP)
            exposure = exposures.setdefault(key, ledger.Exposure(first=0.0))
            if metric == "first":
                exposure.first = float(value)
            else:
                exposure.values[metric] = float(value)
        for s in served:
            clicks, impressions = touches.get(s.recommendation_id, ({}, {}))
            s.clicks, s.impressions = dict(clicks), dict(impressions)
        now = self.clock()
        state = ledger.VisitorFeedback(
            served=ledger.keep(served, now, self.windows.retention, self.cap), exposures=exposures
        )
        return state, ver, [bool(x) for x in seen]

    def _write_args(
        self, state: ledger.VisitorFeedback, ver: str, ids: list[str], *, touches: bool = True
    ) -> list[str | bytes]:
        """``_WRITE``'s ARGV; without ``touches`` (a state read without its lists) the stored ones stay."""
        pairs: list[str | bytes] = []
        for key, exposure in state.exposures.items():
            pairs += [f"{key}{SEP}first", repr(exposure.first)]
            for metric, value in exposure.values.items():
                pairs += [f"{key}{SEP}{metric}", repr(value)]
        kept = {
            s.recommendation_id: (s.clicks, s.impressions) for s in state.served if s.clicks or s.impressions
        }
        head = [ver, str(self.visitor_ttl), str(int(self.windows.retention)), str(int(self.clock() * 1000))]
        return [*head, str(len(pairs) // 2), *pairs, self._encode(kept) if touches else "", *ids]

    async def _update(self, changes: dict[str, tuple[list[str], Change]], *, lists: bool = True) -> Deltas:
        """Apply each visitor's change to their state, optimistically (see the module docstring). Without
        ``lists`` the state is read without its served lists and touches (a change that needs only the
        exposures), and the write leaves those as they are."""
        total = Deltas()
        pending = dict(changes)
        for _attempt in range(MAX_ATTEMPTS):
            if not pending:
                return total
            visitors = list(pending)
            reads = [
                (self._read, self.visitor_keys(v), pending[v][0])
                if lists
                else (self._read_exposures, self.visitor_keys(v)[1:2], [])
                for v in visitors
            ]
            with unavailable("read feedback state", "feedback store"):
                replies = await self._pipeline(reads)
            writes: list[tuple[str, Deltas]] = []
            calls: list[tuple[AsyncScript, list[str], list[str | bytes]]] = []
            for v, reply in zip(visitors, replies, strict=True):
                state, ver, seen = self._state_of(reply)
                deltas, remember, changed = pending[v][1](state, seen)
                if not changed:
                    del pending[v]
                    continue
                args = self._write_args(state, ver, remember, touches=lists)
                calls.append((self._write, self.visitor_keys(v)[1:], args))
                writes.append((v, deltas))
            if not writes:
                continue
            with unavailable("write feedback state", "feedback store"):
                done = await self._pipeline(calls, active=[v for v, _deltas in writes])
            for (v, deltas), ok in zip(writes, done, strict=False):  # the active-set replies follow
                if int(ok):
                    total.merge(deltas)
                    del pending[v]
        raise RuntimeError(f"feedback state of {len(pending)} visitors kept changing; gave up")

    # -- FeedbackStore ------------------------------------------------------------------------------------

    def _served_commands(self, visitor_id: str, served: ServedList) -> list[list[resp.Arg]]:
        """Keeping a served list as plain commands (nothing for the server to have lost, as a script
        can be): push, trim to ``cap``, expiry, and the visitor's entry in its shard's active set. Not
        atomic, and need not be: a reader between them sees the list kept, at worst one over ``cap``."""
        key = self.visitor_keys(visitor_id)[0]
        return [
            ["RPUSH", key, self._encode(served).decode()],
            ["LTRIM", key, str(-self.cap), "-1"],
            ["EXPIRE", key, str(int(self.windows.retention))],
            ["ZADD", self.active_key(shard_of(visitor_id)), str(int(self.clock() * 1000)), visitor_id],
        ]

    async def log_served(self, visitor_id: str, served: ServedList) -> None:
        await (await self.send_served(visitor_id, served))

    async def send_served(self, visitor_id: str, served: ServedList) -> Awaitable[None]:
        # on the request path: written before the answer goes out, its replies read in the background
        # (``service.feedback.serve``), so the answer does not wait a round trip for them. A cluster
        # client cannot leave replies unread (the list's key and the active set may live on two masters):
        # there the commands run, replies read, before this returns.
        commands = self._served_commands(visitor_id, served)
        if isinstance(self._r, RedisCluster):
            with unavailable("log served list", "feedback store"):
                await run_commands(self._r, commands, ())
            return _done()
        with unavailable("log served list", "feedback store"):
            sent = await resp.send(self._r, commands)
        return self._confirm(sent)

    async def _confirm(self, sent: resp.Sent) -> None:
        with unavailable("log served list", "feedback store"):
            for reply in await sent.replies():
                if isinstance(reply, Exception):
                    raise reply

    async def count_served(self, lists: Sequence[tuple[str, ServedList]]) -> Deltas:
        # a list of no experiment adds to the daily cells only: no visitor state to read or write. One of
        # an experiment updates the visitor's exposures, read and written without the served lists.
        total = Deltas()
        by_visitor: dict[str, list[ServedList]] = defaultdict(list)
        for visitor_id, served in lists:
            if served.experiment == SUMMARY:
                total.merge(ledger.count_served(ledger.VisitorFeedback(), served, shard=shard_of(visitor_id)))
            else:
                by_visitor[visitor_id].append(served)

        def change_for(visitor_id: str, mine: list[ServedList]) -> Change:
            def change(state: ledger.VisitorFeedback, _seen: list[bool]) -> tuple[Deltas, list[str], bool]:
                deltas = Deltas()
                for served in mine:
                    deltas.merge(ledger.count_served(state, served, shard=shard_of(visitor_id)))
                return deltas, [], True

            return change

        if by_visitor:
            changes: dict[str, tuple[list[str], Change]] = {
                v: ([], change_for(v, mine)) for v, mine in by_visitor.items()
            }
            total.merge(await self._update(changes, lists=False))
        return total

    async def add(self, deltas: Deltas) -> None:
        if not deltas:
            return
        calls: list[tuple[AsyncScript, list[str], list[str | bytes]]] = []
        now_ms = str(int(self.clock() * 1000))
        for (experiment, shard), names in deltas.by_key.items():
            args: list[str | bytes] = [
                x for name, amount in names.items() if amount for x in (name, repr(amount))
            ]
            if args:
                calls.append((self._add, [self.counter_key(experiment, shard)], [RETIRED, now_ms, *args]))
        with unavailable("add feedback counters", "feedback store"):
            await self._pipeline(calls)

    async def record_events(self, events: list[Event]) -> FeedbackResult:
        by_visitor: dict[str, list[Event]] = defaultdict(list)
        for e in events:
            if e.event in ATTRIBUTABLE:
                by_visitor[e.visitor_id].append(e)
        counts = {"impressions": 0, "duplicates": 0}
        outcomes: dict[tuple[str, str], int] = {}

        def change_for(visitor_id: str, mine: list[Event]) -> Change:
            def change(state: ledger.VisitorFeedback, seen: list[bool]) -> tuple[Deltas, list[str], bool]:
                # runs again when the write raced another: the counts of a run replace the last run's
                run_counts = {"impressions": 0, "duplicates": 0}
                run_outcomes: dict[tuple[str, str], int] = {}
                deltas, remember = Deltas(), []
                asked = iter(seen)
                batch_ids: set[str] = set()
                has_state = bool(state.served or state.exposures)
                for e in mine:
                    was_seen = next(asked) if e.event_id is not None else False
                    if e.event_id is not None and (was_seen or e.event_id in batch_ids):
                        run_counts["duplicates"] += e.event is EventType.IMPRESSION
                        continue
                    run_counts["impressions"] += e.event is EventType.IMPRESSION
                    if not has_state:
                        count_outcome(run_outcomes, e, Method.UNATTRIBUTED)
                        continue
                    method = ledger.record(state, e, self.windows, shard=shard_of(visitor_id), deltas=deltas)
                    count_outcome(run_outcomes, e, method)
                    if e.event_id is not None:
                        batch_ids.add(e.event_id)
                        remember.append(e.event_id)
                results[visitor_id] = (run_counts, run_outcomes)
                return deltas, remember, has_state

            return change

        results: dict[str, tuple[dict[str, int], dict[tuple[str, str], int]]] = {}
        active = await self._active(list(by_visitor)) if by_visitor else set()
        # the others have nothing to credit and nothing is remembered of them (as of a visitor without state)
        idle = Counter(e.event.value for v in by_visitor.keys() - active for e in by_visitor[v])
        counts["impressions"] += idle[EventType.IMPRESSION.value]
        outcomes.update({(kind, Method.UNATTRIBUTED.value): n for kind, n in idle.items()})
        changes = {
            v: ([e.event_id for e in mine if e.event_id is not None], change_for(v, mine))
            for v, mine in by_visitor.items()
            if v in active
        }
        deltas = await self._update(changes)
        await self.add(deltas)
        for run_counts, run_outcomes in results.values():
            for k in counts:
                counts[k] += run_counts[k]
            for key, n in run_outcomes.items():
                outcomes[key] = outcomes.get(key, 0) + n
        return FeedbackResult(
            impressions=counts["impressions"], duplicates=counts["duplicates"], outcomes=outcomes
        )

    async def served(self, visitor_id: str) -> list[ServedList]:
        with unavailable("read served lists", "feedback store"):
            reply = await self._read(keys=self.visitor_keys(visitor_id), args=[])
        return self._state_of(reply)[0].served

    async def experiment_stats(self, experiment: str) -> tuple[list[VariantStageStats], list[DailyCell]]:
        with unavailable("read feedback counters", "feedback store"):
            async with self._r.pipeline(transaction=False) as pipe:
                for shard in range(SHARDS):
                    pipe.hgetall(self.counter_key(experiment, shard))
                parts: Sequence[dict[bytes, bytes]] = await pipe.execute()
        return stats_of(sum_counters({k.decode(): float(v) for k, v in p.items()} for p in parts))

    async def retire_experiment(self, experiment: str) -> float:
        ttl_ms = int(self.windows.retention * 1000)
        until_ms = int(self.clock() * 1000) + ttl_ms
        args: list[str | bytes] = [RETIRED, str(until_ms), str(ttl_ms)]
        keys = [self.counter_key(experiment, shard) for shard in range(SHARDS)]
        with unavailable("retire an experiment's counters", "feedback store"):
            await self._pipeline([(self._retire, [key], args) for key in keys])
        return until_ms / 1000

    async def retired_until(self, experiment: str) -> float | None:
        with unavailable("read an experiment's counters", "feedback store"):
            async with self._r.pipeline(transaction=False) as pipe:
                for shard in range(SHARDS):
                    pipe.hget(self.counter_key(experiment, shard), RETIRED)
                marks: Sequence[bytes | None] = await pipe.execute()
        until = max((int(m) for m in marks if m is not None), default=None)
        return None if until is None or until <= self.clock() * 1000 else until / 1000

    async def erase(self, visitor_id: str) -> int:
        with unavailable("erase feedback", "feedback store"):
            removed = int(await self._r.delete(*self.visitor_keys(visitor_id)))
            await self._r.zrem(self.active_key(shard_of(visitor_id)), visitor_id)
        return removed

    async def close(self) -> None:
        return None  # the client belongs to the visitor store
