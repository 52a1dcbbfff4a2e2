"""Linking an anonymous visitor id to a user id: the steps both visitor stores implement, and the one
procedure that runs them (``link``).

After ``link(anonymous_id, user_id)`` the anonymous id is an *alias* of the user: everything addressed to
it (appends, reads, campaign sends) is served by the user's state, and the anonymous visitor's state has
joined the user's (``merge`` below). ``resolve`` maps an id to the user it is linked to (itself when it is
not linked).

Why steps, and why no event is lost or counted twice
----------------------------------------------------
Every step touches the keys of ONE visitor (one Redis Cluster slot) and is atomic on its own; none is a
script over both visitors. In order:

1. ``link_claim(user, anon)`` (user's slot): refuse when the user id is itself an alias (no chains);
   record ``anon`` in the user's set of linked ids. A user id with linked ids is never made an alias
   (step 2 checks that set in its own slot), so an id is either a user or an alias, never both.
2. ``link_alias(anon, user, force)`` (anonymous slot): refuse when ``anon`` has linked ids of its own, or
   is the alias of another user (unless ``force``); else set the alias. From this moment every append
   for ``anon`` finds the alias *inside the same atomic append* and is stored under the user instead: the
   anonymous state can no longer change. (A refused link takes its claim of step 1 back.)
3. ``link_snapshot(anon)`` (anonymous slot): read that frozen state.
4. ``link_merge(user, contribution)`` (user's slot, atomic): union it into the user's state (run even
   when the anonymous state is empty: it may still bring its person, below). Every event
   carries a merge id (its ``event_id``, or for an event without one a hash of its JSON and its
   occurrence number, ``merge_id``) that goes into the user's idempotency set; an event whose merge id is
   there already is dropped. The other parts are unions that give the same result when applied twice
   (cart and purchases keep the latest time, sets are sets, the purchase log keeps each entry as many
   times as the more frequent side holds it).
5. ``link_clear(anon)`` (anonymous slot): drop the anonymous state, keep the alias.

An event for the anonymous id lands either before step 2's alias (then it is in the frozen state that
step 3 reads and step 4 merges) or after it (then it is stored under the user directly) — never both and
never neither, because the alias check and the store are one atomic script. An event for the user lands
before or after the merge script, which reads the user's state inside the same atomic step. An event sent
twice (a client retry, once to each id) is stored once: the first copy's ``event_id`` is in the user's
idempotency set by the time the second is merged or appended. A step that fails, or a whole link that is
retried, repeats steps that are idempotent: the retried merge finds the merge ids of the first and adds
nothing (the answer of a retry may count events the first attempt carried over; the state holds each
once).

Stream entries written before the link keep the anonymous id (the stream is a log of what arrived); the
user's list of stream ids names them too, so erasing the user removes them.

The person (``VisitorState.person``, the id experiments hash): a user whose state has no events and no
person of its own when the merge runs (a first login) stores the anonymous visitor's person (its stored
one, else its id), so the visitor keeps their experiment variants after logging in, asked as either id. A
user with history keeps its own person: a returning user logging in on a new device takes the user's
variants, and what changes is the short anonymous session's. A retried or repeated link finds the person
stored and keeps it.

``force`` moves the alias of an anonymous id that belongs to another user: from then on its events go to
the new user; what was merged into the old user stays there (it cannot be told apart any more).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Iterable
from typing import Protocol

import msgspec

from models.domain import Event, EventType
from models.errors import InvalidInputError
from service.errors import ConflictError

#: appends, reads and sends follow at most this many aliases: one, as there are no chains (step 1); a
#: chain (which only a bug could make) is refused rather than followed without end
MAX_HOPS = 1
_REMOVED_BY = (EventType.REMOVE_FROM_CART, EventType.PURCHASE)


class IdentityConflictError(ConflictError):
    """A link the stored identities refuse (409): the anonymous id belongs to another user, is itself a
    user with linked ids, or the user id is an alias of someone else."""


class LinkResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one ``link`` did.

    linked          False when the pair was linked already (nothing changed, unless an interrupted link
                    was finished)
    previous_user   the user the anonymous id belonged to before (a forced link), else None
    events_carried  events of the anonymous state newly stored under the user
    cart_carried    items of the anonymous cart now in the user's cart
    """

    anonymous_id: str
    user_id: str
    linked: bool
    previous_user: str | None = None
    events_carried: int = 0
    cart_carried: list[str] = msgspec.field(default_factory=list)


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """Everything stored under one visitor id, as ``link_snapshot`` reads it.

    events        recent events, in the order stored; ``ids``: the event ids in its idempotency set
    sids          ids of its stream entries (``"<ms>-<seq>"``), oldest first
    purchase_log  as ``VisitorState.purchase_log``; ``sent``: campaign -> item ids sent
    person        the person stored for it (``VisitorState.person``), None when none is
    """

    events: list[Event] = msgspec.field(default_factory=list)
    cart: dict[str, float] = msgspec.field(default_factory=dict)
    purchases: dict[str, float] = msgspec.field(default_factory=dict)
    ids: list[str] = msgspec.field(default_factory=list)
    sids: list[str] = msgspec.field(default_factory=list)
    purchase_log: list[Event] = msgspec.field(default_factory=list)
    sent: dict[str, list[str]] = msgspec.field(default_factory=dict)
    person: str | None = None

    def is_empty(self) -> bool:
        parts = (self.events, self.cart, self.purchases, self.ids, self.sids, self.sent, self.purchase_log)
        return not any(parts) and self.person is None


class Contribution(msgspec.Struct, frozen=True, kw_only=True):
    """What the anonymous state brings to the user's (``contribution``), for ``link_merge``.

    events     (merge id, event re-addressed to the user), in the anonymous visitor's order
    ends       item -> latest time the anonymous visitor removed or bought it: the user's cart loses an
               item added at or before that time
    cancels    item -> latest cancel in the anonymous purchase log
    person     the anonymous visitor's person: the user takes it when it has no events and no person
    The rest as in ``Snapshot``.
    """

    events: list[tuple[str, Event]]
    ids: list[str]
    cart: dict[str, float]
    ends: dict[str, float]
    purchases: dict[str, float]
    cancels: dict[str, float]
    purchase_log: list[Event]
    sids: list[str]
    sent: dict[str, list[str]]
    person: str


class MergeOutcome(msgspec.Struct, frozen=True):
    events_carried: int
    cart_carried: list[str]


class LinkSteps(Protocol):
    """The single-visitor atomic steps of a link (module docstring); each is safe to repeat."""

    async def link_claim(self, user_id: str, anonymous_id: str) -> tuple[bool, str | None]:
        """(whether ``anonymous_id`` was newly added to the user's linked ids, the user id's own alias if it
        has one: then nothing was changed)."""
        ...

    async def link_unclaim(self, user_id: str, anonymous_id: str) -> None: ...

    async def link_alias(self, anonymous_id: str, user_id: str, force: bool) -> tuple[str, str | None]:
        """("ok", previous user or None) | ("taken", its user) | ("user", None): the anonymous id has
        linked ids of its own. Only "ok" changed anything."""
        ...

    async def link_snapshot(self, anonymous_id: str) -> Snapshot: ...

    async def link_merge(self, user_id: str, contribution: Contribution) -> MergeOutcome: ...

    async def link_clear(self, anonymous_id: str) -> None: ...


def merge_id(event: Event, occurrence: int) -> str:
    """The id an event is merged under: its ``event_id``, else a hash of its JSON and of how many equal
    events came before it in the same state (two identical page views are two events), so that merging
    the same state twice gives the same ids."""
    if event.event_id is not None:
        return event.event_id
    digest = hashlib.blake2b(msgspec.json.encode(event), digest_size=16)
    digest.update(occurrence.to_bytes(4, "big"))
    return "~merge:" + digest.hexdigest()


def contribution(snapshot: Snapshot, anonymous_id: str, user_id: str) -> Contribution:
    """The anonymous state, re-addressed to ``user_id``, with the merge ids and item times the merge needs."""
    seen: Counter[bytes] = Counter()
    events: list[tuple[str, Event]] = []
    for e in snapshot.events:
        key = msgspec.json.encode(e)
        events.append((merge_id(e, seen[key]), msgspec.structs.replace(e, visitor_id=user_id)))
        seen[key] += 1
    ends = _latest((e.item_id, e.timestamp) for e in snapshot.events if e.event in _REMOVED_BY)
    buys = [(e.item_id, e.timestamp) for e in snapshot.purchase_log if e.event is EventType.PURCHASE]
    ends = _latest([*ends.items(), *buys, *snapshot.purchases.items()])
    cancels = _latest((e.item_id, e.timestamp) for e in snapshot.purchase_log if e.event is EventType.CANCEL)
    return Contribution(
        events=events,
        ids=snapshot.ids,
        cart=snapshot.cart,
        ends=ends,
        purchases=snapshot.purchases,
        cancels=cancels,
        purchase_log=[msgspec.structs.replace(e, visitor_id=user_id) for e in snapshot.purchase_log],
        sids=snapshot.sids,
        sent=snapshot.sent,
        person=snapshot.person or anonymous_id,
    )


def _latest(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for item, t in pairs:
        if out.get(item, t) <= t:
            out[item] = t
    return out


async def link(steps: LinkSteps, anonymous_id: str, user_id: str, *, force: bool = False) -> LinkResult:
    """Link ``anonymous_id`` to ``user_id`` through ``steps`` (module docstring). Idempotent.

    Raises InvalidInputError when the two ids are equal, IdentityConflictError when the link is refused.
    """
    if anonymous_id == user_id:
        raise InvalidInputError(
            "body field 'user_id': the same id as anonymous_id; a visitor cannot be linked to itself"
        )
    added, alias_of_user = await steps.link_claim(user_id, anonymous_id)
    if alias_of_user is not None:
        raise IdentityConflictError(
            f"body field 'user_id': {user_id!r} is an anonymous id linked to {alias_of_user!r}; "
            "link to that user"
        )
    status, other = await steps.link_alias(anonymous_id, user_id, force)
    if status != "ok":
        if added:  # take the claim back; a claim whose alias failed otherwise is harmless (erase checks)
            await steps.link_unclaim(user_id, anonymous_id)
        if status == "taken":
            raise IdentityConflictError(
                f"body field 'anonymous_id': {anonymous_id!r} is linked to another user ({other!r}); "
                "send force=true to move it"
            )
        raise IdentityConflictError(
            f"body field 'anonymous_id': {anonymous_id!r} is a user with linked ids, not an anonymous id"
        )
    if other is not None and other != user_id:
        await steps.link_unclaim(other, anonymous_id)
    snapshot = await steps.link_snapshot(anonymous_id)
    outcome = await steps.link_merge(user_id, contribution(snapshot, anonymous_id, user_id))
    if not snapshot.is_empty():
        await steps.link_clear(anonymous_id)
    return LinkResult(
        anonymous_id=anonymous_id,
        user_id=user_id,
        linked=other != user_id,
        previous_user=other if other != user_id else None,
        events_carried=outcome.events_carried,
        cart_carried=outcome.cart_carried,
    )


async def yield_between_steps() -> None:
    """The memory store's steps give other coroutines a turn first, as a Redis round trip does, so that
    tests interleave ingest with every step of a link."""
    await asyncio.sleep(0)
