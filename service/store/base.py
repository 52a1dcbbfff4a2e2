"""The store interface the API depends on. Both implementations pass the same contract tests
(``tests/service/test_store_contract.py``)."""

from __future__ import annotations

import enum
from typing import Protocol

import msgspec

from models.domain import Event
from models.errors import StoreUnavailableError
from service.store.identity import LinkResult

#: how many purchase and cancel events (``PURCHASE_LOG_EVENTS``) a store keeps per visitor
#: (``VisitorState.purchase_log``)
PURCHASE_LOG = 1000


class StoreFailure(enum.StrEnum):
    """Why a store that is down did not answer: the ``cause`` of a fallback answer."""

    CONNECTION = "connection"  # no connection: refused, reset or closed by the server
    TIMEOUT = "timeout"  # connecting or a reply took longer than the socket timeout
    ERROR = "error"  # the store answered with an error (read-only replica, out of memory, loading, ...)


class StoreDownError(StoreUnavailableError):
    """The store could not be reached or did not answer: reads may fall back to non-personalised answers."""

    def __init__(self, message: str, cause: StoreFailure) -> None:
        super().__init__(message)
        self.cause = cause


class StoreBusyError(StoreUnavailableError):
    """The store is up but this process had no free connection to it within the wait limit: more requests
    in flight than connections. Never a reason to fall back (the answer is 503 with Retry-After); the
    admission limit (``Settings.max_concurrency``) and the pool size derived from it keep it from
    happening."""


def failure_of(exc: StoreUnavailableError) -> StoreFailure:
    """The cause of a store failure; a store that does not tell counts as ``ERROR``."""
    return exc.cause if isinstance(exc, StoreDownError) else StoreFailure.ERROR


class StoreLimits:
    """The size limits both stores share, checked once: each must be at least 1, and the purchase log must
    hold the purchases among the recent events (the model finds the older ones by counting those)."""

    def __init__(
        self, *, visitor_ttl: int, recent_events: int, stream_maxlen: int, purchase_log: int
    ) -> None:
        if visitor_ttl < 1 or recent_events < 1 or stream_maxlen < 1:
            raise ValueError("visitor_ttl, recent_events and stream_maxlen must be at least 1")
        if purchase_log < recent_events:
            raise ValueError("purchase_log must hold at least recent_events events")
        self.visitor_ttl = visitor_ttl
        self.recent_events = recent_events
        self.stream_maxlen = stream_maxlen
        self.purchase_log = purchase_log


class AppendResult(msgspec.Struct, frozen=True):
    """accepted: newly stored events; duplicates: events whose event_id was stored before (skipped);
    redirected: events addressed to an anonymous id linked to a user, stored under (or found a duplicate
    in) that user's state (counted in accepted or duplicates too); aliases: those anonymous ids -> user;
    persons: visitor id -> ``VisitorState.person`` of the visitors whose events were stored (or found
    duplicate) and whose person is not their own id (users after a first login)."""

    accepted: int
    duplicates: int
    redirected: int = 0
    aliases: dict[str, str] = msgspec.field(default_factory=dict)
    persons: dict[str, str] = msgspec.field(default_factory=dict)

    def plus(self, other: AppendResult) -> AppendResult:
        return AppendResult(
            self.accepted + other.accepted,
            self.duplicates + other.duplicates,
            self.redirected + other.redirected,
            {**self.aliases, **other.aliases},
            {**self.persons, **other.persons},
        )

    def person_of(self, visitor_id: str) -> str:
        """The person an event addressed to ``visitor_id`` belongs to (its user's after a link)."""
        stored = self.aliases.get(visitor_id, visitor_id)
        return self.persons.get(stored, stored)


class VisitorState(msgspec.Struct, frozen=True):
    """Everything held about one visitor, read in one round trip.

    events        the most recent events (at most ``recent_events`` of them), oldest first
    cart          item_id -> POSIX seconds it was (last) added; removed and purchased items are gone
    purchases     item_id -> POSIX seconds of the last purchase (kept beyond the recent-events cap)
    sent          item ids already sent to this visitor by the campaign asked for (empty if none asked)
    purchase_log  the visitor's latest purchase and cancel events (at most ``PURCHASE_LOG``), in arrival
                  order, reaching beyond the recent-events cap: what buy-again needs to count purchases
                  and their recency as the offline profiles do. Its events carry only visitor, item, event
                  and timestamp.
    person        the id experiments hash (``service.experiment_runtime``): the visitor id, unless a
                  first login stored the anonymous visitor's person in the user's state
                  (``service.store.identity``), so that a visitor keeps their variants after logging in.
                  Empty: the visitor id.
    """

    visitor_id: str
    events: list[Event]
    cart: dict[str, float]
    purchases: dict[str, float]
    sent: frozenset[str] = frozenset()
    purchase_log: list[Event] = msgspec.field(default_factory=list)
    person: str = ""

    def __post_init__(self) -> None:
        if not self.person:
            msgspec.structs.force_setattr(self, "person", self.visitor_id)


class StreamEntry(msgspec.Struct, frozen=True):
    entry_id: str
    event: Event


class VisitorStore(Protocol):
    async def ping(self) -> bool:
        """True when the store answers."""
        ...

    async def append(self, events: list[Event]) -> AppendResult:
        """Store events durably (visitor state + event stream). Idempotent on ``event_id``.

        Raises ``models.errors.StoreUnavailableError`` when nothing could be written; never reports an
        event as accepted that was not stored. An event for an anonymous id linked to a user is stored
        under the user (its ``visitor_id`` becomes the user id): the alias is checked in the same atomic
        step as the write.
        """
        ...

    async def visitor(self, visitor_id: str, campaign: str | None = None) -> VisitorState:
        """State of one visitor; an unknown visitor gets an empty state, never an error. A linked anonymous
        id reads its user's state (whose ``visitor_id`` is the user id, and whose ``person`` is the same
        whichever of the two ids is asked)."""
        ...

    async def mark_sent(self, visitor_id: str, campaign: str, item_ids: list[str]) -> None:
        """Remember that ``campaign`` sent these items to the visitor (retargeting dedup; a linked anonymous
        id's sends are the user's)."""
        ...

    async def erase(self, visitor_id: str) -> int:
        """Delete everything held about the visitor (GDPR); returns the number of keys/records removed.
        Stream entries of the visitor are removed too. A user's erase cascades to every anonymous id
        linked to it (their aliases and anything left under them); the erase of a linked anonymous id
        removes its alias and anything left under it, not the user's state its history has joined."""
        ...

    # -- identity (``service.store.identity``) ------------------------------------------------------------

    async def link(self, anonymous_id: str, user_id: str, *, force: bool = False) -> LinkResult:
        """Make ``anonymous_id`` an alias of ``user_id`` and merge its state into the user's (idempotent); a
        user with no events and no person of its own takes the anonymous visitor's person (a first login).
        Raises InvalidInputError (the same id twice) or IdentityConflictError (refused)."""
        ...

    async def linked(self, visitor_id: str) -> list[str]:
        """The anonymous ids linked to this user (sorted; empty for anyone else): what its erase cascades
        to, so that stores kept beside this one (journey analytics) erase them too."""
        ...

    async def resolve(self, visitor_id: str) -> str:
        """The user id ``visitor_id`` is linked to, else ``visitor_id`` itself."""
        ...

    async def resolve_many(self, visitor_ids: list[str]) -> dict[str, str]:
        """``resolve`` of many ids in one round trip: id -> user id, for the linked ones only."""
        ...

    async def persons_of(self, visitor_ids: list[str]) -> dict[str, str]:
        """The person (``VisitorState.person``) of each id, its user's when it is linked: id -> person,
        for the ids whose person is not the id itself (at most two round trips)."""
        ...

    async def read_stream(self, after: str, count: int) -> list[StreamEntry]:
        """Events appended to the stream after entry id ``after`` ("0" for the start), oldest first."""
        ...

    async def recent_visitors(self, limit: int, scan: int) -> list[str]:
        """The distinct visitors of the newest stream entries, newest first: at most ``limit`` of them,
        from at most the newest ``scan`` entries."""
        ...

    async def close(self) -> None: ...
