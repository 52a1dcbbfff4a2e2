"""The Redis visitor store: live visitor state and the event stream, shared by every worker process.

Semantics are those documented in ``service.store.memory_store`` (the contract tests run both stores).

Key layout (``P`` is the configured prefix; ``H`` the lowercase hex of the visitor id's UTF-8 bytes, so any
visitor id, braces and colons included, gives one well-formed key and one hash tag; ``C`` the hex of a
campaign name). Every visitor key carries the hash tag ``{v:H}``, so a visitor's keys share one cluster slot:

- ``P:{v:H}:events``     list: the last ``recent_events`` stored events, msgspec JSON, oldest first
- ``P:{v:H}:cart``       hash: item_id -> POSIX seconds of the add_to_cart that put it there
- ``P:{v:H}:purchases``  hash: item_id -> POSIX seconds of the item's latest purchase
- ``P:{v:H}:ids``        sorted set: event_id -> server ms it was stored (idempotency; pruned after the ttl)
- ``P:{v:H}:sids``       list: references of the visitor's stream entries (below), oldest first (for erase)
- ``P:{v:H}:campaigns``  set: C of every campaign with a sent set (so erase and expiry find them)
- ``P:{v:H}:buys``       list: the last ``purchase_log`` stored purchase/cancel events as
                         ``p|<ts>|<item_id>`` or ``c|<ts>|<item_id>``, oldest first
- ``P:{v:H}:linked``     set: anonymous ids linked to this visitor (a user), for the erase cascade
- ``P:{v:H}:alias``      string: the user id this anonymous id is linked to (``service.store.identity``)
- ``P:{v:H}:person``     string: the id experiments hash when it is not the visitor id
                         (``VisitorState.person``: set by a first login's merge)
- ``P:{v:H}:trail``      string: 10 bytes per entry of ``events``, in the same order: its time, event and
                         channel packed for the stage engine (``service.store.trail``)
- ``P:{v:H}:pending``    list (a cluster's only): ``<reference>|<json>`` of the visitor's stored events
                         not yet confirmed in its stream shard, oldest first (empty, so absent, between
                         appends)
- ``P:{v:H}:sent:C``     set: item ids campaign C already sent to the visitor

The event stream is ``STREAM_SHARDS`` streams, each under its own hash tag ``{s:n}`` (so in one slot with
its two index keys); a visitor's events go to shard ``crc32(visitor id) % STREAM_SHARDS``:

- ``P:{s:n}:stream``     stream: one entry per stored event, field ``e`` = the event's msgspec JSON
- ``P:{s:n}:refs``       hash: reference -> id of its entry in this shard, or "" once erased
- ``P:{s:n}:reftimes``   sorted set: reference -> ms of its entry id (or of its erase), to forget old ones

A reference ``<ms>.<16 hex>.<n>`` names one stored event's stream entry before the entry exists: the append
makes it from a head the client draws for each chunk of an append (its clock's ms, 6 random bytes), the
event's number in the chunk (4 hex digits) and the shard; it never holds the visitor id, so the references an
erase leaves behind say nothing about the visitor.

Appending on a single server: one ``_APPEND_ALL`` call per chunk of the batch (up to ``APPEND_CHUNK``
events; normally the whole batch) deduplicates on ``event_id``, applies every visitor's events to its state
and adds each stored event's entry to the visitor's shard (recording its reference in ``sids``, ``refs``
and ``reftimes``), all as one atomic step: the key layout is the cluster's, and ``pending`` stays empty.
The script names keys it does not list in KEYS (the visitor's other keys, the shards'), which one server
allows.

Appending on a cluster: every script call stays in one slot. An append runs, for every visitor of the
batch, ``_APPEND`` in the visitor's slot (all visitors in one round trip, pipelined per master), then
``_XADD`` in each shard slot that gets entries (one round trip), then ``_CONFIRM`` in each of those
visitors' slots (one round trip). ``_APPEND`` applies a visitor's events with the Lua ``_APPEND_ALL`` uses
(``_APPLY``), and ``_XADD`` writes a shard with the Lua ``_APPEND_ALL`` uses (``_SHARD``):

1. ``_APPEND`` deduplicates on ``event_id`` and applies the events to the state as one atomic step; each
   stored event's reference goes into ``sids`` and ``<reference>|<json>`` into ``pending``. It answers
   with the whole pending list: this call's events and any that an earlier, failed call left.
2. ``_XADD`` adds an entry for each reference the shard's ``refs`` does not hold, and records it there
   in the same atomic step: a reference sent twice is stored once.
3. ``_CONFIRM`` drops the references now in their shard from ``pending``.

An append answers only after the three steps. A failure between 1 and 2 (the append fails: the caller
retries with the same event ids) leaves the events in ``pending``; the retry finds the events stored
(duplicates) and writes their pending entries to the stream, so nothing the first attempt stored is
missing from the stream and nothing is stored twice. A failure between 2 and 3 leaves entries pending
that are in their shard already: the next append re-sends them and ``_XADD`` skips them. Events without an
event_id are stored again by a retry, as on one server. Events a failed append stored reach the stream
with the visitor's next append, whoever sends it; a visitor that never writes again keeps them in its
state only (until its ttl). A reference stays in ``refs`` while its entry may be in the stream: until
the ttl, or until ``MAXLEN`` trimming has removed entries newer than it (a reference re-sent after that
would be stored again; it can only be a leftover of a failed append that old).

Stream entry ids: a shard's entry ``<ms>-<seq>`` is the store's entry ``<ms>-<seq * STREAM_SHARDS + n>``:
one ``<ms>-<seq>`` id per entry across shards, unique and ordered like the shards' own ids, so a cursor
(``read_stream(after)``) is still one stream id and ``"<ms>"`` still means ``"<ms>-0"``. Reads ask
every shard for entries after the cursor and merge them by that id. Each visitor's entries are in arrival
order (one shard); entries of different shards are in id order, which follows the servers' clocks to the
millisecond (within one millisecond, shard order). Within one millisecond an entry of one shard could be
added after a reader had passed its id on another shard; on one server a read therefore returns only
entries of milliseconds the server clock has left (it waits, at most a millisecond, for the one it started
in to pass): an entry added afterwards gets a later millisecond, so a cursor is never overtaken. On a
cluster (a write in flight between its steps, clocks of different masters) it can be: a consumer that must
see every event re-reads from a cursor a little older than its last one and drops the entry ids it has.

Every visitor key expires ``visitor_ttl`` seconds after the visitor's last write (``sids`` and ``linked``:
one second later, see below), so a visitor expires as a whole; a write refreshes the keys it writes, and
all of them when their last full refresh is older than the slack, min(``visitor_ttl`` / 100,
``TOUCH_SLACK_MAX``) seconds (an hour for the default 90 days): so the keys of a visitor that keeps
writing expire between ``visitor_ttl`` minus the slack and ``visitor_ttl`` after the last write, ``sids``
and ``linked`` exactly one second after it, and an append spends two ttl commands per visitor, not
twelve, on a visitor seen within the slack. An alias expires ``visitor_ttl`` seconds after the link or
the last append that followed it. The shard keys have no TTL (``volatile-*`` eviction would never evict
them; ``allkeys-*`` eviction must not be used): a shard is capped with ``XADD MAXLEN ~
ceil(stream_maxlen / STREAM_SHARDS)`` and trimmed of entries older than ``visitor_ttl`` (``XTRIM MINID``)
on every write to it, and reads skip entries older than ``visitor_ttl`` (a shard nobody writes to is not
trimmed). That age limit is what lets ``erase`` find every stream entry of a visitor through ``sids``: an
entry is at most ``visitor_ttl`` old, and the ``sids`` list that names it outlives it.

Erase, of one visitor id: ``_REFS`` reads its references (``sids`` and ``pending``), ``_UNSTREAM``
deletes their entries in each shard and marks the references erased (so a second step still in flight
cannot add them afterwards), then ``_ERASE`` deletes the visitor's keys; references a concurrent append
added meanwhile (``_ERASE`` returns them) are deleted from their shards after. A failure leaves the keys
for a retry.

Identity: the append, read and mark-sent scripts look up the alias of the visitor they are given, in the
same atomic step: an aliased visitor's events are not stored but handed back, and stored under the user
by a second call (reads and sends likewise follow the alias). The link's steps are each one script over
one visitor's keys (``_CLAIM``, ``_ALIAS``, ``_SNAPSHOT``, ``_MERGE``, ``_CLEAR``): no script spans two
visitors; a link carries the anonymous id's stream references into the user's ``sids``.

Redis Cluster: a ``redis+cluster://`` URL (``service.store.redis_url``) gives redis-py's asyncio
``RedisCluster`` (``GatedCluster``), which follows ``MOVED``/``ASK``; the scripts name keys they do not
list in KEYS (a visitor's keys from its base, sent sets), always in the slot of a key they do list.
On one server and on a cluster the code path is the same but for the append (above: one script call on a
single server, three steps on a cluster) and the packing of a batch of commands (``run_commands``: packed
RESP on one pooled connection, or the cluster client's pipeline, one round trip per master). The stores
beside this one (rules, live catalog, experiments, fleet, feedback, journey analytics) share its client
(``client``, typed ``AnyRedis``) and keep each script and MULTI inside one slot likewise.

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
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, cast

import msgspec
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, ClusterPipeline, RedisCluster
from redis.asyncio.connection import Connection, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.maint_notifications import MaintNotificationsConfig

from models.domain import Event, EventType
from models.errors import StoreUnavailableError
from service import metrics
from service.store import identity, resp, trail
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
from service.store.identity import (
    MAX_HOPS,
    Contribution,
    IdentityConflictError,
    LinkResult,
    MergeOutcome,
    Snapshot,
)
from service.store.memory_store import check_count, format_id, parse_after
from service.store.redis_url import is_cluster_url, parse_cluster_url

log = logging.getLogger("journeyrec.store")

#: a client of one Redis server or of a Redis Cluster: every store takes either (module docstring)
AnyRedis = Redis | RedisCluster

RECENT_PAGE = 500  # stream entries per shard and read of recent_visitors
STREAM_SHARDS = 16  # stream shards P:{s:0}:stream .. P:{s:15}:stream (module docstring)
REF_BYTES = 6  # random bytes of the stream reference head of an append's chunk (module docstring)
_MAX_U64 = 2**64 - 1
# events per script call: bounds how long one call holds the Redis server (at most 16**4: an event's number
# in the chunk is 4 hex digits of its stream reference)
APPEND_CHUNK = 1000
MAX_CONNECTIONS = 64  # per process unless told; a command needs a connection only for one round trip
# an append refreshes the ttl of all of a visitor's keys when the last such refresh is older than
# min(visitor_ttl / 100, TOUCH_SLACK_MAX) seconds (module docstring)
TOUCH_SLACK_MAX = 3600
# order used by the scripts (KEYS[k + 0 .. k + 10] of a visitor)
_VISITOR_KEYS = (
    "events",
    "cart",
    "purchases",
    "ids",
    "sids",
    "campaigns",
    "buys",
    "linked",
    "alias",
    "person",
    "trail",
    "pending",
)

# Shared Lua: a visitor's key names; refresh the ttl of one visitor's keys: all but the alias
# (which a visitor with state never has for long; it is refreshed on its own); `base` is "P:{v:H}". sids lives
# one second longer than the rest: the stream keeps an entry at most `ttl` seconds after it was added
# (XTRIM MINID), so while an entry exists the sids list naming it still exists. linked likewise outlives
# the aliases it names (an alias is refreshed just before the user's write that refreshes linked), so
# erasing the user finds every live alias.
_TOUCH = """
local VISITOR_KEYS = {VISITOR_KEY_NAMES}
-- the 12 keys of a visitor (_VISITOR_KEYS order, K[1] .. K[12]): from KEYS[k ..] or from the base "P:{v:H}"
local function keys_at(k)
  local K = {}
  for j = 1, 12 do K[j] = KEYS[k + j - 1] end
  return K
end
local function keys_of(base)
  local K = {}
  for j = 1, 12 do K[j] = base .. ':' .. VISITOR_KEYS[j] end
  return K
end
local function touch(K, base, ttl)
  for j = 1, 12 do
    if j ~= 9 then redis.call('EXPIRE', K[j], (j == 5 or j == 8) and ttl + 1 or ttl) end
  end
  for _, c in ipairs(redis.call('SMEMBERS', K[6])) do
    redis.call('EXPIRE', base .. ':sent:' .. c, ttl)
  end
end
local function now_and_cutoff(ttl)
  local t = redis.call('TIME')
  local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  return now_ms, math.max(now_ms - ttl * 1000, 0)
end
""".replace("VISITOR_KEY_NAMES", ", ".join(f"'{name}'" for name in _VISITOR_KEYS))

# Shared Lua: the trail row of a stored event (``service.store.trail``), and a trail rebuilt from the events
# list (for a list whose trail does not match it row for row).
_EVENT_CODES = ", ".join(f'["{t.value}"] = {t.code}' for t in EventType)
_CHANNEL_CODES = ", ".join(f'["{c.value}"] = {trail.channel_code(c)}' for c in trail.CHANNELS)
_TRAIL = f"""
local TRAIL_ROW = {trail.ROW_BYTES}
local EVENT_CODE = {{{_EVENT_CODES}}}
local CHANNEL_CODE = {{{_CHANNEL_CODES}}}
local function trail_row(e)
  return struct.pack('<dBB', e.timestamp, EVENT_CODE[e.event], CHANNEL_CODE[e.channel] or 0)
end
local function rebuild_trail(events_key, trail_key)
  local out = {{}}
  for i, json in ipairs(redis.call('LRANGE', events_key, 0, -1)) do
    out[i] = trail_row(cjson.decode(json))
  end
  redis.call('SET', trail_key, table.concat(out))
end
"""

# KEYS: events, cart, purchases, buys, alias, person[, sent set]. One atomic read (a consistent snapshot, as
# MULTI/EXEC would give) in one command: redis-py's transaction pipeline costs more client time than the
# read itself. A linked anonymous id answers with its user id only (the caller reads that one).
_READ = """
local alias = redis.call('GET', KEYS[5])
if alias then return alias end
local out = {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('HGETALL', KEYS[2]),
             redis.call('HGETALL', KEYS[3]), redis.call('LRANGE', KEYS[4], 0, -1),
             redis.call('GET', KEYS[6])}
if KEYS[7] then out[6] = redis.call('SMEMBERS', KEYS[7]) end
return out
"""

# Shared Lua of the append scripts: one visitor's events applied to its state. ARGV[1 .. 4] of every append
# script: ttl, recent, purchase_log, the chunk's reference head "<ms>.<12 hex>" (module docstring). The events
# are 6 arguments each, from ARGV[first]: kind, item, ts (Python repr of the float), "+"..event_id or "-",
# json, channel code (``service.store.trail.channel_code``).
_APPLY = (
    _TOUCH
    + _TRAIL
    + """
local ttl, recent, log_cap = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local slack_ms = math.min(math.floor(ttl / 100), TOUCH_SLACK_MAX) * 1000
local now_ms, cutoff = now_and_cutoff(ttl)
local ref_head = ARGV[4]
-- hash h's time of item becomes ts (number t) unless it holds a later one; whether it did
local function keep_later(h, item, ts, t)
  local old = redis.call('HGET', h, item)
  if old and tonumber(old) > t then return false end
  redis.call('HSET', h, item, ts)
  return true
end
-- hash h's time of item goes when it is t or earlier
local function drop_until(h, item, t)
  local old = redis.call('HGET', h, item)
  if old and tonumber(old) <= t then redis.call('HDEL', h, item) end
end
-- The `count` events from ARGV[first] applied to the visitor of keys k and base "P:{v:H}", whose first
-- event is number `at` of the chunk and whose stream shard is n: deduplicated on event_id, each stored one's
-- reference (ref_head, its number as 4 hex digits, n) put in sids and its stream entry recorded by
-- stored(on, ref, json, w) (w: the keys written, [index in k] = true, whose ttl is refreshed here).
-- Returns accepted, duplicates and false, or 0, 0 and the user id of a visitor that is an alias (nothing
-- stored; the alias's ttl refreshed).
local function apply(k, base, first, count, at, n, stored, on)
  local user = redis.call('GET', k[9])
  if user then
    redis.call('EXPIRE', k[9], ttl)
    return 0, 0, user
  end
  -- trail rows stored; events list and purchase log lengths
  local w, rows, length, nbuys = {}, {}, nil, nil
  local accepted, duplicates = 0, 0
  local ref_tail = '.' .. n
  for i = first, first + 6 * (count - 1), 6 do
    local kind, item, ts, eid, json = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
    local new = true
    if string.sub(eid, 1, 1) == '+' then
      if not w[4] then
        -- event ids older than the ttl window are forgotten: a retry that late is a new event
        redis.call('ZREMRANGEBYSCORE', k[4], '-inf', '(' .. cutoff)
        w[4] = true
      end
      new = redis.call('ZADD', k[4], 'NX', now_ms, string.sub(eid, 2)) == 1
    end
    if new then
      local ref = ref_head .. string.format('%04x', at + (i - first) / 6) .. ref_tail
      redis.call('RPUSH', k[5], ref)
      stored(on, ref, json, w)
      local t = tonumber(ts)
      if kind == 'add_to_cart' then
        if keep_later(k[2], item, ts, t) then w[2] = true end
      elseif kind == 'remove_from_cart' or kind == 'purchase' then
        drop_until(k[2], item, t)
        if kind == 'purchase' and keep_later(k[3], item, ts, t) then w[3] = true end
      elseif kind == 'cancel' then
        drop_until(k[3], item, t)
      end
      if not length then
        -- the first stored event: was the visitor's last full ttl refresh longer than the slack ago?
        if redis.call('PTTL', k[1]) < ttl * 1000 - slack_ms then w.full = true end
      end
      length = redis.call('RPUSH', k[1], json)
      if kind == 'purchase' or kind == 'cancel' then
        nbuys = redis.call('RPUSH', k[7], string.sub(kind, 1, 1) .. '|' .. ts .. '|' .. item)
        w[7] = true
      end
      rows[#rows + 1] = struct.pack('<dBB', t, EVENT_CODE[kind], tonumber(ARGV[i + 5]))
      accepted = accepted + 1
    else
      duplicates = duplicates + 1
    end
  end
  if not length then return accepted, duplicates, false end
  -- the trail keeps one row per entry of the events list (rebuilt from the list if it does not)
  local n = redis.call('APPEND', k[11], table.concat(rows)) / TRAIL_ROW
  if length > recent then redis.call('LTRIM', k[1], -recent, -1) end
  if n ~= length then
    rebuild_trail(k[1], k[11])
    w[11] = true
  elseif n > recent then
    redis.call('SET', k[11], redis.call('GETRANGE', k[11], -recent * TRAIL_ROW, -1))
    w[11] = true
  elseif n == #rows then
    w[11] = true  -- created by this call
  end
  if nbuys and nbuys > log_cap then redis.call('LTRIM', k[7], -log_cap, -1) end
  if w.full then
    -- forget stream references older than the ttl: their entries are gone (they are in time order)
    while true do
      local head = redis.call('LINDEX', k[5], 0)
      if not head or tonumber(string.match(head, '^(%d+)')) >= cutoff then break end
      redis.call('LPOP', k[5])
    end
    touch(k, base, ttl)
  else
    -- refreshed in full less than the slack ago: only what must outlive the rest (sids, linked) and
    -- the keys this call wrote
    redis.call('EXPIRE', k[5], ttl + 1)
    redis.call('EXPIRE', k[8], ttl + 1)
    for j, _ in pairs(w) do
      if j ~= 'full' then redis.call('EXPIRE', k[j], ttl) end
    end
  end
  return accepted, duplicates, false
end
""".replace("TOUCH_SLACK_MAX", str(TOUCH_SLACK_MAX))
)

# Shared Lua of the scripts that write a stream shard: a shard opened (its keys given, or made from the
# prefix P and the shard n), its stream trimmed; entries added; then closed: their references recorded in
# refs and reftimes (one command each for all of them) and the references it may forget dropped.
_SHARD = """
local function open_shard(stream, refs, times, maxlen, cutoff)
  redis.call('XTRIM', stream, 'MINID', cutoff)
  return {stream = stream, refs = refs, times = times, maxlen = maxlen, ids = {}, ms = {}}
end
local function shard_at(prefix, n, maxlen, cutoff)
  local b = prefix .. ':{s:' .. n .. '}'
  return open_shard(b .. ':stream', b .. ':refs', b .. ':reftimes', maxlen, cutoff)
end
local function to_shard(S, ref, json)
  local sid = redis.call('XADD', S.stream, 'MAXLEN', '~', S.maxlen, '*', 'e', json)
  local ids, ms = S.ids, S.ms
  ids[#ids + 1], ids[#ids + 2] = ref, sid
  -- the entry's own time (not TIME's, which may be a millisecond behind it): compared with entry ids below
  ms[#ms + 1], ms[#ms + 2] = string.match(sid, '^(%d+)'), ref
end
local function close_shard(S, cutoff)
  for i = 1, #S.ids, 1000 do
    redis.call('HSET', S.refs, unpack(S.ids, i, math.min(i + 999, #S.ids)))
    redis.call('ZADD', S.times, unpack(S.ms, i, math.min(i + 999, #S.ms)))
  end
  -- forget references older than the ttl cutoff, or than the shard's oldest entry (trimmed by MAXLEN)
  local first = redis.call('XRANGE', S.stream, '-', '+', 'COUNT', 1)[1]
  if first then cutoff = math.max(cutoff, tonumber(string.match(first[1], '^(%d+)'))) end
  local old = redis.call('ZRANGEBYSCORE', S.times, '-inf', '(' .. cutoff, 'LIMIT', 0, 1000)
  if #old > 0 then
    redis.call('HDEL', S.refs, unpack(old))
    redis.call('ZREM', S.times, unpack(old))
  end
end
"""

# A single server: the whole append in one call. KEYS: the events key of each visitor group. ARGV: ttl,
# recent, purchase_log, reference head (``_APPLY``), the shards' maxlen, the prefix P, then per visitor group
# (in batch order of first appearance): its base "P:{v:H}", its shard n, its number of events, then its
# events (6 each, ``_APPLY``), in batch order. Each stored event goes straight into the group's shard
# (``P:{s:n}:stream``, with its refs and reftimes: the layout of the cluster's steps), in the same atomic
# step; keys not in KEYS (the visitor's other keys, the shards') are fine on one server, which does not
# check slots. Every shard written is
# opened (trimmed) first, so a shard that cannot be written fails the call before it writes anything.
# Returns {accepted, duplicates, {group, user id, ...}, {group, person, ...}}: the events of a group whose
# visitor is an alias are not stored (nor counted); the caller stores them under the user. The persons are
# those of the groups whose visitor has a ``person`` key (``VisitorState.person``).
_APPEND_ALL = (
    _APPLY
    + _SHARD
    + """
local maxlen, prefix = ARGV[5], ARGV[6]
-- per group: base, shard, first argument, number of events, number of its first event in the call
local groups, shards = {}, {}
local i, at = 7, 0
while i <= #ARGV do
  local n, count = ARGV[i + 1], tonumber(ARGV[i + 2])
  groups[#groups + 1] = {ARGV[i], n, i + 3, count, at}
  if not shards[n] then shards[n] = shard_at(prefix, n, maxlen, cutoff) end
  i, at = i + 3 + 6 * count, at + count
end
local accepted, duplicates, redirected, persons = 0, 0, {}, {}
for g, group in ipairs(groups) do
  local k = keys_of(group[1])
  local a, d, user = apply(k, group[1], group[3], group[4], group[5], group[2], to_shard, shards[group[2]])
  accepted, duplicates = accepted + a, duplicates + d
  if user then
    redirected[#redirected + 1] = g
    redirected[#redirected + 1] = user
  else
    local person = redis.call('GET', k[10])
    if person then
      persons[#persons + 1] = g
      persons[#persons + 1] = person
    end
  end
end
for _, S in pairs(shards) do close_shard(S, cutoff) end
return {accepted, duplicates, redirected, persons}
"""
)

# A cluster, first step: one visitor's slot. KEYS[1]: the visitor's events key (the script names the
# visitor's other keys from its base, in the same slot). ARGV: ttl, recent, purchase_log, reference head
# (``_APPLY``), base, shard n, the number of its first event in the chunk, then its events (6 each,
# ``_APPLY``) in batch order.
# Returns {accepted, duplicates, user id or false, {ref, json, ref, json, ...}, person or false}: a visitor
# that is an alias
# stores nothing (its alias's ttl is refreshed; the caller stores the events under the user). The pending
# entries (oldest first) are every event of the visitor stored but not yet confirmed in its stream shard:
# this call's and any an earlier, failed call left.
_APPEND = (
    _APPLY
    + """
local base = ARGV[5]
local k = keys_of(base)
local function to_pending(pending, ref, json, w)
  redis.call('RPUSH', pending, ref .. '|' .. json)
  w[12] = true
end
local accepted, duplicates, user = apply(k, base, 8, (#ARGV - 7) / 6, tonumber(ARGV[7]), ARGV[6], to_pending,
                                        k[12])
-- the pending entries as {ref, json, ref, json, ...}; what a failed append left before a link still goes
-- to the stream
local out = {}
for _, x in ipairs(redis.call('LRANGE', k[12], 0, -1)) do
  local bar = string.find(x, '|', 1, true)
  out[#out + 1] = string.sub(x, 1, bar - 1)
  out[#out + 1] = string.sub(x, bar + 1)
end
return {accepted, duplicates, user, out, (not user) and redis.call('GET', k[10])}
"""
)

# A cluster, second step: one stream shard's slot. KEYS: the shard's stream, refs, reftimes (module
# docstring). ARGV: ttl, the shard's maxlen, then reference, json of each pending event. Adds each reference
# not recorded before (the idempotency of the second step: a retry re-sends what it is not sure of);
# returns how many it added.
_XADD = (
    _TOUCH
    + _SHARD
    + """
local _, cutoff = now_and_cutoff(tonumber(ARGV[1]))
local S = open_shard(KEYS[1], KEYS[2], KEYS[3], ARGV[2], cutoff)
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('HSETNX', S.refs, ARGV[i], '') == 1 then
    to_shard(S, ARGV[i], ARGV[i + 1])
    added = added + 1
  end
end
close_shard(S, cutoff)
return added
"""
)

# One stream shard's slot. KEYS as _XADD. ARGV: references. Deletes their entries and records each
# reference as erased (""), so that a second step still in flight cannot add it afterwards. Returns the
# number of entries deleted.
_UNSTREAM = """
local stream, refs, times = KEYS[1], KEYS[2], KEYS[3]
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local removed = 0
for i = 1, #ARGV do
  local sid = redis.call('HGET', refs, ARGV[i])
  if sid and sid ~= '' then removed = removed + redis.call('XDEL', stream, sid) end
  redis.call('HSET', refs, ARGV[i], '')
  redis.call('ZADD', times, now_ms, ARGV[i])
end
return removed
"""

# One visitor's slot. KEYS[1]: pending. ARGV: ttl, references now in their shards. Drops their pending
# entries (others, added since by a concurrent append, stay).
_CONFIRM = """
local done = {}
for i = 2, #ARGV do done[ARGV[i]] = true end
local left = {}
for _, x in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if not done[string.match(x, '^[^|]*')] then left[#left + 1] = x end
end
redis.call('DEL', KEYS[1])
for i = 1, #left, 1000 do redis.call('RPUSH', KEYS[1], unpack(left, i, math.min(i + 999, #left))) end
if #left > 0 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
return #left
"""

# One visitor's slot. KEYS: sids, pending, alias. ARGV: expected alias ("" = any). Returns the visitor's
# stream references (in sids or pending), or false when an alias is expected and the visitor's differs.
_REFS = """
if ARGV[1] ~= '' and redis.call('GET', KEYS[3]) ~= ARGV[1] then return false end
local out = redis.call('LRANGE', KEYS[1], 0, -1)
for _, x in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do out[#out + 1] = string.match(x, '^[^|]*') end
return out
"""

# KEYS: the 12 visitor keys, then the campaign's sent set. ARGV: ttl, base, C, item ids...
# Returns 1, or the user id of a linked anonymous id (nothing written: the caller sends to the user).
_MARK_SENT = (
    _TOUCH
    + """
local ttl = tonumber(ARGV[1])
local alias = redis.call('GET', KEYS[9])
if alias then return alias end
for i = 4, #ARGV, 1000 do
  redis.call('SADD', KEYS[13], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('SADD', KEYS[6], ARGV[3])
touch(keys_at(1), ARGV[2], ttl)
return 1
"""
)

# The 12 visitor keys. ARGV: ttl, base, expected alias ("" = any). Returns {keys removed, the alias the
# visitor had or nil, {stream references it held}}; nothing is removed when an alias is expected and the
# visitor's differs (an anonymous id moved to another user since the cascade read its user's set). The
# caller deletes the references' stream entries (``_UNSTREAM``) before this runs and again for any
# reference this returns that it had not seen.
_ERASE = """
local alias = redis.call('GET', KEYS[9])
if ARGV[3] ~= '' and alias ~= ARGV[3] then return {0, false, {}} end
local refs = redis.call('LRANGE', KEYS[5], 0, -1)
for _, x in ipairs(redis.call('LRANGE', KEYS[12], 0, -1)) do refs[#refs + 1] = string.match(x, '^[^|]*') end
local removed = 0
for _, c in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  removed = removed + redis.call('DEL', ARGV[2] .. ':sent:' .. c)
end
removed = removed + redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7],
                                KEYS[8], KEYS[9], KEYS[10])
-- the trail (a packed copy of the events list) and pending (copies of events) are not counted on their own
redis.call('DEL', KEYS[11], KEYS[12])
return {removed, alias, refs}
"""

# -- the steps of a link (service.store.identity): each script is over ONE visitor's keys -------------------

# The user's slot. KEYS: linked, alias. ARGV: anonymous id, ttl. Returns {0, alias} when the user id is an
# alias itself (nothing changed), else {1, 1 if the anonymous id is new in the set else 0}.
_CLAIM = """
local alias = redis.call('GET', KEYS[2])
if alias then return {0, alias} end
local added = redis.call('SADD', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]) + 1)
return {1, added}
"""

# The anonymous slot. KEYS: linked, alias. ARGV: user id, force ("1"/"0"), ttl. Returns {"user"} (it has
# linked ids: it is a user), {"taken", other user} (not forced), or {"ok"[, previous user]}: alias set.
_ALIAS = """
if redis.call('SCARD', KEYS[1]) > 0 then return {'user'} end
local current = redis.call('GET', KEYS[2])
if current and current ~= ARGV[1] and ARGV[2] ~= '1' then return {'taken', current} end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
if current then return {'ok', current} end
return {'ok'}
"""

# The anonymous slot. KEYS: the 11 visitor keys. ARGV: base. Returns {events, cart, purchases, ids, sids,
# buys, {C, {items}, C, {items}, ...}, person or nil}.
_SNAPSHOT = """
local sent = {}
for _, c in ipairs(redis.call('SMEMBERS', KEYS[6])) do
  sent[#sent + 1] = c
  sent[#sent + 1] = redis.call('SMEMBERS', ARGV[1] .. ':sent:' .. c)
end
return {redis.call('LRANGE', KEYS[1], 0, -1), redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]),
        redis.call('ZRANGE', KEYS[4], 0, -1), redis.call('LRANGE', KEYS[5], 0, -1),
        redis.call('LRANGE', KEYS[7], 0, -1), sent, redis.call('GET', KEYS[10])}
"""

# The anonymous slot. KEYS: the 11 visitor keys. ARGV: base. Drops the state (and person), keeps the
# alias (and linked).
_CLEAR = """
for _, c in ipairs(redis.call('SMEMBERS', KEYS[6])) do redis.call('DEL', ARGV[1] .. ':sent:' .. c) end
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[10], KEYS[11])
"""

# The user's slot. KEYS: the 11 visitor keys. ARGV: ttl, recent, purchase_log, base, the contribution as
# JSON (``_merge_payload``). The algorithm of ``memory_store._merge``; returns {events carried, {items of
# the anonymous cart now in the user's}}.
_MERGE = (
    _TOUCH
    + _TRAIL
    + """
local ttl, recent, log_cap, base = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local c = cjson.decode(ARGV[5])
local events, cart, purchases, ids, sids, campaigns, buys = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5],
  KEYS[6], KEYS[7]
local now_ms = now_and_cutoff(ttl)
-- a first login (no events, no person yet): the user takes the anonymous visitor's person
if redis.call('LLEN', events) == 0 and redis.call('EXISTS', KEYS[10]) == 0 then
  redis.call('SET', KEYS[10], c.person)
end
local function later(map, key, t)
  if not map[key] or map[key] < t then map[key] = t end
end
local function rewrite(key, rows)
  redis.call('DEL', key)
  for i = 1, #rows, 1000 do redis.call('RPUSH', key, unpack(rows, i, math.min(i + 999, #rows))) end
end
local function by_time(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end
local function tail(rows, cap, field)
  local out = {}
  for i = math.max(#rows - cap + 1, 1), #rows do out[#out + 1] = rows[i][field or 3] end
  return out
end
-- the user's facts before the merge
local u_ends, u_cancels, last_purchase = {}, {}, -math.huge
local rows = {}
for i, json in ipairs(redis.call('LRANGE', events, 0, -1)) do
  local e = cjson.decode(json)
  rows[i] = {e.timestamp, i, json, trail_row(e)}
  if e.event == 'remove_from_cart' or e.event == 'purchase' then later(u_ends, e.item_id, e.timestamp) end
end
local log_rows, have = {}, {}
for i, entry in ipairs(redis.call('LRANGE', buys, 0, -1)) do
  local kind, ts, item = string.match(entry, '^(%a)|([^|]*)|(.*)$')
  local t = tonumber(ts)
  log_rows[i] = {t, i, entry}
  have[entry] = (have[entry] or 0) + 1
  if kind == 'p' then
    later(u_ends, item, t)
    last_purchase = math.max(last_purchase, t)
  else
    later(u_cancels, item, t)
  end
end
local flat = redis.call('HGETALL', purchases)
for i = 1, #flat, 2 do
  local t = tonumber(flat[i + 1])
  later(u_ends, flat[i], t)
  last_purchase = math.max(last_purchase, t)
end
-- events: unseen merge ids only, then everything in time order (the user's first on a tie)
local carried, n = 0, #rows
for _, x in ipairs(c.events) do
  if redis.call('ZADD', ids, 'NX', now_ms, x[1]) == 1 then
    carried = carried + 1
    rows[#rows + 1] = {tonumber(x[2]), n + carried, x[3], trail_row(cjson.decode(x[3]))}
  end
end
for _, id in ipairs(c.ids) do redis.call('ZADD', ids, 'NX', now_ms, id) end
if carried > 0 then
  table.sort(rows, by_time)
  rewrite(events, tail(rows, recent))
  redis.call('SET', KEYS[11], table.concat(tail(rows, recent, 4)))
end
-- purchase log: each entry as many times as the side holding it more often has it
local want, added, m = {}, false, #log_rows
for _, entry in ipairs(c.buys) do want[entry] = (want[entry] or 0) + 1 end
for _, entry in ipairs(c.buys) do
  if (have[entry] or 0) < want[entry] then
    have[entry] = (have[entry] or 0) + 1
    m = m + 1
    log_rows[m] = {tonumber(string.match(entry, '^%a|([^|]*)|')), m, entry}
    added = true
  end
end
if added then
  table.sort(log_rows, by_time)
  rewrite(buys, tail(log_rows, log_cap))
end
-- purchases: the latest of both, gone when a cancel of either came at or after it
local items = {}
for item in pairs(c.purchases) do items[item] = true end
for item in pairs(c.cancels) do items[item] = true end
for item in pairs(items) do
  local mine = redis.call('HGET', purchases, item)
  local best, text = -math.huge, nil
  if mine then best, text = tonumber(mine), mine end
  local theirs = c.purchases[item]
  if theirs and tonumber(theirs) > best then best, text = tonumber(theirs), theirs end
  if text then
    local cancel = math.max(c.cancels[item] or -math.huge, u_cancels[item] or -math.huge)
    if cancel >= best then redis.call('HDEL', purchases, item)
    else redis.call('HSET', purchases, item, text) end
  end
end
-- cart: the user's loses what the anonymous visitor removed or bought later; the anonymous cart's net
-- adds since the user's last purchase join it
for item, t in pairs(c.ends) do
  local mine = redis.call('HGET', cart, item)
  if mine and tonumber(mine) <= t then redis.call('HDEL', cart, item) end
end
local cart_carried = {}
for item, ts in pairs(c.cart) do
  local t = tonumber(ts)
  if t > last_purchase and (u_ends[item] or -math.huge) < t then
    local mine = redis.call('HGET', cart, item)
    if not mine or tonumber(mine) <= t then redis.call('HSET', cart, item, ts) end
    cart_carried[#cart_carried + 1] = item
  end
end
-- stream references ("<ms>.<token>.<shard>"): both lists, once each, in time order
if #c.sids > 0 then
  local seen, all = {}, {}
  for _, list in ipairs({redis.call('LRANGE', sids, 0, -1), c.sids}) do
    for _, ref in ipairs(list) do
      if not seen[ref] then
        seen[ref] = true
        all[#all + 1] = {tonumber(string.match(ref, '^(%d+)')), #all + 1, ref}
      end
    end
  end
  table.sort(all, by_time)
  rewrite(sids, tail(all, #all))
end
for _, pair in ipairs(c.sent) do
  local campaign, members = pair[1], pair[2]
  for i = 1, #members, 1000 do
    redis.call('SADD', base .. ':sent:' .. campaign, unpack(members, i, math.min(i + 999, #members)))
  end
  redis.call('SADD', campaigns, campaign)
end
touch(keys_at(1), base, ttl)
return {carried, cart_carried}
"""
)


def _hex(text: str) -> str:
    return text.encode("utf-8").hex()


#: A pool hands out an idle connection only after checking that the server has not closed it (a restart
#: closes them all), and reconnects it if it has: redis-py skips that check while maintenance notifications
#: are on, which its default (``"auto"``) turns on, and the first command on each such connection fails.
#: Those notifications come from managed Redis offerings, not from a self-hosted server.
NO_MAINT_NOTIFICATIONS = MaintNotificationsConfig(enabled=False)


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
    if isinstance(e, RedisClusterException) and "connect" in str(e):
        return StoreFailure.CONNECTION  # no seed node reachable
    return StoreFailure.ERROR


def _raised_in_redis_io(e: BaseException) -> bool:
    """Whether ``e`` came out of redis-py's connection I/O: raised in redis-py's own code or in the event
    loop's transport under it. Writing on a connection the peer (a master that went away and came back)
    has closed raises there what the transport happens to raise (TypeError or AttributeError from asyncio's,
    redis/redis-py#4287; RuntimeError "the handler is closed" from uvloop's) instead of ConnectionError: a
    failed connection like any other. Raised in any other code, it is a bug and stays one."""
    packages: list[tuple[str, ...]] = []
    tb = e.__traceback__
    while tb is not None:
        packages.append(Path(tb.tb_frame.f_code.co_filename).parts[-3:-1])
        tb = tb.tb_next
    return (
        bool(packages)
        and any(_REDIS_IO in p for p in packages)
        and any(name in packages[-1] for name in (_REDIS_IO, *_TRANSPORTS))
    )


_REDIS_IO = "redis"  # redis-py's package directory
_TRANSPORTS = ("asyncio", "uvloop")  # the event loops' directories (asyncio: redis.asyncio's too)


@contextmanager
def unavailable(what: str, store: str = "visitor store") -> Iterator[None]:
    """Redis failures -> ``StoreBusyError`` (no free pool connection) or ``StoreDownError`` (with its cause),
    with a message fit for an HTTP client (no host, no URL); the cause is logged and chained."""
    try:
        yield
    except (PoolExhaustedError, MaxConnectionsError) as e:
        log.info("redis %s: no free connection: %s", what, e)
        raise StoreBusyError(
            f"the {store} is busy ({what}: no free connection in this worker); retry later"
        ) from e
    except Exception as e:
        if not isinstance(e, RedisError | RedisClusterException | OSError) and not _raised_in_redis_io(e):
            raise  # a bug of ours, not a failed connection
        metrics.STORE_ERRORS.inc()  # the one place store failures (every Redis store) are counted
        # info, not warning: the caller reports the failure (HTTP handlers log a warning; the CLI one line)
        log.info("redis %s failed: %s: %s", what, type(e).__name__, e)
        raise StoreDownError(
            f"the {store} is unavailable ({what}: {type(e).__name__}); retry later", _failure(e)
        ) from e


class RedisStore(StoreLimits):
    """VisitorStore on Redis (``redis.asyncio``; see the module docstring for the key layout)."""

    def __init__(
        self,
        client: Redis | RedisCluster,
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
        self.cluster = isinstance(client, RedisCluster)
        self.prefix = prefix
        self.shard_maxlen = -(-stream_maxlen // STREAM_SHARDS)
        self._append_all = client.register_script(_APPEND_ALL)
        self._append = client.register_script(_APPEND)
        self._xadd = client.register_script(_XADD)
        self._unstream_script = client.register_script(_UNSTREAM)
        self._confirm = client.register_script(_CONFIRM)
        self._refs = client.register_script(_REFS)
        self._mark_sent = client.register_script(_MARK_SENT)
        self._erase = client.register_script(_ERASE)
        self._read = client.register_script(_READ)
        self._claim = client.register_script(_CLAIM)
        self._alias = client.register_script(_ALIAS)
        self._snapshot = client.register_script(_SNAPSHOT)
        self._clear = client.register_script(_CLEAR)
        self._merge = client.register_script(_MERGE)
        self._scripts = [self._append_all, self._append, self._xadd, self._unstream_script, self._confirm]
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

        A single server's pool blocks: beyond ``max_connections`` commands in flight a command waits up to
        ``socket_timeout`` for a free connection and then fails with ``StoreBusyError`` (redis-py's default
        pool fails at once with "Too many connections"). The service sizes the pool from the requests it
        admits at once (``service.store.factory.pool_size``), so that wait stays empty. A cluster URL
        (``service.store.redis_url``) gives redis-py's ``RedisCluster``: ``max_connections`` per master,
        and a command beyond them fails at once with ``StoreBusyError``.
        """
        limits = {
            "visitor_ttl": visitor_ttl,
            "recent_events": recent_events,
            "stream_maxlen": stream_maxlen,
            "purchase_log": purchase_log,
        }
        if is_cluster_url(url):
            return cls(cluster_client(url, socket_timeout, max_connections), prefix=prefix, **limits)
        pool = AdmissionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=socket_timeout,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            # no automatic retries: see the module docstring
            retry=Retry(NoBackoff(), 0),
            maint_notifications_config=NO_MAINT_NOTIFICATIONS,
        )
        return cls(Redis.from_pool(pool), prefix=prefix, **limits)

    @property
    def client(self) -> AnyRedis:
        """The Redis client, shared with the stores beside this one (rules, live catalog, experiments,
        fleet, feedback, journey analytics): a ``Redis`` on one server's pool, or on a cluster URL a
        ``GatedCluster``."""
        return self._r

    @property
    def max_connections(self) -> int:
        """Connections this store's pool opens at most (per master on a cluster)."""
        if isinstance(self._r, Redis):
            return int(self._r.connection_pool.max_connections)
        return self._r.places if isinstance(self._r, GatedCluster) else MAX_CONNECTIONS

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

    def shard_of(self, visitor_id: str) -> int:
        """The stream shard of the visitor's events (0 .. ``STREAM_SHARDS`` - 1)."""
        return zlib.crc32(visitor_id.encode("utf-8")) % STREAM_SHARDS

    def shard_keys(self, shard: int) -> list[str]:
        """``P:{s:n}:stream``, ``P:{s:n}:refs``, ``P:{s:n}:reftimes``: the keys of one stream shard."""
        base = f"{self.prefix}:{{s:{shard}}}"
        return [f"{base}:stream", f"{base}:refs", f"{base}:reftimes"]

    async def _batch(self, what: str, commands: Sequence[Sequence[resp.Arg]]) -> list[Any]:
        """Each command's reply, in one round trip per server; raises the first error (as
        ``StoreUnavailableError``). Commands are ``evalsha`` of this store's scripts or plain reads."""
        with unavailable(what):
            return await run_commands(self._r, commands, self._scripts)

    # -- VisitorStore -------------------------------------------------------------------------------------

    async def ping(self) -> bool:
        """True when the server (every master of a cluster) answers."""
        try:
            if isinstance(self._r, RedisCluster):
                replies = await self._r.ping(target_nodes=RedisCluster.PRIMARIES)
                return bool(replies) and all(replies.values() if isinstance(replies, dict) else [replies])
            return bool(await self._r.ping())
        except (RedisError, RedisClusterException, OSError):
            return False

    async def append(self, events: list[Event]) -> AppendResult:
        total = AppendResult(0, 0)
        for start in range(0, len(events), APPEND_CHUNK):
            try:
                total = total.plus(await self._append_chunk(events[start : start + APPEND_CHUNK]))
            except StoreUnavailableError as e:
                if total.accepted or total.duplicates:
                    # earlier chunks are stored: say so; a retry with the same event ids skips them
                    e.args = (f"{e} (the first {start} of {len(events)} events were stored)",)
                raise
        return total

    async def _append_chunk(self, events: Sequence[Event]) -> AppendResult:
        """The events stored (module docstring: one ``_APPEND_ALL`` on a single server, the three steps on a
        cluster); the events of linked anonymous ids that it hands back are stored under their users the
        same way."""
        result = AppendResult(0, 0)
        for hop in range(MAX_HOPS + 1):
            groups = _by_visitor(events)
            # the head of this call's stream references (module docstring)
            head = f"{int(time.time() * 1000)}.{secrets.token_hex(REF_BYTES)}"
            store = self._store_steps if self.cluster else self._store_all
            stored, users = await store(groups, head)
            result = result.plus(stored)
            if not users:
                return result
            events = [_readdressed(e, users[e.visitor_id]) for e in events if e.visitor_id in users]
            result = result.plus(AppendResult(0, 0, len(events) if hop == 0 else 0, users))
        raise IdentityConflictError(f"visitor ids linked in a chain longer than {MAX_HOPS}: {sorted(users)}")

    async def _store_all(
        self, groups: dict[str, list[Event]], head: str
    ) -> tuple[AppendResult, dict[str, str]]:
        """A single server: every visitor group in one ``_APPEND_ALL`` call (layout above the script).
        Returns what it stored and the user of each visitor that is an alias (its events not stored)."""
        keys: list[str] = []
        args = [
            str(self.visitor_ttl),
            str(self.recent_events),
            str(self.purchase_log),
            head,
            str(self.shard_maxlen),
            self.prefix,
        ]
        for v, group in groups.items():
            base = self.visitor_base(v)
            keys.append(f"{base}:events")
            args += [base, str(self.shard_of(v)), str(len(group))]
            args += self._event_args(group)
        (reply,) = await self._batch("append", [resp.evalsha(self._append_all, keys, args)])
        # the script numbers the visitor groups in order (of first appearance in the batch)
        visitors = list(groups)
        pairs = zip(reply[2][::2], reply[2][1::2], strict=True)
        users = {visitors[int(g) - 1]: user.decode() for g, user in pairs}
        persons = {
            visitors[int(g) - 1]: p.decode() for g, p in zip(reply[3][::2], reply[3][1::2], strict=True)
        }
        return AppendResult(int(reply[0]), int(reply[1]), persons=persons), users

    async def _store_steps(
        self, groups: dict[str, list[Event]], head: str
    ) -> tuple[AppendResult, dict[str, str]]:
        """A cluster: one ``_APPEND`` per visitor (in one round trip), then their pending entries into the
        stream shards (``_to_stream``). Returns what it stored and the user of each visitor that is an
        alias (its events not stored)."""
        ttl, recent, log_cap = str(self.visitor_ttl), str(self.recent_events), str(self.purchase_log)
        calls, at = [], 0
        for v, group in groups.items():
            base = self.visitor_base(v)
            args = [
                ttl,
                recent,
                log_cap,
                head,
                base,
                str(self.shard_of(v)),
                str(at),
                *self._event_args(group),
            ]
            calls.append(resp.evalsha(self._append, [f"{base}:events"], args))
            at += len(group)
        replies = await self._batch("append", calls)
        users: dict[str, str] = {}
        persons: dict[str, str] = {}
        pending: dict[str, list[str]] = {}
        accepted = duplicates = 0
        for v, reply in zip(groups, replies, strict=True):
            accepted += reply[0]
            duplicates += reply[1]
            if reply[2]:
                users[v] = reply[2].decode()
            if reply[3]:
                pending[v] = [x.decode() for x in reply[3]]
            if reply[4]:
                persons[v] = reply[4].decode()
        await self._to_stream(pending)
        return AppendResult(accepted, duplicates, persons=persons), users

    def _event_args(self, events: Sequence[Event]) -> list[str]:
        """The 6 script arguments of each of one visitor's events (``_APPLY``): all text, which
        ``service.store.resp`` packs fastest."""
        encode = self._encode
        args: list[str] = []
        for e in events:
            args += [
                e.event.value,
                e.item_id,
                repr(float(e.timestamp)),  # shortest exact text: Lua compares it, Redis stores it as is
                "-" if e.event_id is None else "+" + e.event_id,
                encode(e).decode(),
                _CHANNEL_TEXT[e.channel],
            ]
        return args

    async def _to_stream(self, pending: dict[str, list[str]]) -> None:
        """The second and third steps: each visitor's pending entries (reference, json, ...) into its shard
        (one ``_XADD`` per shard), then, once every shard has them, off the visitors' pending lists. A
        visitor's references all name its own shard (``_append_call``)."""
        if not pending:
            return
        by_shard: dict[int, list[str]] = {}
        for v, pairs in pending.items():
            by_shard.setdefault(self.shard_of(v), []).extend(pairs)
        ttl, maxlen = str(self.visitor_ttl), str(self.shard_maxlen)
        xadds = [resp.evalsha(self._xadd, self.shard_keys(n), [ttl, maxlen, *p]) for n, p in by_shard.items()]
        await self._batch("append", xadds)
        confirms = [
            resp.evalsha(self._confirm, [f"{self.visitor_base(v)}:pending"], [ttl, *pairs[::2]])
            for v, pairs in pending.items()
        ]
        await self._batch("append", confirms)

    async def visitor(self, visitor_id: str, campaign: str | None = None) -> VisitorState:
        for _ in range(MAX_HOPS + 1):
            replies = await self._read_one(visitor_id, campaign)
            if not isinstance(replies, bytes):
                break
            visitor_id = replies.decode()  # a linked anonymous id: read its user
        else:
            raise IdentityConflictError(
                f"visitor id {visitor_id!r} is linked in a chain longer than {MAX_HOPS}"
            )
        return VisitorState(
            visitor_id=visitor_id,
            # the stored events are JSON objects: one decoder call over them as a JSON array
            events=self._decode_list(b"[" + b",".join(replies[0]) + b"]"),
            cart=_float_pairs(replies[1]),
            purchases=_float_pairs(replies[2]),
            sent=frozenset(m.decode() for m in replies[5]) if campaign is not None else frozenset(),
            purchase_log=[_logged(visitor_id, raw) for raw in replies[3]],
            person=replies[4].decode() if replies[4] is not None else visitor_id,
        )

    async def _read_one(self, visitor_id: str, campaign: str | None) -> Any:
        """The ``_READ`` reply for one visitor id: its state, or (bytes) the user id it is linked to."""
        every = self.visitor_keys(visitor_id)
        keys = [*every[:3], every[6], every[8], every[9]]  # events, cart, purchases, buys, alias, person
        if campaign is not None:
            keys.append(self.sent_key(visitor_id, campaign))
        with unavailable("read visitor"):
            try:
                return await self._read(keys=keys)
            except (RedisTimeoutError, TimeoutError):
                # A reply that waited behind a busy event loop (a burst of admitted requests) times out like
                # a hung server. The read changes nothing, so it is asked once more, on a fresh connection:
                # only a second timeout makes the store count as down (and the answer a fallback).
                metrics.STORE_READ_RETRIES.inc()
                return await self._read(keys=keys)

    async def mark_sent(self, visitor_id: str, campaign: str, item_ids: list[str]) -> None:
        if not item_ids:
            return
        for _ in range(MAX_HOPS + 1):
            keys = [*self.visitor_keys(visitor_id), self.sent_key(visitor_id, campaign)]
            args = [str(self.visitor_ttl), self.visitor_base(visitor_id), _hex(campaign), *item_ids]
            with unavailable("mark sent"):
                reply = await self._mark_sent(keys=keys, args=args)
            if not isinstance(reply, bytes):
                return
            visitor_id = reply.decode()  # a linked anonymous id: the sends are its user's

    async def erase(self, visitor_id: str) -> int:
        # the anonymous ids still linked to this user first (a failure leaves the set for a retry)
        removed = 0
        for anon in await self.linked(visitor_id):
            removed += (await self._erase_one(anon, expected_alias=visitor_id))[0]
        n, alias = await self._erase_one(visitor_id)
        if alias is not None:  # an erased anonymous id is no longer linked to its user
            with unavailable("erase"):
                await self._r.srem(self.visitor_keys(alias)[7], visitor_id)
        return removed + n

    async def _erase_one(self, visitor_id: str, expected_alias: str = "") -> tuple[int, str | None]:
        """The visitor's stream entries first (so that a failure leaves the references for a retry), then
        its keys; entries a concurrent append added meanwhile are deleted after."""
        keys = self.visitor_keys(visitor_id)
        with unavailable("erase"):
            refs: Any = await self._refs(keys=[keys[4], keys[11], keys[8]], args=[expected_alias])
        if refs is None:
            return 0, None
        seen = {r.decode() for r in refs}
        entries = await self._unstream(seen)
        args = [str(self.visitor_ttl), self.visitor_base(visitor_id), expected_alias]
        with unavailable("erase"):
            removed, alias, late = await self._erase(keys=keys, args=args)
        entries += await self._unstream({r.decode() for r in late} - seen)
        return int(removed) + entries, alias.decode() if alias else None

    async def _unstream(self, refs: set[str]) -> int:
        """Delete the entries of ``refs`` from their shards; returns how many were deleted."""
        by_shard: dict[int, list[str]] = {}
        for ref in sorted(refs):
            by_shard.setdefault(_shard_of_ref(ref), []).append(ref)
        calls = [resp.evalsha(self._unstream_script, self.shard_keys(n), r) for n, r in by_shard.items()]
        replies = await self._batch("erase", calls)
        return sum(int(x) for x in replies)

    async def linked(self, visitor_id: str) -> list[str]:
        with unavailable("linked"):
            ids: Any = await self._r.smembers(self.visitor_keys(visitor_id)[7])
        return sorted(i.decode() for i in ids)

    async def resolve(self, visitor_id: str) -> str:
        return (await self.resolve_many([visitor_id])).get(visitor_id, visitor_id)

    async def resolve_many(self, visitor_ids: list[str]) -> dict[str, str]:
        distinct = list(dict.fromkeys(visitor_ids))
        if not distinct:
            return {}
        # one pipelined GET per id (not MGET: the aliases live in as many slots as there are visitors)
        async with self._r.pipeline(transaction=False) as pipe:
            for v in distinct:
                pipe.get(self.visitor_keys(v)[8])
            with unavailable("resolve"):
                users: list[bytes | None] = await pipe.execute()
        return {v: u.decode() for v, u in zip(distinct, users, strict=True) if u is not None}

    async def persons_of(self, visitor_ids: list[str]) -> dict[str, str]:
        distinct = list(dict.fromkeys(visitor_ids))
        # each id's alias and person (one slot: MGET), then the person of each user an alias names
        replies = await self._pipelined("persons", [self.visitor_keys(v)[8:10] for v in distinct])
        users = {v: a.decode() for v, (a, _) in zip(distinct, replies, strict=True) if a is not None}
        found = {v: p.decode() for v, (a, p) in zip(distinct, replies, strict=True) if a is None and p}
        named = list(dict.fromkeys(users.values()))
        replies = await self._pipelined("persons", [self.visitor_keys(u)[8:10] for u in named])
        person_of_user = {u: p.decode() if p else u for u, (_, p) in zip(named, replies, strict=True)}
        found.update({v: person_of_user[u] for v, u in users.items()})
        return {v: p for v, p in found.items() if p != v}

    async def _pipelined(self, what: str, mgets: list[list[str]]) -> list[list[bytes | None]]:
        """One MGET per key group (each group in one slot), pipelined in one round trip."""
        if not mgets:
            return []
        async with self._r.pipeline(transaction=False) as pipe:
            for keys in mgets:
                pipe.execute_command("MGET", *keys)  # the cluster pipeline refuses pipe.mget
            with unavailable(what):
                return list(await pipe.execute())

    async def link(self, anonymous_id: str, user_id: str, *, force: bool = False) -> LinkResult:
        return await identity.link(self, anonymous_id, user_id, force=force)

    # -- the steps of a link (service.store.identity) ---------------------------------------------------

    async def link_claim(self, user_id: str, anonymous_id: str) -> tuple[bool, str | None]:
        keys = self.visitor_keys(user_id)
        with unavailable("link"):
            ok, value = await self._claim(keys=[keys[7], keys[8]], args=[anonymous_id, str(self.visitor_ttl)])
        return (bool(value), None) if int(ok) else (False, value.decode())

    async def link_unclaim(self, user_id: str, anonymous_id: str) -> None:
        with unavailable("link"):
            await self._r.srem(self.visitor_keys(user_id)[7], anonymous_id)

    async def link_alias(self, anonymous_id: str, user_id: str, force: bool) -> tuple[str, str | None]:
        keys = self.visitor_keys(anonymous_id)
        args = [user_id, "1" if force else "0", str(self.visitor_ttl)]
        with unavailable("link"):
            reply: list[bytes] = await self._alias(keys=[keys[7], keys[8]], args=args)
        return reply[0].decode(), reply[1].decode() if len(reply) > 1 else None

    async def link_snapshot(self, anonymous_id: str) -> Snapshot:
        with unavailable("link"):
            r: list[Any] = await self._snapshot(
                keys=self.visitor_keys(anonymous_id), args=[self.visitor_base(anonymous_id)]
            )
        events, cart, purchases, ids, sids, buys, sent, person = r
        return Snapshot(
            events=self._decode_list(b"[" + b",".join(events) + b"]"),
            cart=_float_pairs(cart),
            purchases=_float_pairs(purchases),
            ids=[i.decode() for i in ids],
            sids=[i.decode() for i in sids],
            purchase_log=[_logged(anonymous_id, raw) for raw in buys],
            sent={
                bytes.fromhex(c.decode()).decode(): sorted(m.decode() for m in members)
                for c, members in zip(sent[::2], sent[1::2], strict=True)
            },
            person=person.decode() if person is not None else None,
        )

    async def link_merge(self, user_id: str, contribution: Contribution) -> MergeOutcome:
        args: list[str | bytes] = [
            str(self.visitor_ttl),
            str(self.recent_events),
            str(self.purchase_log),
            self.visitor_base(user_id),
            _merge_payload(contribution, self._encode),
        ]
        with unavailable("link"):
            carried, cart = await self._merge(keys=self.visitor_keys(user_id), args=args)
        return MergeOutcome(int(carried), sorted(i.decode() for i in cart))

    async def link_clear(self, anonymous_id: str) -> None:
        with unavailable("link"):
            await self._clear(keys=self.visitor_keys(anonymous_id), args=[self.visitor_base(anonymous_id)])

    async def read_stream(self, after: str, count: int) -> list[StreamEntry]:
        """Every shard's entries after ``after``, merged by store entry id (module docstring). Each shard is
        asked for a share of ``count`` at first, and a shard for more only while the merge needs it: an
        entry is in the answer once every shard not read to its end has been read beyond it."""
        ms, seq = parse_after(after)
        check_count(count)
        horizon = None if self.cluster else await self._settled_horizon()
        floor = (max(int(time.time() * 1000) - self.visitor_ttl * 1000, 0), 0)
        # shard -> the first id to read next; a shard leaves once read to its end
        starts: dict[int, tuple[int, int]] = {}
        for n in range(STREAM_SHARDS):
            start = max(_shard_start((ms, seq), n), floor)
            if start[0] <= _MAX_U64:  # else nothing can follow the largest id
                starts[n] = start
        rows: list[tuple[tuple[int, int], Any]] = []
        bound: dict[int, tuple[int, int]] = {}  # open shard -> store id of the last entry read from it
        page = min(count, max(2 * -(-count // STREAM_SHARDS), 16))
        want = list(starts)
        while want:
            calls = [
                ["XRANGE", self.shard_keys(n)[0], format_id(starts[n]), "+", "COUNT", str(page)] for n in want
            ]
            for n, reply in zip(want, await self._batch("read stream", calls), strict=True):
                got = [(_global_id(sid, n), fields) for sid, fields in reply or ()]
                rows += got
                if len(got) < page:
                    del starts[n]
                    bound.pop(n, None)
                else:
                    last = _shard_id(got[-1][0])
                    starts[n] = (last[0], last[1] + 1) if last[1] < _MAX_U64 else (last[0] + 1, 0)
                    bound[n] = got[-1][0]
            limit = min(bound.values(), default=None)
            settled = sum(1 for gid, _ in rows if limit is None or gid <= limit)
            if settled >= count or limit is None:
                break
            want = [n for n, last in bound.items() if last == limit]  # the shards holding the merge back
            page = min(2 * page, count)
        limit = min(bound.values(), default=None)
        rows = [
            r for r in rows if (limit is None or r[0] <= limit) and (horizon is None or r[0][0] < horizon)
        ]
        rows.sort(key=lambda row: row[0])
        return [
            StreamEntry(entry_id=format_id(gid), event=self._decode(_field(fields)))
            for gid, fields in rows[:count]
        ]

    async def _settled_horizon(self) -> int:
        """One server: the millisecond below which no stream entry can be added any more (module
        docstring): the server clock's millisecond when the read starts, once the clock has passed it."""
        with unavailable("read stream"):
            start = _ms(await self._r.time())
            while _ms(await self._r.time()) <= start:
                await asyncio.sleep(0.0005)
        return start + 1

    async def recent_visitors(self, limit: int, scan: int) -> list[str]:
        """The newest entries of every shard, merged newest first by entry id."""
        seen: dict[str, None] = {}
        floor = format_id((max(int(time.time() * 1000) - self.visitor_ttl * 1000, 0), 0))
        tops = dict.fromkeys(range(STREAM_SHARDS), "+")  # shard -> where its next page ends (open shards)
        heads: dict[int, list[Any]] = {}  # shard -> its fetched entries not merged yet, newest first
        read = 0
        while read < scan and len(seen) < limit:
            page = min(RECENT_PAGE, scan - read)
            want = [n for n in tops if not heads.get(n)]
            if want:
                calls = [
                    ["XREVRANGE", self.shard_keys(n)[0], tops[n], floor, "COUNT", str(page)] for n in want
                ]
                for n, reply in zip(want, await self._batch("read recent visitors", calls), strict=True):
                    rows = [(_global_id(sid, n), fields) for sid, fields in reply or ()]
                    if len(rows) < page:
                        del tops[n]  # exhausted after these
                    else:
                        tops[n] = f"({(rows[-1][0][0])}-{_shard_seq(rows[-1][0][1])}"
                    heads[n] = rows
            live = [n for n, rows in heads.items() if rows]
            if not live:
                break
            n = max(live, key=lambda s: heads[s][0][0])
            _gid, fields = heads[n].pop(0)
            read += 1
            seen.setdefault(self._decode(_field(fields)).visitor_id)
        return list(seen)[:limit]

    async def close(self) -> None:
        """Close the connection pool; never raises (a dead server has nothing left to close)."""
        try:
            await self._r.aclose()
        except (RedisError, OSError) as e:
            log.debug("closing the redis client: %s", e)


_LOGGED = {b"p": EventType.PURCHASE, b"c": EventType.CANCEL}
_CHANNEL_TEXT = {c: str(trail.channel_code(c)) for c in (None, *trail.CHANNELS)}


def _merge_payload(c: Contribution, encode: Callable[[Any], bytes]) -> bytes:
    """The contribution as ``_MERGE`` reads it (cjson): times that are stored go as their exact text
    (``repr``, as ``append`` stores them), times that are only compared as numbers."""
    return msgspec.json.encode(
        {
            "events": [(mid, repr(float(e.timestamp)), encode(e).decode()) for mid, e in c.events],
            "ids": c.ids,
            "cart": {item: repr(float(t)) for item, t in c.cart.items()},
            "ends": c.ends,
            "purchases": {item: repr(float(t)) for item, t in c.purchases.items()},
            "cancels": c.cancels,
            "buys": [f"{e.event.value[0]}|{float(e.timestamp)!r}|{e.item_id}" for e in c.purchase_log],
            "sids": c.sids,
            "sent": [(_hex(campaign), items) for campaign, items in c.sent.items()],
            "person": c.person,
        }
    )


def _by_visitor(events: Sequence[Event]) -> dict[str, list[Event]]:
    """The events of each visitor, in batch order; visitors in order of first appearance."""
    groups: dict[str, list[Event]] = {}
    for e in events:
        groups.setdefault(e.visitor_id, []).append(e)
    return groups


def _shard_of_ref(ref: str) -> int:
    """The shard of a stream reference ``<ms>.<token>.<shard>``."""
    return int(ref.rsplit(".", 1)[1])


def _global_id(sid: bytes | str, shard: int) -> tuple[int, int]:
    """A shard's entry id ``ms-seq`` as the store's entry id: ``(ms, seq * STREAM_SHARDS + shard)``."""
    text = sid.decode() if isinstance(sid, bytes) else sid
    ms, _, seq = text.partition("-")
    return int(ms), int(seq) * STREAM_SHARDS + shard


def _shard_seq(global_seq: int) -> int:
    return global_seq // STREAM_SHARDS


def _shard_id(gid: tuple[int, int]) -> tuple[int, int]:
    """A store entry id as its shard's own entry id."""
    return gid[0], gid[1] // STREAM_SHARDS


def _shard_start(after: tuple[int, int], shard: int) -> tuple[int, int]:
    """The first id of ``shard``'s stream whose store id comes after ``after`` (inclusive bound)."""
    ms, seq = after
    q = (seq - shard) // STREAM_SHARDS + 1
    return (ms, q) if q <= _MAX_U64 else (ms + 1, 0)


def _field(fields: Any) -> bytes:
    """The ``e`` field of a stream entry: a flat [name, value, ...] list (packed replies) or a dict."""
    if isinstance(fields, dict):
        return cast("bytes", fields[b"e"])
    return cast("bytes", fields[fields.index(b"e") + 1])


async def run_commands(
    client: AnyRedis, commands: Sequence[Sequence[resp.Arg]], scripts: Sequence[AsyncScript]
) -> list[Any]:
    """Each command's reply, in one round trip per server; raises the first error reply. Commands refused
    because a script of ``scripts`` was not loaded run again once it is. One server: ``resp.run`` (packed
    here, on a pooled connection); a cluster: ``_cluster_batch``."""
    if isinstance(client, RedisCluster):
        return await _cluster_batch(client, commands, scripts)
    return await resp.run(client, commands, scripts)


async def _cluster_batch(
    client: RedisCluster, commands: Sequence[Sequence[resp.Arg]], scripts: Sequence[AsyncScript]
) -> list[Any]:
    """``resp.run`` on a cluster: redis-py's cluster pipeline (one round trip per master, following
    ``MOVED``); commands refused for a script not loaded run again once the scripts are loaded on every
    master (a refused command did not run)."""

    async def run(cmds: Sequence[Sequence[resp.Arg]]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for cmd in cmds:
            pipe.execute_command(*cmd)
        return list(await pipe.execute(raise_on_error=False))

    if not commands:
        return []
    replies = await run(commands)
    missing = [i for i, r in enumerate(replies) if isinstance(r, NoScriptError)]
    if missing:
        for s in scripts:
            await client.script_load(s.script)
        for i, r in zip(missing, await run([commands[i] for i in missing]), strict=True):
            replies[i] = r
    for r in replies:
        if isinstance(r, BaseException):
            raise r
    return replies


class _ClosedAware:
    """A connection that counts as disconnected once the server has closed it (its reader at end of
    file, or its transport closing), so that the next command connects anew. The cluster client reuses a
    free connection without the check the single-server pool makes (``NO_MAINT_NOTIFICATIONS``): without
    this, the first command on each pooled connection of a master that restarted fails."""

    _reader: asyncio.StreamReader | None
    _writer: asyncio.StreamWriter | None

    @property
    def is_connected(self) -> bool:
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            return False
        return not (reader.at_eof() or writer.transport.is_closing())

    def _let_go(self) -> None:
        """Close a connection the server closed (redis-py's own ``disconnect`` skips one that is not
        ``is_connected``)."""
        if self._writer is not None and not self.is_connected:
            self._writer.close()
            self._reader = self._writer = None

    async def connect_check_health(self, *args: Any, **kwargs: Any) -> None:
        self._let_go()
        await super().connect_check_health(*args, **kwargs)  # type: ignore[misc]

    async def disconnect(self, *args: Any, **kwargs: Any) -> None:
        self._let_go()
        await super().disconnect(*args, **kwargs)  # type: ignore[misc]


class _CheckedConnection(_ClosedAware, Connection):
    pass


class _CheckedSSLConnection(_ClosedAware, SSLConnection):
    pass


_CHECKED: dict[type, type] = {Connection: _CheckedConnection, SSLConnection: _CheckedSSLConnection}

_HOLDING_PLACE: ContextVar[bool] = ContextVar("journeyrec_cluster_place", default=False)


class GatedCluster(RedisCluster):
    """redis-py's asyncio ``RedisCluster`` whose commands wait for one of ``max_connections`` places (up to
    ``wait`` seconds, then ``PoolExhaustedError``), as ``AdmissionPool`` does for one server: redis-py's
    cluster client fails at once when a master's connections are all in use. A command (or a pipeline:
    ``gate``) holds one place, so it never needs more than one connection per master."""

    def __init__(self, *, wait: float, max_connections: int, **kwargs: Any) -> None:
        super().__init__(max_connections=max_connections, **kwargs)
        # every node, those found later too, makes connections that notice a server closed them
        checked = _CHECKED.get(self.nodes_manager.connection_kwargs.get("connection_class", Connection))
        if checked is not None:
            self.nodes_manager.connection_kwargs["connection_class"] = checked
            for node in self.nodes_manager.startup_nodes.values():
                node.connection_class = checked
        self.places = max_connections
        self._places = asyncio.Semaphore(max_connections)
        self._wait = wait

    @asynccontextmanager
    async def gate(self) -> AsyncIterator[None]:
        if _HOLDING_PLACE.get():
            # a command the pipeline holding this task's place sends itself (after MOVED or ASK)
            yield
            return
        try:
            async with asyncio.timeout(self._wait):
                await self._places.acquire()
        except TimeoutError as e:
            raise PoolExhaustedError(f"all {self.places} places in use for {self._wait} s") from e
        token = _HOLDING_PLACE.set(True)
        try:
            yield
        finally:
            _HOLDING_PLACE.reset(token)
            self._places.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.gate():
            # a no-op once the client knows the slots; before that, redis-py (8.1) routes commands that
            # start together to the wrong masters, and the MOVED replies make it drop connections in use
            await self.initialize()
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        """A pipeline whose ``execute`` holds one place (a MULTI with ``transaction``: its keys must share
        one slot)."""
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused by redis-py
        return GatedPipeline(self, transaction)  # type: ignore[abstract]  # as redis-py makes its own


class GatedPipeline(ClusterPipeline):
    """redis-py's cluster pipeline of a ``GatedCluster``: ``execute`` waits for one of its places."""

    cluster_client: GatedCluster

    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        async with self.cluster_client.gate():
            await self.cluster_client.initialize()  # as GatedCluster.execute_command
            return await super().execute(raise_on_error, allow_redirections)


def cluster_client(url: str, socket_timeout: float, max_connections: int) -> GatedCluster:
    """redis-py's asyncio cluster client for a ``redis+cluster://`` URL (nothing connects until the first
    command). No automatic retries of a command (module docstring); ``MOVED`` and ``ASK`` are followed."""
    parsed = parse_cluster_url(url)
    return GatedCluster(
        wait=socket_timeout,
        startup_nodes=[ClusterNode(host, port) for host, port in parsed.nodes],
        ssl=parsed.ssl,
        username=parsed.username,
        password=parsed.password,
        max_connections=max_connections,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )


def client_from_url(url: str, *, socket_timeout: float) -> AnyRedis:
    """A client of its own for ``url`` (a store's own, or the rate limiter's): one server's (redis-py's
    pool) or a cluster's (``cluster_client``, ``MAX_CONNECTIONS`` per master). No automatic retries (module
    docstring); nothing connects until the first command."""
    if is_cluster_url(url):
        return cluster_client(url, socket_timeout, MAX_CONNECTIONS)
    return Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
        maint_notifications_config=NO_MAINT_NOTIFICATIONS,
    )


def _readdressed(e: Event, visitor_id: str) -> Event:
    return msgspec.structs.replace(e, visitor_id=visitor_id)


def _logged(visitor_id: str, raw: bytes) -> Event:
    """One purchase-log entry (``p|<ts>|<item_id>`` or ``c|...``; the item id may hold ``|``) as an event."""
    kind, ts, item = raw.split(b"|", 2)
    return Event(visitor_id=visitor_id, item_id=item.decode(), event=_LOGGED[kind], timestamp=float(ts))


def _ms(server_time: tuple[int, int]) -> int:
    """Milliseconds of a ``TIME`` reply (seconds, microseconds)."""
    return int(server_time[0]) * 1000 + int(server_time[1]) // 1000


def _float_pairs(flat: list[bytes]) -> dict[str, float]:
    """A hash as Lua's HGETALL returns it ([field, value, field, value, ...]) with float values."""
    return {k.decode(): float(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
