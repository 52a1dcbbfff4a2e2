"""The CatalogStore contract: the same tests run against MemoryCatalog and RedisCatalog.

The Redis params run on the test Redis and on the test Redis Cluster (the ``redis_url`` and
``redis_cluster_url`` fixtures, ``tests/conftest.py``, through ``tests.service.redis_fixtures``). Every
test uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from models.domain import CatalogItem, ItemKind, Stage
from models.overlay import LiveItem
from service.store import redis_catalog
from service.store.catalog_base import CatalogStore, WriteOutcome
from service.store.memory_catalog import MemoryCatalog
from service.store.redis_catalog import RedisCatalog
from tests.service.redis_fixtures import STORE_KINDS, delete_prefix, raw_client, url_of

T0 = 1_735_689_600.0
W = WriteOutcome


def live(item_id: str, t: float, **fields: Any) -> LiveItem:
    flags = {k: fields.pop(k) for k in ("hidden", "available_from", "expires_at", "retired") if k in fields}
    item = CatalogItem(item_id=item_id, **{"category": "kettles", "price": 30.0, **fields})
    return LiveItem(item=item, updated_at=t, **flags)


@dataclass
class Harness:
    kind: str
    make: Callable[[], CatalogStore]
    raw: Any = None
    prefix: str = ""


@pytest.fixture(params=STORE_KINDS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield Harness("memory", MemoryCatalog)
        return
    url = url_of(request, request.param)
    raw: Any = raw_client(url)
    prefix = f"jrtest-{uuid.uuid4().hex[:12]}"
    stores: list[RedisCatalog] = []

    def make() -> CatalogStore:
        store = RedisCatalog.from_url(url, prefix=prefix, socket_timeout=5)
        stores.append(store)
        return store

    try:
        yield Harness("redis", make, raw, prefix)
    finally:
        for store in stores:
            await store.close()
        await delete_prefix(raw, prefix)
        await raw.aclose()


def outcomes(answer: Any) -> list[WriteOutcome]:
    return [r.outcome for r in answer.results]


async def test_an_empty_store_is_version_zero(harness: Harness) -> None:
    store = harness.make()
    assert await store.version() == 0
    overlay = await store.overlay()
    assert (overlay.version, overlay.items) == (0, {})
    assert await store.get("nope") is None
    answer = await store.put([])
    assert (answer.version, answer.results) == (0, [])


async def test_put_stores_every_field_and_bumps_the_version(harness: Harness) -> None:
    store = harness.make()
    odd_id = "kettle {x}:|,é"
    first = live(
        odd_id,
        T0 + 0.123456,
        kind=ItemKind.CONTENT,
        title="Kettle, steel",
        tags=("steel", "1.7 l"),
        stages=(Stage.AWARENESS, Stage.RETENTION),
        in_stock=False,
        repeatable=True,
        price=None,
        hidden=True,
        available_from=T0 + 10,
        expires_at=T0 + 1e6,
    )
    answer = await store.put([first])
    assert outcomes(answer) == [W.STORED]
    assert answer.version == 1
    assert await store.version() == 1
    assert await store.get(odd_id) == first
    second = live("teapot", T0)
    answer = await store.put([second])
    assert answer.version == 2
    overlay = await store.overlay()
    assert overlay.version == 2
    assert overlay.items == {odd_id: first, "teapot": second}


async def test_an_update_no_newer_than_the_stored_one_is_ignored(harness: Harness) -> None:
    store = harness.make()
    await store.put([live("k", T0 + 10, in_stock=False)])
    for t in (T0 + 9.999, T0 + 10):  # older, and as old
        answer = await store.put([live("k", t, in_stock=True)])
        assert outcomes(answer) == [W.IGNORED_OLDER]
        assert answer.version == 1
    stored = await store.get("k")
    assert stored is not None
    assert stored.item.in_stock is False
    newer = live("k", T0 + 10.000001, price=12.5)
    answer = await store.put([newer])
    assert (outcomes(answer), answer.version) == ([W.STORED], 2)
    assert await store.get("k") == newer


async def test_a_retired_item_refuses_every_later_write(harness: Harness) -> None:
    store = harness.make()
    await store.put([live("k", T0)])
    retired = live("k", T0 + 5, retired=True)
    assert outcomes(await store.put([retired])) == [W.STORED]
    for t in (T0 + 1, T0 + 100):  # older or newer, a retired item stays as it is
        answer = await store.put([live("k", t)])
        assert outcomes(answer) == [W.REFUSED]
        assert answer.version == 2
    assert outcomes(await store.put([live("k", T0 + 200, retired=True)])) == [W.REFUSED]
    assert outcomes(await store.put([live("k", T0 + 300)], based_on=[T0 + 5])) == [W.REFUSED]
    assert await store.get("k") == retired
    # an item retired before anything else was known of it is stored retired
    assert outcomes(await store.put([live("new", T0, retired=True)])) == [W.STORED]


async def test_a_batch_is_applied_in_order(harness: Harness) -> None:
    store = harness.make()
    await store.put([live("a", T0 + 50)])
    batch = [
        live("a", T0 + 10),  # older than the stored one
        live("b", T0 + 10),
        live("b", T0 + 20, price=5.0),  # newer than the batch's own earlier entry
        live("b", T0 + 15),  # older than that one
        live("c", T0, retired=True),
        live("c", T0 + 1),  # retired by the entry before
    ]
    answer = await store.put(batch)
    assert outcomes(answer) == [W.IGNORED_OLDER, W.STORED, W.STORED, W.IGNORED_OLDER, W.STORED, W.REFUSED]
    assert [r.item_id for r in answer.results] == ["a", "b", "b", "b", "c", "c"]
    assert answer.version == 1 + 3
    assert await store.get("b") == batch[2]


async def test_a_conditional_write_needs_the_entry_it_was_based_on(harness: Harness) -> None:
    store = harness.make()
    # based on "nothing stored": stored while nothing is, moved once something is
    assert outcomes(await store.put([live("k", T0)], based_on=[None])) == [W.STORED]
    assert outcomes(await store.put([live("k", T0 + 1)], based_on=[None])) == [W.MOVED]
    # based on the stored entry: stored; based on another one: moved (nothing written)
    assert outcomes(await store.put([live("k", T0 + 1, price=1.0)], based_on=[T0])) == [W.STORED]
    answer = await store.put([live("k", T0 + 2, price=2.0)], based_on=[T0])
    assert (outcomes(answer), answer.version) == ([W.MOVED], 2)
    assert outcomes(await store.put([live("x", T0)], based_on=[T0])) == [W.MOVED]  # none stored
    # based on the right entry but not newer than it: ignored
    assert outcomes(await store.put([live("k", T0 + 0.5)], based_on=[T0 + 1])) == [W.IGNORED_OLDER]
    stored = await store.get("k")
    assert stored is not None
    assert stored.item.price == 1.0
    with pytest.raises(ValueError, match="based_on"):
        await store.put([live("k", T0 + 9)], based_on=[])


async def test_stores_share_one_catalog(harness: Harness) -> None:
    """Two store objects (two workers) see each other's writes; the memory store is one process's."""
    if harness.kind != "redis":
        pytest.skip("one process only")
    one, two = harness.make(), harness.make()
    await one.put([live("k", T0)])
    assert await two.version() == 1
    assert outcomes(await two.put([live("k", T0)])) == [W.IGNORED_OLDER]
    assert (await two.overlay()).items["k"] == live("k", T0)


async def test_redis_keys_carry_one_hash_tag(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    if harness.kind != "redis":
        pytest.skip("Redis key layout only")
    monkeypatch.setattr(redis_catalog, "PUT_CHUNK", 3)  # a batch of several script calls
    store = harness.make()
    answer = await store.put([live(f"i{n}", T0 + n) for n in range(7)] + [live("i0", T0 - 1)])
    assert outcomes(answer) == [W.STORED] * 7 + [W.IGNORED_OLDER]
    assert answer.version == 7
    assert harness.raw is not None
    keys = sorted([k.decode() async for k in harness.raw.scan_iter(match=f"{harness.prefix}:*")])
    assert keys == [f"{harness.prefix}:{{cat}}:items", f"{harness.prefix}:{{cat}}:version"]
    raw = await harness.raw.hget(f"{harness.prefix}:{{cat}}:items", "i3")
    assert msgspec.json.decode(raw, type=LiveItem) == live("i3", T0 + 3)
