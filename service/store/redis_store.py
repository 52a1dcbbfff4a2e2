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
- ``P:{v:H}:linked``     set: anonymous ids linked to this visitor (a user), for the erase cascade
- ``P:{v:H}:alias``      string: the user id this anonymous id is linked to (``service.store.identity``)
- ``P:{v:H}:person``     string: the id experiments hash when it is not the visitor id
                         (``VisitorState.person``: set by a first login's merge)
- ``P:{v:H}:trail``      string: 10 bytes per entry of ``events``, in the same order: its time, event and
                         channel packed for the stage engine (``service.store.trail``)
- ``P:{v:H}:sent:C``     set: item ids campaign C already sent to the visitor
- ``P:stream``           stream: one entry per stored event, field ``e`` = the event's msgspec JSON

Every visitor key expires ``visitor_ttl`` seconds after the visitor's last write (``sids`` and ``linked``:
one second later, see below), so a visitor expires as a whole; a write refreshes the keys it writes, and
all of them when their last full refresh is older than the slack, min(``visitor_ttl`` / 100,
``TOUCH_SLACK_MAX``) seconds (an hour for the default 90 days): so the keys of a visitor that keeps
writing expire between ``visitor_ttl`` minus the slack and ``visitor_ttl`` after the last write, ``sids``
and ``linked`` exactly one second after it, and an append spends two ttl commands per visitor, not
eleven, on a visitor seen within the slack. An alias expires
``visitor_ttl`` seconds after the link or the last append that followed it. The stream has no
TTL (``volatile-*`` eviction would never evict it; ``allkeys-*`` eviction must not be used): it is capped
with ``XADD MAXLEN ~ stream_maxlen`` and trimmed of entries older than ``visitor_ttl`` (``XTRIM MINID``) on
every append and erase. That age limit is what lets ``erase`` find every stream entry of a visitor through
``sids``: an entry is at most ``visitor_ttl`` old, and the ``sids`` list that names it outlives it.

Identity: the append, read and mark-sent scripts look up the alias of each visitor they are given, in the
same atomic step: an aliased visitor's events are not stored but handed back, and stored under the user
by a second call (reads and sends likewise follow the alias). The link's steps are each one script over
one visitor's keys (``_CLAIM``, ``_ALIAS``, ``_SNAPSHOT``, ``_MERGE``, ``_CLEAR``): no script spans two
visitors.

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
from collections.abc import Callable, Iterator, Sequence
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

log = logging.getLogger("journeyrec.store")

RECENT_PAGE = 500  # stream entries per read of recent_visitors
APPEND_CHUNK = 1000  # events per script call: bounds how long one call holds the Redis server
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
)

# Shared Lua: a visitor's key names; refresh the ttl of one visitor's keys: all but the alias
# (which a visitor with state never has for long; it is refreshed on its own); `base` is "P:{v:H}". sids lives
# one second longer than the rest: the stream keeps an entry at most `ttl` seconds after it was added
# (XTRIM MINID), so while an entry exists the sids list naming it still exists. linked likewise outlives
# the aliases it names (an alias is refreshed just before the user's write that refreshes linked), so
# erasing the user finds every live alias.
_TOUCH = """
local VISITOR_KEYS = {VISITOR_KEY_NAMES}
-- the 11 keys of a visitor (_VISITOR_KEYS order, K[1] .. K[11]): from KEYS[k ..] or from the base "P:{v:H}"
local function keys_at(k)
  local K = {}
  for j = 1, 11 do K[j] = KEYS[k + j - 1] end
  return K
end
local function keys_of(base)
  local K = {}
  for j = 1, 11 do K[j] = base .. ':' .. VISITOR_KEYS[j] end
  return K
end
local function touch(K, base, ttl)
  for j = 1, 11 do
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

# KEYS[1] stream, then the events key of each visitor group (its slot; the script names the visitor's
# other keys from the group's base, in the same slot).
# ARGV: ttl, maxlen, recent, purchase_log, n_groups, base of each group, then 7 per event in batch order:
#       group, kind, item, ts (Python repr of the float), "+"..event_id or "-", json, channel code
#       (``service.store.trail.channel_code``)
# Returns {accepted, duplicates, {group, user id, ...}}: the events of a group whose visitor is an alias
# are not stored (nor counted); the caller stores them under the user. The alias's ttl is refreshed.
_APPEND = (
    _TOUCH
    + _TRAIL
    + """
local stream = KEYS[1]
local ttl, maxlen, recent, log_cap = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local ngroups = tonumber(ARGV[5])
local slack_ms = math.min(math.floor(ttl / 100), TOUCH_SLACK_MAX) * 1000
local now_ms, cutoff = now_and_cutoff(ttl)
redis.call('XTRIM', stream, 'MINID', cutoff)
-- per group: its keys, whether its visitor is an alias, trail rows stored, events list length, the keys
-- written ([index in K] = true), the purchase log's length
local K, redirect, redirected = {}, {}, {}
local stored, length, wrote, nbuys = {}, {}, {}, {}
for g = 1, ngroups do
  K[g] = keys_of(ARGV[5 + g])
  wrote[g] = {}
  local user = redis.call('GET', K[g][9])
  if user then
    redirect[g] = true
    redis.call('EXPIRE', K[g][9], ttl)
    redirected[#redirected + 1] = g
    redirected[#redirected + 1] = user
  end
end
local accepted, duplicates = 0, 0
for i = 6 + ngroups, #ARGV, 7 do
  local g = tonumber(ARGV[i])
  local k, w = K[g], wrote[g]
  local kind, item, ts, eid, json = ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  local new = not redirect[g]
  if new and string.sub(eid, 1, 1) == '+' then
    if not w[4] then
      -- event ids older than the ttl window are forgotten: a retry that late is a new event
      redis.call('ZREMRANGEBYSCORE', k[4], '-inf', '(' .. cutoff)
      w[4] = true
    end
    new = redis.call('ZADD', k[4], 'NX', now_ms, string.sub(eid, 2)) == 1
  end
  if new then
    local sid = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', json)
    redis.call('RPUSH', k[5], sid)
    local t = tonumber(ts)
    if kind == 'add_to_cart' then
      local old = redis.call('HGET', k[2], item)
      if not old or tonumber(old) <= t then
        redis.call('HSET', k[2], item, ts)
        w[2] = true
      end
    elseif kind == 'remove_from_cart' or kind == 'purchase' then
      local old = redis.call('HGET', k[2], item)
      if old and tonumber(old) <= t then redis.call('HDEL', k[2], item) end
      if kind == 'purchase' then
        local last = redis.call('HGET', k[3], item)
        if not last or tonumber(last) <= t then
          redis.call('HSET', k[3], item, ts)
          w[3] = true
        end
      end
    elseif kind == 'cancel' then
      local last = redis.call('HGET', k[3], item)
      if last and tonumber(last) <= t then redis.call('HDEL', k[3], item) end
    end
    if not length[g] then
      -- the group's first stored event: was the visitor's last full ttl refresh longer than the slack ago?
      if redis.call('PTTL', k[1]) < ttl * 1000 - slack_ms then w.full = true end
      stored[g] = {}
    end
    length[g] = redis.call('RPUSH', k[1], json)
    if kind == 'purchase' or kind == 'cancel' then
      nbuys[g] = redis.call('RPUSH', k[7], string.sub(kind, 1, 1) .. '|' .. ts .. '|' .. item)
      w[7] = true
    end
    local rows = stored[g]
    rows[#rows + 1] = struct.pack('<dBB', t, EVENT_CODE[kind], tonumber(ARGV[i + 6]))
    accepted = accepted + 1
  elseif not redirect[g] then
    duplicates = duplicates + 1
  end
end
for g = 1, ngroups do
  if stored[g] then
    local k, w = K[g], wrote[g]
    -- the trail keeps one row per entry of the events list (rebuilt from the list if it does not)
    local rows = redis.call('APPEND', k[11], table.concat(stored[g])) / TRAIL_ROW
    if length[g] > recent then redis.call('LTRIM', k[1], -recent, -1) end
    if rows ~= length[g] then
      rebuild_trail(k[1], k[11])
      w[11] = true
    elseif rows > recent then
      redis.call('SET', k[11], redis.call('GETRANGE', k[11], -recent * TRAIL_ROW, -1))
      w[11] = true
    elseif rows == #stored[g] then
      w[11] = true  -- created by this call
    end
    if nbuys[g] and nbuys[g] > log_cap then redis.call('LTRIM', k[7], -log_cap, -1) end
    if w.full then
      -- forget stream ids that XTRIM MINID has removed from the stream (they are in time order)
      while true do
        local head = redis.call('LINDEX', k[5], 0)
        if not head or tonumber(string.match(head, '^(%d+)')) >= cutoff then break end
        redis.call('LPOP', k[5])
      end
      touch(k, ARGV[5 + g], ttl)
    else
      -- refreshed in full less than the slack ago: only what must outlive the rest (sids, linked) and
      -- the keys this call wrote
      redis.call('EXPIRE', k[5], ttl + 1)
      redis.call('EXPIRE', k[8], ttl + 1)
      for j, _ in pairs(w) do
        if j ~= 'full' then redis.call('EXPIRE', k[j], ttl) end
      end
    end
  end
end
return {accepted, duplicates, redirected}
""".replace("TOUCH_SLACK_MAX", str(TOUCH_SLACK_MAX))
)

# KEYS: the 11 visitor keys, then the campaign's sent set. ARGV: ttl, base, C, item ids...
# Returns 1, or the user id of a linked anonymous id (nothing written: the caller sends to the user).
_MARK_SENT = (
    _TOUCH
    + """
local ttl = tonumber(ARGV[1])
local alias = redis.call('GET', KEYS[9])
if alias then return alias end
for i = 4, #ARGV, 1000 do
  redis.call('SADD', KEYS[12], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('SADD', KEYS[6], ARGV[3])
touch(keys_at(1), ARGV[2], ttl)
return 1
"""
)

# KEYS[1] stream, then the 11 visitor keys. ARGV: ttl, base, expected alias ("" = any). Returns {keys +
# stream entries removed, the alias the visitor had or nil}; nothing is removed when an alias is expected
# and the visitor's differs (an anonymous id moved to another user since the cascade read its user's set).
_ERASE = (
    _TOUCH
    + """
local stream = KEYS[1]
local ttl = tonumber(ARGV[1])
local alias = redis.call('GET', KEYS[10])
if ARGV[3] ~= '' and alias ~= ARGV[3] then return {0, false} end
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
removed = removed + redis.call('DEL', KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8],
                                KEYS[9], KEYS[10], KEYS[11])
redis.call('DEL', KEYS[12])  -- the trail: a packed copy of the events list, not counted on its own
return {removed, alias}
"""
)

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
-- stream ids: both lists are in stream order; merge them, once each
if #c.sids > 0 then
  local function key(sid)
    local ms, seq = string.match(sid, '^(%d+)-(%d+)$')
    return {tonumber(ms), tonumber(seq)}
  end
  local function less(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
  local mine, out, i, j = redis.call('LRANGE', sids, 0, -1), {}, 1, 1
  while i <= #mine or j <= #c.sids do
    local take
    if j > #c.sids then take = mine[i]; i = i + 1
    elseif i > #mine then take = c.sids[j]; j = j + 1
    else
      local a, b = key(mine[i]), key(c.sids[j])
      if less(a, b) then take = mine[i]; i = i + 1
      elseif less(b, a) then take = c.sids[j]; j = j + 1
      else take = mine[i]; i = i + 1; j = j + 1 end
    end
    if out[#out] ~= take then out[#out + 1] = take end
  end
  rewrite(sids, out)
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
        self._claim = client.register_script(_CLAIM)
        self._alias = client.register_script(_ALIAS)
        self._snapshot = client.register_script(_SNAPSHOT)
        self._clear = client.register_script(_CLEAR)
        self._merge = client.register_script(_MERGE)
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
        """One script call; the events of linked anonymous ids that it hands back are stored under their
        users by one more call."""
        result = AppendResult(0, 0)
        for hop in range(MAX_HOPS + 1):
            keys, args = self._append_call(events)
            with unavailable("append"):
                # packed here (``service.store.resp``): redis-py's packing of the thousands of arguments
                # of a batch cost more client time than the script's run
                (reply,) = await resp.run(self._r, [resp.evalsha(self._append, keys, args)], [self._append])
            result = result.plus(AppendResult(int(reply[0]), int(reply[1])))
            if not reply[2]:
                return result
            # the script numbers the visitor groups in order of first appearance in ``events``
            groups = list(dict.fromkeys(e.visitor_id for e in events))
            pairs = zip(reply[2][::2], reply[2][1::2], strict=True)
            users = {groups[int(g) - 1]: user.decode() for g, user in pairs}
            events = [_readdressed(e, users[e.visitor_id]) for e in events if e.visitor_id in users]
            result = result.plus(AppendResult(0, 0, len(events) if hop == 0 else 0, users))
        raise IdentityConflictError(f"visitor ids linked in a chain longer than {MAX_HOPS}: {sorted(users)}")

    def _append_call(self, events: Sequence[Event]) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of one append script call (layout above _APPEND): all text, which
        ``service.store.resp`` packs fastest."""
        groups: dict[str, int] = {}
        keys: list[str] = [self.stream_key]
        bases: list[str] = []
        per_event: list[str] = []
        encode = self._encode
        for e in events:
            g = groups.get(e.visitor_id)
            if g is None:
                g = groups[e.visitor_id] = len(groups) + 1
                base = self.visitor_base(e.visitor_id)
                keys.append(f"{base}:events")
                bases.append(base)
            per_event += [
                str(g),
                e.event.value,
                e.item_id,
                repr(float(e.timestamp)),  # shortest exact text: Lua compares it, Redis stores it as is
                "-" if e.event_id is None else "+" + e.event_id,
                encode(e).decode(),
                _CHANNEL_TEXT[e.channel],
            ]
        head = [
            str(self.visitor_ttl),
            str(self.stream_maxlen),
            str(self.recent_events),
            str(self.purchase_log),
            str(len(groups)),
        ]
        return keys, [*head, *bases, *per_event]

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
        keys = [self.stream_key, *self.visitor_keys(visitor_id)]
        args = [str(self.visitor_ttl), self.visitor_base(visitor_id), expected_alias]
        with unavailable("erase"):
            removed, alias = await self._erase(keys=keys, args=args)
        return int(removed), alias.decode() if alias is not None else None

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


def _readdressed(e: Event, visitor_id: str) -> Event:
    return msgspec.structs.replace(e, visitor_id=visitor_id)


def _logged(visitor_id: str, raw: bytes) -> Event:
    """One purchase-log entry (``p|<ts>|<item_id>`` or ``c|...``; the item id may hold ``|``) as an event."""
    kind, ts, item = raw.split(b"|", 2)
    return Event(visitor_id=visitor_id, item_id=item.decode(), event=_LOGGED[kind], timestamp=float(ts))


def _float_pairs(flat: list[bytes]) -> dict[str, float]:
    """A hash as Lua's HGETALL returns it ([field, value, field, value, ...]) with float values."""
    return {k.decode(): float(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}
