"""The identity part of the VisitorStore contract (link, resolve, the erase cascade), against MemoryStore
and RedisStore alike (the ``harness`` fixture of ``test_store_contract``)."""

from __future__ import annotations

import asyncio
import random
import re
from collections import Counter
from typing import Any

import pytest

from models.domain import Event
from models.errors import InvalidInputError
from service.store.base import AppendResult, VisitorState
from service.store.identity import IdentityConflictError, LinkResult, contribution
from service.store.memory_store import MemoryStore
from service.store.redis_store import RedisStore
from tests.service import test_store_contract as contract
from tests.service.test_store_contract import (
    DEFAULTS,
    T0,
    E,
    Harness,
    ev,
    only_redis,
    stream_events,
)

harness = contract.harness  # the fixture: each test runs against the memory and the Redis store


def ids_of(state: VisitorState) -> list[str | None]:
    return [e.event_id for e in state.events]


async def test_link_joins_the_anonymous_state_to_the_users(harness: Harness) -> None:
    store = harness.make()
    await store.append(
        [
            ev("anon", "p-1", E.PRODUCT_VIEW, T0 + 10, event_id="a1"),
            ev("anon", "p-2", E.ADD_TO_CART, T0 + 20, event_id="a2"),
            ev("anon", "p-3", E.PURCHASE, T0 + 5, event_id="a3"),
            ev("anon", "c-1", E.CONTENT_VIEW, T0 + 30),  # no event_id
            ev("user", "p-4", E.PRODUCT_VIEW, T0 + 15, event_id="u1"),
            ev("user", "p-5", E.ADD_TO_CART, T0 + 1, event_id="u2"),
        ]
    )
    await store.mark_sent("anon", "spring", ["p-7"])
    await store.mark_sent("user", "spring", ["p-8"])
    result = await store.link("anon", "user")
    assert result == LinkResult(
        anonymous_id="anon", user_id="user", linked=True, events_carried=4, cart_carried=["p-2"]
    )
    state = await store.visitor("user", "spring")
    # events unioned, in time order, all addressed to the user
    assert [(e.item_id, e.timestamp) for e in state.events] == [
        ("p-5", T0 + 1),
        ("p-3", T0 + 5),
        ("p-1", T0 + 10),
        ("p-4", T0 + 15),
        ("p-2", T0 + 20),
        ("c-1", T0 + 30),
    ]
    assert {e.visitor_id for e in state.events} == {"user"}
    assert state.cart == {"p-5": T0 + 1, "p-2": T0 + 20}
    assert state.purchases == {"p-3": T0 + 5}
    assert [(e.visitor_id, e.item_id) for e in state.purchase_log] == [("user", "p-3")]
    assert state.sent == {"p-7", "p-8"}
    # the anonymous id now reads the user's state, and resolves to the user
    assert await store.visitor("anon", "spring") == state
    assert await store.resolve("anon") == "user"
    assert await store.resolve("user") == "user"
    assert await store.resolve_many(["anon", "user", "nobody", "anon"]) == {"anon": "user"}


async def test_linking_the_same_pair_again_changes_nothing(harness: Harness) -> None:
    store = harness.make()
    await store.append(
        [ev("anon", "p-1", E.ADD_TO_CART, T0, event_id="a1"), ev("anon", "p-2", E.PAGE_VIEW, T0)]
    )
    first = await store.link("anon", "user")
    assert (first.linked, first.events_carried) == (True, 2)
    state = await store.visitor("user")
    again = await store.link("anon", "user")
    assert again == LinkResult(anonymous_id="anon", user_id="user", linked=False)
    assert await store.visitor("user") == state


async def test_a_repeated_merge_adds_nothing(harness: Harness) -> None:
    """A merge step retried (its reply lost) finds the merge ids of the first: events without an event_id
    included, and two identical events stay two."""
    store = harness.make()
    page = ev("anon", "p-1", E.PAGE_VIEW, T0)
    await store.append(
        [page, page, ev("anon", "p-2", E.ADD_TO_CART, T0 + 1), ev("anon", "p-2", E.PURCHASE, T0 + 2)]
    )
    await store.append([ev("anon", "p-2", E.CANCEL, T0 + 3)])
    await store.mark_sent("anon", "c", ["x"])
    steps: Any = store
    snapshot = await steps.link_snapshot("anon")
    first = await steps.link_merge("user", contribution(snapshot, "anon", "user"))
    state = await store.visitor("user", "c")
    second = await steps.link_merge("user", contribution(snapshot, "anon", "user"))
    assert (first.events_carried, second.events_carried) == (5, 0)
    assert await store.visitor("user", "c") == state
    assert [e.item_id for e in state.events] == ["p-1", "p-1", "p-2", "p-2", "p-2"]
    assert len(state.purchase_log) == 2
    assert state.purchases == {}  # the cancel came after the purchase


async def test_an_event_sent_to_both_ids_is_kept_once(harness: Harness) -> None:
    store = harness.make()
    await store.append([ev("anon", "p-1", E.PRODUCT_VIEW, T0, event_id="same")])
    await store.append([ev("user", "p-1", E.PRODUCT_VIEW, T0, event_id="same")])
    result = await store.link("anon", "user")
    assert result.events_carried == 0
    assert ids_of(await store.visitor("user")) == ["same"]
    # and a retry of an anonymous event after the link is a duplicate of the merged one
    assert await store.append([ev("anon", "p-1", E.PRODUCT_VIEW, T0, event_id="same")]) == AppendResult(
        0, 1, 1, {"anon": "user"}
    )


async def test_events_after_the_link_go_to_the_user(harness: Harness) -> None:
    store = harness.make()
    await store.append([ev("anon", "p-1", E.PAGE_VIEW, T0)])
    await store.link("anon", "user")
    result = await store.append(
        [
            ev("anon", "p-2", E.ADD_TO_CART, T0 + 1, event_id="x1"),
            ev("other", "p-3", E.PAGE_VIEW, T0 + 2),
            ev("anon", "p-4", E.PAGE_VIEW, T0 + 3),
        ]
    )
    # a first login: the user keeps the anonymous visitor's person
    assert result == AppendResult(3, 0, 2, {"anon": "user"}, {"user": "anon"})
    state = await store.visitor("user")
    assert [(e.visitor_id, e.item_id) for e in state.events] == [
        ("user", "p-1"),
        ("user", "p-2"),
        ("user", "p-4"),
    ]
    assert state.cart == {"p-2": T0 + 1}
    assert [e.item_id for e in (await store.visitor("other")).events] == ["p-3"]
    # the stream names the user for events stored after the link (Redis stores them after the rest of
    # their batch)
    assert sorted((e.visitor_id, e.item_id) for e in await stream_events(store))[-3:] == [
        ("other", "p-3"),
        ("user", "p-2"),
        ("user", "p-4"),
    ]
    # campaign sends to the anonymous id are the user's
    await store.mark_sent("anon", "c", ["p-9"])
    assert (await store.visitor("user", "c")).sent == {"p-9"}


async def test_the_cart_carries_net_adds_since_the_users_last_purchase(harness: Harness) -> None:
    store = harness.make()
    await store.append(
        [
            ev("anon", "old", E.ADD_TO_CART, T0 + 1),  # before the user's last purchase: not carried
            ev("anon", "removed", E.ADD_TO_CART, T0 + 11),  # the user removed it later: not carried
            ev("anon", "new", E.ADD_TO_CART, T0 + 12),
            ev("anon", "gone", E.ADD_TO_CART, T0 + 13),
            ev("anon", "gone", E.REMOVE_FROM_CART, T0 + 14),  # removed anonymously: not in the cart
            ev("anon", "mine", E.REMOVE_FROM_CART, T0 + 15),  # removes the user's older add
            ev("user", "bought", E.PURCHASE, T0 + 10),
            ev("user", "mine", E.ADD_TO_CART, T0 + 3),
            ev("user", "kept", E.ADD_TO_CART, T0 + 4),
            ev("user", "removed", E.REMOVE_FROM_CART, T0 + 20),
        ]
    )
    result = await store.link("anon", "user")
    assert result.cart_carried == ["new"]
    assert (await store.visitor("user")).cart == {"kept": T0 + 4, "new": T0 + 12}


async def test_purchases_take_the_latest_and_honour_a_later_cancel(harness: Harness) -> None:
    store = harness.make()
    await store.append(
        [
            ev("anon", "a", E.PURCHASE, T0 + 5),
            ev("anon", "b", E.PURCHASE, T0 + 1),
            ev("anon", "c", E.CANCEL, T0 + 9),  # cancels the user's purchase of c
            ev("user", "a", E.PURCHASE, T0 + 2),
            ev("user", "b", E.PURCHASE, T0 + 3),
            ev("user", "c", E.PURCHASE, T0 + 4),
        ]
    )
    await store.link("anon", "user")
    state = await store.visitor("user")
    assert state.purchases == {"a": T0 + 5, "b": T0 + 3}
    assert [(e.item_id, e.event, e.timestamp) for e in state.purchase_log] == [
        ("b", E.PURCHASE, T0 + 1),
        ("a", E.PURCHASE, T0 + 2),
        ("b", E.PURCHASE, T0 + 3),
        ("c", E.PURCHASE, T0 + 4),
        ("a", E.PURCHASE, T0 + 5),
        ("c", E.CANCEL, T0 + 9),
    ]


async def test_the_merged_events_keep_the_newest_up_to_the_cap(harness: Harness) -> None:
    store = harness.make(recent_events=4)
    await store.append([ev("anon", f"a{i}", E.PAGE_VIEW, T0 + 2 * i) for i in range(4)])
    await store.append([ev("user", f"u{i}", E.PAGE_VIEW, T0 + 2 * i + 1) for i in range(4)])
    await store.link("anon", "user")
    assert [e.item_id for e in (await store.visitor("user")).events] == ["a2", "u2", "a3", "u3"]


async def test_refused_links(harness: Harness) -> None:
    store = harness.make()
    with pytest.raises(InvalidInputError, match="user_id"):
        await store.link("same", "same")
    await store.append([ev("anon", "p", E.PAGE_VIEW, T0)])
    await store.link("anon", "user")
    with pytest.raises(IdentityConflictError, match=r"'anon' is linked to another user \('user'\)"):
        await store.link("anon", "user-2")
    with pytest.raises(IdentityConflictError, match="'user' is a user with linked ids"):
        await store.link("user", "user-2")
    with pytest.raises(IdentityConflictError, match="'anon' is an anonymous id linked to 'user'"):
        await store.link("anon-2", "anon")
    # nothing of the refused links stayed behind
    assert await store.resolve_many(["anon", "user", "anon-2", "user-2"]) == {"anon": "user"}
    await store.link("anon-3", "user-2")  # user-2 is still free to be a user
    # anon-3's alias, user-2's set of linked ids (anon-3 only: the refused claims were taken back) and
    # user-2's person (anon-3's: a first login)
    assert await store.erase("user-2") == 3


async def test_force_moves_the_alias_and_leaves_the_merged_history(harness: Harness) -> None:
    store = harness.make()
    await store.append([ev("anon", "p-1", E.PAGE_VIEW, T0)])
    await store.link("anon", "user-1")
    moved = await store.link("anon", "user-2", force=True)
    assert moved == LinkResult(anonymous_id="anon", user_id="user-2", linked=True, previous_user="user-1")
    await store.append([ev("anon", "p-2", E.PAGE_VIEW, T0 + 1)])
    assert [e.item_id for e in (await store.visitor("user-1")).events] == ["p-1"]
    assert [e.item_id for e in (await store.visitor("user-2")).events] == ["p-2"]
    # the first user no longer owns the alias: erasing it leaves the anonymous id linked to user-2
    await store.erase("user-1")
    assert await store.resolve("anon") == "user-2"


async def test_erase_of_a_user_cascades_to_its_linked_ids(harness: Harness) -> None:
    store = harness.make()
    await store.append([ev("anon-1", "p-1", E.ADD_TO_CART, T0), ev("anon-2", "p-2", E.PAGE_VIEW, T0)])
    await store.append([ev("user", "p-3", E.PAGE_VIEW, T0), ev("bystander", "p-4", E.PAGE_VIEW, T0)])
    await store.link("anon-1", "user")
    await store.link("anon-2", "user")
    await store.append([ev("anon-1", "p-5", E.PAGE_VIEW, T0 + 1)])
    assert await store.linked("user") == ["anon-1", "anon-2"]
    assert await store.linked("anon-1") == await store.linked("bystander") == []
    assert await store.erase("user") > 0
    assert await store.linked("user") == []
    for visitor in ("user", "anon-1", "anon-2"):
        assert await store.resolve(visitor) == visitor
        assert await store.visitor(visitor) == VisitorState(
            visitor_id=visitor, events=[], cart={}, purchases={}
        )
    # every stream entry of the user and of its linked ids is gone
    assert [e.visitor_id for e in await stream_events(store)] == ["bystander"]
    assert await store.erase("anon-1") == 0
    # a linked id starts afresh under its own id
    await store.append([ev("anon-1", "p-6", E.PAGE_VIEW, T0 + 2)])
    assert [e.item_id for e in (await store.visitor("anon-1")).events] == ["p-6"]


async def test_erase_of_a_linked_anonymous_id_removes_its_alias_only(harness: Harness) -> None:
    """The anonymous history has joined the user's: it goes when the user is erased, not with the cookie."""
    store = harness.make()
    await store.append([ev("anon", "p-1", E.PAGE_VIEW, T0)])
    await store.link("anon", "user")
    state = await store.visitor("user")
    assert await store.erase("anon") == 1  # the alias
    assert await store.linked("user") == []
    assert await store.resolve("anon") == "anon"
    assert await store.visitor("user") == state
    await store.append([ev("anon", "p-2", E.PAGE_VIEW, T0 + 1)])
    assert [e.item_id for e in (await store.visitor("anon")).events] == ["p-2"]
    # the user no longer lists it: erasing the user leaves the new anonymous visitor alone
    await store.erase("user")
    assert [e.item_id for e in (await store.visitor("anon")).events] == ["p-2"]


def _random_events(rng: random.Random, visitor: str, n: int, tag: str) -> list[Event]:
    kinds = [E.PAGE_VIEW, E.PRODUCT_VIEW, E.ADD_TO_CART, E.REMOVE_FROM_CART, E.PURCHASE, E.CANCEL]
    out = []
    for i in range(n):
        extra: dict[str, Any] = {"event_id": f"{tag}-{i}"} if rng.random() < 0.5 else {}
        item = f"p-{rng.randrange(5)}"
        out.append(ev(visitor, item, rng.choice(kinds), T0 + rng.randrange(40), **extra))
    return out


@pytest.mark.redis
async def test_memory_and_redis_merge_alike(redis_url: str) -> None:
    """The Lua merge and the memory store's merge give the same state on random histories."""
    rng = random.Random(11)
    for trial in range(25):
        anon_events = _random_events(rng, "anon", rng.randrange(12), f"t{trial}a")
        user_events = _random_events(rng, "user", rng.randrange(12), f"t{trial}u")
        shared = [e for e in anon_events if e.event_id and rng.random() < 0.3]
        user_events += [ev("user", e.item_id, e.event, e.timestamp, event_id=e.event_id) for e in shared]
        memory = MemoryStore(**{**DEFAULTS, "recent_events": 10})
        redis = RedisStore.from_url(
            redis_url,
            prefix=f"jrtest-merge-{trial}-{rng.randrange(10**9)}",
            socket_timeout=5,
            **{**DEFAULTS, "recent_events": 10},
        )
        try:
            results = []
            for store in (memory, redis):
                await store.append(anon_events)
                await store.append(user_events)
                await store.mark_sent("anon", "c", ["x", "y"])
                results.append((await store.link("anon", "user"), await store.visitor("user", "c")))
            assert results[0] == results[1], trial
        finally:
            keys = [k async for k in redis.client.scan_iter(match=f"{redis.prefix}:*")]
            if keys:
                await redis.client.delete(*keys)
            await redis.close()


async def test_no_event_is_lost_or_doubled_when_ingest_races_the_link(harness: Harness) -> None:
    """Many ingests to both ids while the link runs: afterwards the user's state holds every event exactly
    once (some are sent again to the other id under the same event_id; half have no event_id)."""
    store = harness.make(recent_events=1000)
    n_tasks, batches, per_batch = 16, 12, 4
    sent: list[Event] = []
    results: list[AppendResult] = []

    async def ingest(task: int) -> None:
        rng = random.Random(task)
        for b in range(batches):
            batch = []
            for i in range(per_batch):
                visitor = "anon" if rng.random() < 0.5 else "user"
                extra = {"event_id": f"e-{task}-{b}-{i}"} if i % 2 == 0 else {}
                e = ev(visitor, f"item-{task}-{b}-{i}", E.PAGE_VIEW, T0 + len(sent), **extra)
                sent.append(e)
                batch.append(e)
            results.append(await store.append(batch))
            if rng.random() < 0.3:  # a client retry of an event with an id, to the other id
                e = next(x for x in batch if x.event_id)
                other = "user" if e.visitor_id == "anon" else "anon"
                results.append(
                    await store.append([ev(other, e.item_id, e.event, e.timestamp, event_id=e.event_id)])
                )
            await asyncio.sleep(0)

    async def login() -> LinkResult:
        while len(sent) < n_tasks * batches * per_batch // 3:  # in the middle of the ingest
            await asyncio.sleep(0)
        return await store.link("anon", "user")

    *_, link = await asyncio.gather(*(ingest(t) for t in range(n_tasks)), login())
    state = await store.visitor("user")
    assert Counter(e.item_id for e in state.events) == Counter(e.item_id for e in sent)
    assert {e.visitor_id for e in state.events} == {"user"}
    # both paths were taken: events merged from the anonymous state, and events redirected after the alias
    assert link.events_carried > 0
    assert sum(r.redirected for r in results) > 0
    assert await store.resolve("anon") == "user"
    if isinstance(store, RedisStore):  # the anonymous id holds nothing but its alias
        anon_keys = [k for k in store.visitor_keys("anon") if await harness.redis.exists(k)]
        assert anon_keys == [store.visitor_keys("anon")[8]]


def _one_slot(keys: list[Any]) -> bool:
    tags = set()
    for k in keys:
        tag = re.search(r"\{[^}]*\}", k.decode() if isinstance(k, bytes) else k)
        tags.add(tag.group(0) if tag else None)
    return len(tags) == 1 and None not in tags


async def test_every_link_script_touches_one_visitor(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis Cluster next: no script of a link, of a read or of a send spans two visitors' slots."""
    only_redis(harness)
    store = harness.make()
    assert isinstance(store, RedisStore)
    await store.append([ev("anon", "p", E.ADD_TO_CART, T0), ev("user", "q", E.PAGE_VIEW, T0)])
    await store.mark_sent("anon", "c", ["x"])
    calls: list[list[Any]] = []
    evalsha = store.client.evalsha

    async def recording(sha: str, numkeys: int, *keys_and_args: Any) -> Any:
        calls.append(list(keys_and_args[:numkeys]))
        return await evalsha(sha, numkeys, *keys_and_args)

    monkeypatch.setattr(store.client, "evalsha", recording)
    await store.link("anon", "user")
    await store.visitor("anon", "c")
    await store.mark_sent("anon", "c", ["y"])
    assert len(calls) >= 9  # claim, alias, snapshot, merge, clear, 2 reads, 2 sends
    assert all(_one_slot(keys) for keys in calls), calls


async def test_the_users_linked_set_outlives_the_aliases_it_names(harness: Harness) -> None:
    """Erase finds every live alias through the user's set: the set never expires before an alias."""
    only_redis(harness)
    store = harness.make(visitor_ttl=1000)
    assert isinstance(store, RedisStore)
    await store.append([ev("anon", "p", E.PAGE_VIEW, T0)])
    await store.link("anon", "user")
    await store.append([ev("anon", "q", E.PAGE_VIEW, T0 + 1)])  # refreshes the alias, then the user
    alias_ttl = await harness.redis.ttl(store.visitor_keys("anon")[8])
    linked_ttl = await harness.redis.ttl(store.visitor_keys("user")[7])
    assert 0 < alias_ttl <= 1000 < linked_ttl


async def test_the_person_of_a_logged_in_visitor_is_its_first_anonymous_visitors(harness: Harness) -> None:
    """A first login keeps the anonymous visitor's person (``VisitorState.person``): appends report it for
    the user, ``persons_of`` for the user and its linked ids; other ids are their own person."""
    store = harness.make()
    await store.append([ev(v, "p-1", E.PRODUCT_VIEW, T0 + 1) for v in ("anon", "user-2")])
    await store.link("anon", "user")  # a first login: the user takes the anonymous visitor's person
    await store.append([ev("anon-2", "p-2", E.PRODUCT_VIEW, T0 + 2)])
    await store.link("anon-2", "user-2")  # a returning user keeps its own person
    appended = await store.append(
        [
            ev("user", "p-2", E.PRODUCT_VIEW, T0 + 3),
            ev("anon", "p-3", E.PRODUCT_VIEW, T0 + 4),
            ev("anon-2", "p-3", E.PRODUCT_VIEW, T0 + 4),
            ev("other", "p-3", E.PRODUCT_VIEW, T0 + 4),
        ]
    )
    assert appended.aliases == {"anon": "user", "anon-2": "user-2"}
    assert appended.persons == {"user": "anon"}
    assert [appended.person_of(v) for v in ("user", "anon", "anon-2", "user-2", "other")] == [
        "anon",
        "anon",
        "user-2",
        "user-2",
        "other",
    ]
    asked = ["user", "anon", "anon-2", "user-2", "other", "nobody", "user"]
    assert await store.persons_of(asked) == {"user": "anon", "anon-2": "user-2"}
    assert await store.persons_of([]) == {}
