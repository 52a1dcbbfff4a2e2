"""The live catalog store: every ``models.overlay.LiveItem`` the shop has written, shared by every worker.

Both implementations (``service.store.memory_catalog`` and ``service.store.redis_catalog``) pass the same
contract tests (``tests/service/test_catalog_store_contract.py``).

Semantics
- ``put`` applies ``models.overlay.newer`` to each item in order, atomically: an update no newer than the
  stored one is not stored (``ignored_older``); an update of a retired item is not stored (``refused``).
  Items of one call are applied one after the other, so a later entry for the same id is compared with an
  earlier one of the same call.
- A conditional put (``based_on``) also names the ``updated_at`` of the stored entry the update was computed
  from (None: none stored): when the stored entry is another one, nothing is written (``moved``) and the
  caller merges again. A partial update (PATCH) is a read, a merge and a conditional put, so two concurrent
  partial updates cannot undo each other's fields.
- Every stored update increases the version by one; ``version`` is one cheap read, and ``overlay`` returns
  every entry with the version they make up, read together.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Protocol

import msgspec

from models.overlay import CatalogOverlay, LiveItem, newer
from service.errors import ConflictError


class WriteOutcome(enum.StrEnum):
    """What became of one item of a catalog write."""

    STORED = "stored"  # stored: the version moved on
    IGNORED_OLDER = "ignored_older"  # the stored entry is as new or newer (updated_at): nothing written
    REFUSED = "refused"  # the item is retired: no write may change it
    MOVED = "moved"  # conditional write: the stored entry is not the one it was based on (nothing written)


class PutResult(msgspec.Struct, frozen=True):
    item_id: str
    outcome: WriteOutcome


class PutAnswer(msgspec.Struct, frozen=True):
    """The outcome of each item of one ``put``, in order, and the store's version after it."""

    version: int
    results: list[PutResult]


class RetiredItemError(ConflictError):
    """A write to a retired item (HTTP 409): retired items never change again."""

    def __init__(self, item_id: str) -> None:
        super().__init__(f"item {item_id!r} is retired: a retired item cannot be changed or served again")
        self.item_id = item_id


def outcome_of(update: LiveItem, stored: LiveItem | None, based_on: float | bool | None) -> WriteOutcome:
    """The outcome of one update over ``stored`` (``based_on``: False for an unconditional update, else the
    ``updated_at`` of the entry it was computed from, None for none). Both stores follow this rule: the
    memory store calls it, the Redis store's script is its transcription."""
    if stored is not None and stored.retired:
        return WriteOutcome.REFUSED
    if based_on is not False and (None if stored is None else stored.updated_at) != based_on:
        return WriteOutcome.MOVED
    return WriteOutcome.STORED if newer(update, stored) else WriteOutcome.IGNORED_OLDER


def check_based_on(items: Sequence[LiveItem], based_on: Sequence[float | None] | None) -> None:
    if based_on is not None and len(based_on) != len(items):
        raise ValueError(f"based_on has {len(based_on)} entries for {len(items)} items")


class CatalogStore(Protocol):
    async def put(
        self, items: Sequence[LiveItem], *, based_on: Sequence[float | None] | None = None
    ) -> PutAnswer:
        """Apply the updates in order, atomically (see the module docstring). ``based_on[i]``: the
        ``updated_at`` of the stored entry ``items[i]`` was merged onto (None: none was stored).
        Raises ``models.errors.StoreUnavailableError`` when the store cannot be reached (nothing written)."""
        ...

    async def get(self, item_id: str) -> LiveItem | None:
        """The stored entry of one item, or None."""
        ...

    async def overlay(self) -> CatalogOverlay:
        """Every stored entry and the version they make up (one consistent read)."""
        ...

    async def version(self) -> int:
        """The number of updates stored so far (0: none): one cheap read, for followers to poll."""
        ...

    async def close(self) -> None: ...
