"""After Redis restarts, a worker's pooled connections (the server closed them all) are reconnected before
use: the first reads after the restart answer, none fails. Each test runs its own ``redis-server`` (with an
append-only file, as the chaos run's) on a free port and restarts it with ``kill -9``.

Needs ``redis-server`` on the PATH: skipped without it, failed without it in CI
(``JOURNEYREC_TEST_REDIS_URL`` set)."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.domain import Event, EventType
from scripts.chaos_procs import RedisServer, create_cluster, free_port, wait_cluster_ok
from service.store.redis_store import RedisStore, client_from_url

pytestmark = pytest.mark.redis

#: connections each pool opens before the restart (concurrent commands), then reads after it, one by one
POOLED = 10


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("JOURNEYREC_TEST_REDIS_URL"):
            pytest.fail("redis-server not found, and JOURNEYREC_TEST_REDIS_URL is set (CI)")
        pytest.skip("redis-server not found")
    s = RedisServer(free_port(), tmp_path / "redis")
    s.start()
    try:
        yield s
    finally:
        s.stop()


def _restart(server: RedisServer) -> None:
    server.kill9()
    server.start()  # the same port, its append-only file loaded


def test_the_visitor_store_reads_on_the_first_request_after_a_restart(server: RedisServer) -> None:
    async def run() -> list[int]:
        store = RedisStore.from_url(
            server.url,
            prefix="restart",
            visitor_ttl=3600,
            recent_events=50,
            stream_maxlen=1000,
            socket_timeout=2,
        )
        try:
            event = Event(visitor_id="v", item_id="i1", event=EventType.PRODUCT_VIEW, timestamp=1.0e9)
            await store.append([event])
            # several connections open at once: all of them idle in the pool when Redis goes away
            await asyncio.gather(*(store.visitor("v") for _ in range(POOLED)))
            await asyncio.to_thread(_restart, server)
            return [len((await store.visitor("v")).events) for _ in range(POOLED + 2)]
        finally:
            await store.close()

    assert asyncio.run(run()) == [1] * (POOLED + 2)


def test_a_stores_own_client_reads_on_the_first_command_after_a_restart(server: RedisServer) -> None:
    """``client_from_url``: the live catalog's, the rate limiter's."""

    async def run() -> list[bytes | None]:
        client = client_from_url(server.url, socket_timeout=2)
        try:
            await client.set("restart:k", "x")
            await asyncio.gather(*(client.blpop(["restart:none"], timeout=0.1) for _ in range(POOLED)))
            await asyncio.to_thread(_restart, server)
            return [await client.get("restart:k") for _ in range(POOLED + 2)]
        finally:
            await client.aclose()

    assert asyncio.run(run()) == [b"x"] * (POOLED + 2)


def test_a_cluster_client_reads_on_the_first_command_after_a_master_restarts(tmp_path: Path) -> None:
    """A 3-master cluster of its own; the master holding the key restarts (no replica, no failover)."""
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        if os.environ.get("JOURNEYREC_TEST_REDIS_URL"):
            pytest.fail("redis-server / redis-cli not found, and JOURNEYREC_TEST_REDIS_URL is set (CI)")
        pytest.skip("redis-server / redis-cli not found")
    nodes = [RedisServer(free_port(bus=True), tmp_path / f"n{i}", cluster=True) for i in range(3)]
    try:
        for n in nodes:
            n.start()
        create_cluster(nodes)

        async def run() -> list[bytes | None]:
            client = client_from_url(
                "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes), socket_timeout=2
            )
            try:
                await client.set("restart:k", "x")
                node = client.get_node_from_key("restart:k")  # the master holding the key
                assert node is not None
                await asyncio.gather(*(client.get("restart:k") for _ in range(POOLED)))
                master = next(n for n in nodes if n.port == node.port)
                await asyncio.to_thread(_restart_in, master, nodes)
                return [await client.get("restart:k") for _ in range(POOLED + 2)]
            finally:
                await client.aclose()

        assert asyncio.run(run()) == [b"x"] * (POOLED + 2)
    finally:
        for n in nodes:
            n.stop()


def _restart_in(server: RedisServer, cluster: list[RedisServer]) -> None:
    _restart(server)
    wait_cluster_ok(cluster)
