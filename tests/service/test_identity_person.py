"""The person experiments hash (``VisitorState.person``) through a link, against MemoryStore and RedisStore
alike (the ``harness`` fixture of ``test_store_contract``): a first login keeps the anonymous visitor's
person, a returning user keeps its own, a repeated link changes nothing, erase removes it."""

from __future__ import annotations

from typing import Any

from service.store.base import VisitorStore
from service.store.redis_store import RedisStore
from tests.service import test_store_contract as contract
from tests.service.test_store_contract import T0, E, Harness, ev

harness = contract.harness  # the fixture: each test runs against the memory and the Redis store


async def _first_login(harness: Harness, **overrides: Any) -> VisitorStore:
    """A store where "anon" viewed a page, then logged in as "user" (which had no history)."""
    store = harness.make(**overrides)
    await store.append([ev("anon", "p-1", E.PAGE_VIEW, T0)])
    await store.link("anon", "user")
    return store


async def test_the_person_is_the_visitor_id_until_a_link(harness: Harness) -> None:
    store = harness.make()
    await store.append([ev("v", "p", E.PAGE_VIEW, T0)])
    assert (await store.visitor("v")).person == "v"
    assert (await store.visitor("nobody")).person == "nobody"


async def test_a_first_login_takes_the_anonymous_person(harness: Harness) -> None:
    store = await _first_login(harness)
    for asked in ("anon", "user"):
        state = await store.visitor(asked, "c")
        assert (state.visitor_id, state.person) == ("user", "anon")
    # the user's later events keep it
    await store.append([ev("user", "p-2", E.PAGE_VIEW, T0 + 1), ev("anon", "p-3", E.PAGE_VIEW, T0 + 2)])
    assert (await store.visitor("user")).person == "anon"


async def test_an_anonymous_visitor_without_events_brings_its_person_too(harness: Harness) -> None:
    """A visitor who was only shown lists (assigned, nothing stored) keeps the variant after login."""
    store = harness.make()
    await store.link("anon", "user")
    assert (await store.visitor("user")).person == "anon"
    assert (await store.visitor("anon")).person == "anon"


async def test_a_returning_user_keeps_its_person(harness: Harness) -> None:
    store = harness.make()
    await store.append([ev("user", "p-1", E.PAGE_VIEW, T0), ev("anon", "p-2", E.PAGE_VIEW, T0)])
    await store.link("anon", "user")
    assert (await store.visitor("anon")).person == "user"
    # a first login, then a new device: the second anonymous id takes the user's (the first one's) person
    await store.append([ev("anon-1", "p-3", E.PAGE_VIEW, T0)])
    await store.link("anon-1", "user-1")
    await store.append([ev("anon-2", "p-4", E.PAGE_VIEW, T0)])
    await store.link("anon-2", "user-1")
    for asked in ("anon-1", "anon-2", "user-1"):
        assert (await store.visitor(asked)).person == "anon-1"


async def test_linking_again_keeps_the_person(harness: Harness) -> None:
    store = await _first_login(harness)
    state = await store.visitor("user")
    again = await store.link("anon", "user")
    assert not again.linked
    assert await store.visitor("user") == state
    assert state.person == "anon"


async def test_a_forced_move_gives_the_new_user_the_anonymous_person(harness: Harness) -> None:
    store = harness.make()
    await store.append([ev("anon", "p-1", E.PAGE_VIEW, T0)])
    await store.link("anon", "user-1")
    await store.link("anon", "user-2", force=True)
    assert (await store.visitor("user-1")).person == "anon"
    assert (await store.visitor("anon")).person == "anon"


async def test_erase_removes_the_person(harness: Harness) -> None:
    store = await _first_login(harness)
    assert await store.erase("user") > 0
    for visitor in ("user", "anon"):
        assert (await store.visitor(visitor)).person == visitor
    if isinstance(store, RedisStore):
        assert not await harness.redis.exists(*store.visitor_keys("user"), *store.visitor_keys("anon"))
    # a fresh login of the user id after the erase is a first login again
    await store.append([ev("anon-2", "p-2", E.PAGE_VIEW, T0 + 1)])
    await store.link("anon-2", "user")
    assert (await store.visitor("user")).person == "anon-2"


async def test_the_person_expires_with_the_visitor(harness: Harness) -> None:
    store = await _first_login(harness, visitor_ttl=1000)
    if isinstance(store, RedisStore):  # the person key lives as long as the user's events
        keys = store.visitor_keys("user")
        person_ttl, events_ttl = await harness.redis.ttl(keys[9]), await harness.redis.ttl(keys[0])
        assert 0 < person_ttl <= 1000
        assert abs(person_ttl - events_ttl) <= 1
    else:
        await harness.wait(1001)
        assert (await store.visitor("user")).person == "user"
