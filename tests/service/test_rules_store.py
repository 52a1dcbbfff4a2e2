"""The RulesStore contract: the same tests run against MemoryRulesStore and RedisRulesStore.

The Redis params run on the test Redis and on the test Redis Cluster (the ``redis_url`` and
``redis_cluster_url`` fixtures, ``tests/conftest.py``, through ``tests.service.redis_fixtures``); each
uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from models.rules import Boost, Hide, ItemCondition, Pin, Rule, RuleSet
from service.store.rules_base import AuditEntry, RulesConflictError, RulesStore, UnreadableRulesError
from service.store.rules_memory import MemoryRulesStore
from service.store.rules_redis import RedisRulesStore
from tests.service.redis_fixtures import STORE_KINDS, delete_prefix, raw_client, url_of

KITCHEN = ItemCondition(categories=("kitchen",))
BOOST = Rule(id="kitchen-up", action=Boost(factor=2.0), condition=KITCHEN)
HIDE = Rule(id="no-garden", action=Hide(), condition=ItemCondition(categories=("garden",)))
PIN = Rule(id="spring-sale", action=Pin(item_id="p-kitchen-0", position=1))


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


@dataclass
class Harness:
    kind: str
    make: Callable[..., RulesStore]
    raw: Any = None
    prefix: str = ""


@pytest.fixture(params=STORE_KINDS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield Harness("memory", lambda **kw: MemoryRulesStore(clock=Clock(), **kw))
        return
    url = url_of(request, request.param)
    raw: Any = raw_client(url)
    prefix = f"jrtest-{uuid.uuid4().hex[:12]}"
    try:
        yield Harness(
            "redis", lambda **kw: RedisRulesStore(raw, prefix=prefix, clock=Clock(), **kw), raw, prefix
        )
    finally:
        await delete_prefix(raw, prefix)
        await raw.aclose()


async def test_an_empty_store_holds_version_0_and_no_rules(harness: Harness) -> None:
    store = harness.make()
    assert await store.version() == 0
    assert await store.current() == RuleSet(version=0)
    assert await store.audit(10) == []


async def test_every_put_bumps_the_version_and_is_audited(harness: Harness) -> None:
    store = harness.make()
    first = await store.put((BOOST, PIN), "key3")
    assert first.version == 1
    assert (first.who, first.rules, first.added, first.removed, first.changed) == (
        "key3",
        2,
        ("kitchen-up", "spring-sale"),
        (),
        (),
    )
    assert await store.version() == 1
    assert await store.current() == RuleSet(version=1, rules=(BOOST, PIN))

    stronger = Rule(id="kitchen-up", action=Boost(factor=5.0), condition=KITCHEN)
    second = await store.put((stronger, HIDE), "key4")
    assert second.version == 2
    assert (second.added, second.removed, second.changed) == (
        ("no-garden",),
        ("spring-sale",),
        ("kitchen-up",),
    )
    assert await store.current() == RuleSet(version=2, rules=(stronger, HIDE))
    # the same rules again: a new version whose change names nothing
    third = await store.put((stronger, HIDE), "key4")
    assert (third.version, third.added, third.removed, third.changed) == (3, (), (), ())

    entries = await store.audit(10)
    assert [e.version for e in entries] == [3, 2, 1]  # newest first
    assert entries[1] == second
    assert entries[2].at < entries[1].at < entries[0].at
    assert await store.audit(1) == [third]


async def test_the_audit_list_keeps_the_newest_entries(harness: Harness) -> None:
    store = harness.make(audit_cap=3)
    for i in range(5):
        await store.put((HIDE,) if i % 2 else (), f"key{i}")
    entries = await store.audit(100)
    assert [e.version for e in entries] == [5, 4, 3]
    assert [e.who for e in entries] == ["key4", "key3", "key2"]
    assert await store.version() == 5


async def test_a_stale_expected_version_is_a_conflict_and_stores_nothing(harness: Harness) -> None:
    store = harness.make()
    await store.put((BOOST,), "editor-a", expected=0)
    await store.put((BOOST, HIDE), "editor-b", expected=1)
    with pytest.raises(RulesConflictError) as err:
        await store.put((PIN,), "editor-a", expected=1)  # edited from version 1, which is gone
    assert err.value.current == 2
    assert "'version': 1 is not the current version 2" in str(err.value)
    assert await store.current() == RuleSet(version=2, rules=(BOOST, HIDE))
    assert [e.who for e in await store.audit(10)] == ["editor-b", "editor-a"]


async def test_concurrent_writers_each_get_their_own_version(harness: Harness) -> None:
    """Unconditional puts racing each other: every one is stored as its own version and its audit entry
    describes the version it replaced."""
    store = harness.make()
    sets = [(Rule(id=f"r{i}", action=Hide(), condition=KITCHEN),) for i in range(8)]
    entries: list[AuditEntry] = await asyncio.gather(*(store.put(s, f"w{i}") for i, s in enumerate(sets)))
    assert sorted(e.version for e in entries) == list(range(1, 9))
    audit = await store.audit(100)
    assert [e.version for e in audit] == list(range(8, 0, -1))
    for newer, older in itertools.pairwise(audit):
        # each change removed exactly the rule the one before it added
        assert newer.removed == older.added
    assert (await store.current()).version == 8


async def test_redis_keys_share_one_hash_tag(harness: Harness) -> None:
    if harness.kind != "redis":
        pytest.skip("Redis key layout only")
    assert harness.raw is not None
    store = harness.make()
    await store.put((BOOST,), "key3")
    keys = sorted([k.decode() async for k in harness.raw.scan_iter(match=f"{harness.prefix}:*")])
    assert keys == [f"{harness.prefix}:{{rules}}:audit", f"{harness.prefix}:{{rules}}:current"]
    assert await harness.raw.ttl(keys[0]) == -1  # neither expires


async def test_an_unreadable_stored_set_is_a_422_that_a_put_replaces(harness: Harness) -> None:
    """A stored set this version cannot decode (a rule it no longer accepts) is reported, not served as
    empty, and a put still replaces it."""
    if harness.kind != "redis":
        pytest.skip("only a shared store can hold what another version of journeyrec wrote")
    assert harness.raw is not None
    store = harness.make()
    await store.put((BOOST,), "key3")
    key = f"{harness.prefix}:{{rules}}:current"
    await harness.raw.hset(
        key, "ruleset", b'{"version": 1, "rules": [{"id": "x", "action": {"type": "spin"}}]}'
    )
    with pytest.raises(UnreadableRulesError) as err:
        await store.current()
    assert err.value.version == 1
    assert "version 1" in str(err.value)
    assert "PUT a new one" in str(err.value)
    entry = await store.put((HIDE,), "key3")
    assert (entry.version, entry.added, entry.removed) == (2, ("no-garden",), ())
    assert await store.current() == RuleSet(version=2, rules=(HIDE,))
