"""The embedded rules store: the rule set and its audit list in this process's memory (one process only,
lost on restart). Semantics in ``service.store.rules_base``; no method awaits while it reads or changes
state, so each is atomic with respect to the other coroutines of the event loop."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from models.rules import RuleSet
from service.store.rules_base import AUDIT_CAP, AuditEntry, RulesWriter


class MemoryRulesStore(RulesWriter):
    def __init__(self, *, audit_cap: int = AUDIT_CAP, clock: Callable[[], float] = time.time) -> None:
        super().__init__(audit_cap=audit_cap, clock=clock)
        self._ruleset = RuleSet(version=0)
        self._audit: deque[AuditEntry] = deque(maxlen=audit_cap)  # newest first

    async def version(self) -> int:
        return self._ruleset.version

    async def current(self) -> RuleSet:
        return self._ruleset

    async def _commit(self, replaced: int, ruleset: RuleSet, entry: AuditEntry) -> int:
        found = self._ruleset.version
        if found == replaced:
            self._ruleset = ruleset
            self._audit.appendleft(entry)
        return found

    async def audit(self, limit: int) -> list[AuditEntry]:
        return list(self._audit)[: max(limit, 0)]

    async def close(self) -> None:
        return None
