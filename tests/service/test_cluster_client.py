"""The cluster client the stores share (``redis_store.GatedCluster``) on the test Redis Cluster: commands and
pipelines that a new client starts all at once reach the masters of their slots.

Needs the test Redis Cluster (the ``redis_cluster_url`` fixture, ``tests/conftest.py``); keys under a prefix
of the test's own, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from service.store.redis_store import GatedCluster, client_from_url
from tests.service.redis_fixtures import delete_prefix

pytestmark = pytest.mark.redis


async def test_a_new_client_answers_commands_and_pipelines_started_together(redis_cluster_url: str) -> None:
    """redis-py 8.1's cluster client, asked by many tasks at once before it knew the slots, sent commands
    to the wrong masters and then dropped connections still in use; ``GatedCluster`` learns the slots
    first. Each round is a new client: 16 tasks, each a command and a pipeline over three slots."""
    prefix = f"jrtest-{uuid.uuid4().hex[:10]}"
    keys = [f"{prefix}:{{k{i}}}" for i in range(48)]
    assert {key_slot(k.encode()) * 3 // REDIS_CLUSTER_HASH_SLOTS for k in keys} == {0, 1, 2}
    for _round in range(5):
        r = client_from_url(redis_cluster_url, socket_timeout=5)
        assert isinstance(r, GatedCluster)

        async def task(i: int, r: GatedCluster = r) -> list[object]:
            await r.set(keys[i], str(i))
            pipe = r.pipeline(transaction=False)
            for k in keys[i : i + 3]:
                pipe.incr(f"{k}:n")
            return [await r.get(keys[i]), *await pipe.execute()]

        try:
            answers = await asyncio.gather(*(task(i) for i in range(16)))
        finally:
            await delete_prefix(r, prefix)
            await r.aclose()
        assert [a[0] for a in answers] == [str(i).encode() for i in range(16)]
        # each counter, raised by up to three tasks from nothing, answered 1 .. the number of its raises
        raised = Counter(f"{k}:n" for i in range(16) for k in keys[i : i + 3])
        assert sorted(n for a in answers for n in a[1:]) == sorted(
            n for count in raised.values() for n in range(1, count + 1)
        )
