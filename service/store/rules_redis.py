"""The Redis rules store, shared by every worker of every instance. Semantics in
``service.store.rules_base``.

Keys (``P`` the configured prefix; the hash tag ``{rules}`` puts both in one cluster slot, so the one
script that writes them is cluster-safe):

- ``P:{rules}:current``  hash: ``version`` (integer) and ``ruleset`` (the rule set's msgspec JSON)
- ``P:{rules}:audit``    list: audit entries as msgspec JSON, newest first, at most ``audit_cap``

A put is one Lua script: it checks the stored version, writes the next one with its document and pushes
and trims the audit entry, atomically. Neither key expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import msgspec

from models.rules import RuleSet
from service.store.redis_store import AnyRedis, unavailable
from service.store.rules_base import AUDIT_CAP, AuditEntry, RulesWriter, UnreadableRulesError

STORE = "rules store"

# KEYS: current, audit. ARGV: the version replaced, the new rule set's JSON, the audit entry's JSON, cap.
# Returns the stored version it found (the version replaced when it wrote).
_PUT = """
local found = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
if found ~= tonumber(ARGV[1]) then return found end
redis.call('HSET', KEYS[1], 'version', found + 1, 'ruleset', ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[4]) - 1)
return found
"""


class RedisRulesStore(RulesWriter):
    """RulesStore on Redis or a Redis Cluster (keys above); shares the visitor store's client and
    connection pool."""

    def __init__(
        self,
        client: AnyRedis,
        *,
        prefix: str,
        audit_cap: int = AUDIT_CAP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"redis key prefix {prefix!r} must be non-empty and without braces")
        super().__init__(audit_cap=audit_cap, clock=clock)
        self._r = client
        self.current_key = f"{prefix}:{{rules}}:current"
        self.audit_key = f"{prefix}:{{rules}}:audit"
        self._put = client.register_script(_PUT)
        self._decode_set = msgspec.json.Decoder(RuleSet).decode
        self._decode_entry = msgspec.json.Decoder(AuditEntry).decode

    async def version(self) -> int:
        with unavailable("read the rules version", STORE):
            raw: Any = await self._r.hget(self.current_key, "version")
        return int(raw) if raw is not None else 0

    async def current(self) -> RuleSet:
        with unavailable("read the rules", STORE):
            version, raw = await self._r.hmget(self.current_key, ["version", "ruleset"])
        if raw is None:
            return RuleSet(version=0)
        try:
            return self._decode_set(raw)
        except (msgspec.MsgspecError, ValueError) as e:
            raise UnreadableRulesError(
                f"the stored rule set (version {int(version or 0)}) does not decode: {e}; PUT a new one",
                int(version or 0),
            ) from None

    async def _commit(self, replaced: int, ruleset: RuleSet, entry: AuditEntry) -> int:
        keys = [self.current_key, self.audit_key]
        args: list[str | bytes] = [
            str(replaced),
            msgspec.json.encode(ruleset),
            msgspec.json.encode(entry),
            str(self.audit_cap),
        ]
        with unavailable("write the rules", STORE):
            found = await self._put(keys=keys, args=args)
        return int(found)

    async def audit(self, limit: int) -> list[AuditEntry]:
        if limit < 1:
            return []
        with unavailable("read the rules audit", STORE):
            rows: Any = await self._r.lrange(self.audit_key, 0, limit - 1)
        return [self._decode_entry(r) for r in rows]

    async def close(self) -> None:
        return None  # the client belongs to the visitor store, which closes it
