"""The ExperimentStore contract: the same tests run against MemoryExperimentStore and RedisExperimentStore.

The Redis params run on the test Redis and on the test Redis Cluster (the ``redis_url`` and
``redis_cluster_url`` fixtures, ``tests/conftest.py``, through ``tests.service.redis_fixtures``); each
uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from models.errors import NotFoundError
from models.experiments import Experiment
from service.errors import ConflictError
from service.store.experiments_base import ExperimentStore
from service.store.experiments_memory import MemoryExperimentStore
from service.store.experiments_redis import RedisExperimentStore
from tests.service.redis_fixtures import STORE_KINDS, delete_prefix, raw_client, url_of


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def doc(experiment_id: str = "e1", **kw: object) -> Experiment:
    d: dict[str, object] = {
        "id": experiment_id,
        "placements": ["home"],
        "variants": [{"name": "control", "control": True}, {"name": "b", "strategy": "popular"}],
    }
    d.update(kw)
    return msgspec.convert(d, Experiment)


@dataclass
class Harness:
    make: Callable[[], ExperimentStore]
    raw: Any = None
    prefix: str = ""


@pytest.fixture(params=STORE_KINDS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield Harness(lambda: MemoryExperimentStore(clock=Clock()))
        return
    url = url_of(request, request.param)
    raw: Any = raw_client(url)
    prefix = f"jrtest-{uuid.uuid4().hex[:12]}"
    try:
        yield Harness(lambda: RedisExperimentStore(raw, prefix=prefix, clock=Clock()), raw, prefix)
    finally:
        await delete_prefix(raw, prefix)
        await raw.aclose()


async def test_an_empty_store(harness: Harness) -> None:
    store = harness.make()
    assert await store.version() == 0
    assert await store.list() == []
    with pytest.raises(NotFoundError, match="nope"):
        await store.get("nope")


async def test_create_replace_list_get(harness: Harness) -> None:
    store = harness.make()
    # a client's state fields are ignored: a put always stores a draft
    stored = await store.put(doc("e2", state="running", started_at=5.0))
    assert stored.state == "draft"
    assert stored.started_at is None
    await store.put(doc("e1"))
    assert [e.id for e in await store.list()] == ["e1", "e2"]
    replaced = await store.put(doc("e1", traffic=0.5))
    assert (await store.get("e1")) == replaced
    assert replaced.traffic == 0.5
    assert await store.version() == 3


async def test_lifecycle_draft_running_stopped(harness: Harness) -> None:
    store = harness.make()
    await store.put(doc())
    with pytest.raises(ConflictError, match="draft"):
        await store.stop("e1")
    running = await store.start("e1")
    assert running.state == "running"
    assert running.started_at == 1_800_000_002.0  # each transition reads the clock once
    assert await store.start("e1") == running  # idempotent
    with pytest.raises(ConflictError, match="only a draft"):
        await store.put(doc())
    with pytest.raises(ConflictError, match="stop it first"):
        await store.delete("e1")
    stopped = await store.stop("e1")
    assert (stopped.state, stopped.started_at, stopped.stopped_at) == (
        "stopped",
        1_800_000_002.0,
        1_800_000_004.0,
    )
    assert await store.stop("e1") == stopped
    with pytest.raises(ConflictError, match="cannot run again"):
        await store.start("e1")
    with pytest.raises(ConflictError, match="only a draft"):
        await store.put(doc())
    before = await store.version()
    await store.delete("e1")
    assert await store.version() > before
    with pytest.raises(NotFoundError):
        await store.delete("e1")
    with pytest.raises(NotFoundError):
        await store.start("e1")


async def test_a_draft_can_be_deleted(harness: Harness) -> None:
    store = harness.make()
    await store.put(doc())
    await store.delete("e1")
    assert await store.list() == []


async def test_concurrent_starts_and_puts_leave_one_consistent_document(harness: Harness) -> None:
    store = harness.make()
    await store.put(doc())
    outcomes = await asyncio.gather(
        *(store.start("e1") for _ in range(5)), *(store.put(doc()) for _ in range(5)), return_exceptions=True
    )
    final = await store.get("e1")
    assert final.state == "running"  # once started, no put went through after it
    assert all(isinstance(o, (Experiment, ConflictError)) for o in outcomes)


async def test_two_handles_on_one_redis_share_the_documents(harness: Harness) -> None:
    if harness.raw is None:
        pytest.skip("one process only")
    a, b = harness.make(), harness.make()
    await a.put(doc())
    await a.start("e1")
    assert (await b.get("e1")).state == "running"
    assert await b.version() == await a.version() == 2


async def test_redis_keys_share_one_hash_slot(harness: Harness) -> None:
    if harness.raw is None:
        pytest.skip("redis only")
    store = harness.make()
    assert isinstance(store, RedisExperimentStore)
    assert "{exp}" in store.docs_key
    assert "{exp}" in store.version_key
