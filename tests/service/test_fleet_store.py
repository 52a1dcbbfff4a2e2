"""The fleet store contract (``service.store.fleet_base``): the same tests run against MemoryFleet and
RedisFleet, on a clock the test moves. And the heartbeat of one worker (``service.heartbeat``).

The Redis params run on the test Redis and on the test Redis Cluster (the ``redis_url`` and
``redis_cluster_url`` fixtures, ``tests/conftest.py``, through ``tests.service.redis_fixtures``); each
uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from models.errors import StoreUnavailableError
from models.recommender import Recommender
from service.heartbeat import LEAVE_ATTEMPTS, Heartbeat, worker_id
from service.model_holder import ModelHolder
from service.store.base import StoreBusyError
from service.store.fleet_base import FleetStore, MemoryFleet, WorkerBeat
from service.store.fleet_redis import RedisFleet
from tests.service.api_fixtures import LogRecords
from tests.service.redis_fixtures import STORE_KINDS, delete_prefix, raw_client, url_of

TTL = 15.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    kind: str
    make: Callable[[Clock], FleetStore]
    raw: Any = None
    prefix: str = ""


@pytest.fixture(params=STORE_KINDS)
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "memory":
        yield Harness("memory", lambda clock: MemoryFleet(TTL, clock=clock))
        return
    url = url_of(request, request.param)
    raw: Any = raw_client(url)
    prefix = f"jrtest-{uuid.uuid4().hex[:12]}"
    try:
        yield Harness(
            "redis", lambda clock: RedisFleet(raw, prefix=prefix, ttl=TTL, clock=clock), raw, prefix
        )
    finally:
        await delete_prefix(raw, prefix)
        await raw.aclose()


def beat(worker: str, version: str | None, started: float, seen: float) -> WorkerBeat:
    return WorkerBeat(worker, version, started, seen)


async def test_workers_are_listed_by_id_with_their_last_beat(harness: Harness) -> None:
    clock = Clock()
    fleet = harness.make(clock)
    t = clock.now
    assert await fleet.workers() == []
    await fleet.beat(beat("host-b:7", "v1", t - 100, t))
    await fleet.beat(beat("host-a:9", None, t - 5, t))
    await fleet.beat(beat("host-a:9", "v2", t - 5, t + 1))  # replaces its earlier beat
    clock.now = t + 2
    assert await fleet.workers() == [beat("host-a:9", "v2", t - 5, t + 1), beat("host-b:7", "v1", t - 100, t)]


async def test_a_worker_unheard_of_for_the_ttl_is_gone(harness: Harness) -> None:
    clock = Clock()
    fleet = harness.make(clock)
    t = clock.now
    await fleet.beat(beat("quiet:1", "v1", t, t))
    await fleet.beat(beat("busy:2", "v1", t, t))
    clock.now = t + TTL - 1
    await fleet.beat(beat("busy:2", "v1", t, clock.now))
    assert [b.worker for b in await fleet.workers()] == ["busy:2", "quiet:1"]
    clock.now = t + TTL  # quiet's beat is ttl old
    assert [b.worker for b in await fleet.workers()] == ["busy:2"]
    if harness.raw is not None:  # a later beat drops it from the index too
        await fleet.beat(beat("busy:2", "v1", t, clock.now))
        index = await harness.raw.zrange(f"{harness.prefix}:{{fleet}}:workers", 0, -1)
        assert index == [b"busy:2"]
    clock.now = t + 3 * TTL
    assert await fleet.workers() == []


async def test_a_worker_that_leaves_is_gone_at_once(harness: Harness) -> None:
    clock = Clock()
    fleet = harness.make(clock)
    t = clock.now
    await fleet.beat(beat("a:1", "v1", t, t))
    await fleet.beat(beat("b:2", "v1", t, t))
    await fleet.leave("a:1")
    await fleet.leave("never-there:3")
    assert [b.worker for b in await fleet.workers()] == ["b:2"]
    await fleet.leave("b:2")
    assert await fleet.workers() == []
    if harness.raw is not None:  # nothing left behind
        assert [k async for k in harness.raw.scan_iter(match=f"{harness.prefix}:*")] == []


async def test_a_redis_that_does_not_answer_is_a_store_error() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    raw = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_timeout=1)
    fleet = RedisFleet(raw, prefix="jrtest-down", ttl=TTL)
    try:
        with pytest.raises(StoreUnavailableError, match="fleet store is unavailable"):
            await fleet.workers()
        with pytest.raises(StoreUnavailableError, match="heartbeat"):
            await fleet.beat(beat("a:1", None, 0.0, 0.0))
        # the heartbeat logs it and carries on
        holder = ModelHolder(None)
        assert await Heartbeat(fleet, holder).beat() is False
        await Heartbeat(fleet, holder).leave()
    finally:
        await raw.aclose()


async def test_the_heartbeat_says_who_this_worker_is_and_what_it_serves(
    recommender: Recommender, models_dir: Path
) -> None:
    clock = Clock()
    fleet = MemoryFleet(TTL, clock=clock)
    holder = ModelHolder(models_dir)
    heartbeat = Heartbeat(fleet, holder, clock=clock)
    assert heartbeat.worker == worker_id() == f"{socket.gethostname()}:{os.getpid()}"
    started = clock.now
    assert await heartbeat.beat() is True
    assert await fleet.workers() == [beat(heartbeat.worker, None, started, started)]  # no model yet
    await holder.reload()
    clock.now += 4
    await heartbeat.beat()
    assert await fleet.workers() == [beat(heartbeat.worker, recommender.version, started, clock.now)]
    await heartbeat.leave()
    assert await fleet.workers() == []


class FlakyLeave(MemoryFleet):
    """A fleet whose first ``failures`` leaves time out (a busy store)."""

    def __init__(self, failures: int) -> None:
        super().__init__(TTL)
        self.failures = failures
        self.leaves = 0

    async def leave(self, worker: str) -> None:
        self.leaves += 1
        if self.leaves <= self.failures:
            raise StoreBusyError(f"leave {self.leaves} timed out")
        await super().leave(worker)


async def test_a_worker_leaving_tries_again_when_the_store_is_busy(service_log: LogRecords) -> None:
    holder = ModelHolder(None)
    fleet = FlakyLeave(failures=LEAVE_ATTEMPTS - 1)
    heartbeat = Heartbeat(fleet, holder)
    await heartbeat.beat()
    await heartbeat.leave()
    assert fleet.leaves == LEAVE_ATTEMPTS
    assert await fleet.workers() == []
    assert not [r for r in service_log.records if "not removed" in r.getMessage()]

    fleet = FlakyLeave(failures=LEAVE_ATTEMPTS)
    heartbeat = Heartbeat(fleet, holder)
    await heartbeat.beat()
    await heartbeat.leave()  # gives up: the beat expires instead
    assert fleet.leaves == LEAVE_ATTEMPTS
    assert [b.worker for b in await fleet.workers()] == [heartbeat.worker]
    warned = [r.getMessage() for r in service_log.records if "not removed" in r.getMessage()]
    expected = (
        f"worker heartbeat not removed after {LEAVE_ATTEMPTS} attempts; it is listed for up to 15 s: "
        f"leave {LEAVE_ATTEMPTS} timed out"
    )
    assert warned == [expected]
