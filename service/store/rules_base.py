"""The merchandising rules store: the current rule set as one versioned document, and its audit list.

``RulesStore`` is the interface; ``service.store.rules_memory`` (one process) and
``service.store.rules_redis`` (shared by every worker) implement it and pass the same contract tests
(``tests/service/test_rules_store.py``).

Semantics
- Version 0 is "no rule set stored yet" (``current()`` is then an empty ``RuleSet`` of version 0).
- ``put(rules, who, expected)`` replaces the whole set. The new version is the stored one plus 1, written
  together with its audit entry in one atomic step, and only if the stored version is still the one the
  change was computed against: a change always describes what it replaced. With ``expected`` (the version
  the editor started from) a stored version other than that one is a ``RulesConflictError`` (HTTP 409),
  so two editors cannot overwrite each other; without it the change applies to whatever is current.
- Every change appends an ``AuditEntry`` (who, when, the new version, the rule ids added, removed and
  changed); the list keeps the newest ``audit_cap`` entries. ``audit(limit)`` answers newest first.
- ``version()`` is one cheap read: every worker polls it.
- A stored set that does not decode (``UnreadableRulesError``, HTTP 422) can still be replaced by a put.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from models.errors import DataError, JourneyrecError
from models.rules import Rule, RuleSet

#: audit entries kept (the newest)
AUDIT_CAP = 1000
#: how often an unconditional put computes its change again when other writers keep moving the version
PUT_ATTEMPTS = 10


class RulesConflictError(JourneyrecError):
    """The stored version is not the one the change was based on (HTTP 409)."""

    def __init__(self, message: str, current: int) -> None:
        super().__init__(message)
        self.current = current


class UnreadableRulesError(DataError):
    """The stored rule set does not decode as a ``RuleSet`` (written by a version of journeyrec whose
    rules this one does not accept). A put replaces it (its audit entry lists every rule as added)."""

    def __init__(self, message: str, version: int) -> None:
        super().__init__(message)
        self.version = version


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One change of the rule set.

    version  the version it created
    who      the name of the API key that made it (never the key), or where it came from (``rules-file``)
    at       POSIX seconds
    rules    how many rules the new version holds
    added / removed / changed  rule ids, sorted (changed: the same id with another definition)
    """

    version: int
    who: str
    at: float
    rules: int
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()


def summarise(old: RuleSet, new_rules: tuple[Rule, ...]) -> tuple[tuple[str, ...], ...]:
    """(added, removed, changed) rule ids, each sorted, from ``old`` to ``new_rules``."""
    before = {r.id: msgspec.json.encode(r) for r in old.rules}
    after = {r.id: msgspec.json.encode(r) for r in new_rules}
    added = tuple(sorted(after.keys() - before.keys()))
    removed = tuple(sorted(before.keys() - after.keys()))
    changed = tuple(sorted(i for i in after.keys() & before.keys() if after[i] != before[i]))
    return added, removed, changed


class RulesStore(Protocol):
    async def version(self) -> int:
        """The stored version (0: none); one cheap read."""
        ...

    async def current(self) -> RuleSet:
        """The stored rule set (version 0 and no rules when none is stored)."""
        ...

    async def put(self, rules: tuple[Rule, ...], who: str, expected: int | None = None) -> AuditEntry:
        """Store ``rules`` as the next version (module docstring); returns its audit entry. Raises
        ``RulesConflictError`` when ``expected`` is given and not the stored version."""
        ...

    async def audit(self, limit: int) -> list[AuditEntry]:
        """The newest ``limit`` audit entries, newest first."""
        ...

    async def close(self) -> None: ...


class RulesWriter:
    """The ``put`` both stores share: read, compute the change, commit it if the version did not move.
    Subclasses give ``current`` and ``_commit``."""

    def __init__(self, *, audit_cap: int = AUDIT_CAP, clock: Callable[[], float] = time.time) -> None:
        if audit_cap < 1:
            raise ValueError("audit_cap must be at least 1")
        self.audit_cap = audit_cap
        self._clock = clock

    async def current(self) -> RuleSet:
        raise NotImplementedError

    async def _commit(self, replaced: int, ruleset: RuleSet, entry: AuditEntry) -> int:
        """Store ``ruleset`` (version ``replaced + 1``) and ``entry`` if the stored version is ``replaced``;
        returns the stored version it found (``replaced`` on success)."""
        raise NotImplementedError

    async def put(self, rules: tuple[Rule, ...], who: str, expected: int | None = None) -> AuditEntry:
        for _ in range(PUT_ATTEMPTS):
            try:
                old = await self.current()
            except UnreadableRulesError as e:
                old = RuleSet(version=e.version)
            if expected is not None and old.version != expected:
                raise _conflict(expected, old.version)
            new = RuleSet(version=old.version + 1, rules=tuple(rules))
            added, removed, changed = summarise(old, new.rules)
            entry = AuditEntry(
                version=new.version,
                who=who,
                at=self._clock(),
                rules=len(new.rules),
                added=added,
                removed=removed,
                changed=changed,
            )
            found = await self._commit(old.version, new, entry)
            if found == old.version:
                return entry
            if expected is not None:
                raise _conflict(expected, found)
        raise RulesConflictError(
            f"rules: the rule set changed {PUT_ATTEMPTS} times while this change was being written; "
            "send it again",
            found,
        )


def _conflict(expected: int, current: int) -> RulesConflictError:
    return RulesConflictError(
        f"body field 'version': {expected} is not the current version {current}; another change came "
        f"first: GET /v1/rules, apply your change to version {current} and send it again",
        current,
    )
