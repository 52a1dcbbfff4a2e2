"""What the store tests share to run one store on memory, on the test Redis and on the test Redis Cluster
(``redis_url`` and ``redis_cluster_url``, ``tests/conftest.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from service.store.redis_store import AnyRedis, client_from_url

#: the params of a store fixture: the embedded store, one Redis server, a Redis Cluster
STORE_KINDS = [
    "memory",
    pytest.param("redis", marks=pytest.mark.redis),
    pytest.param("cluster", marks=pytest.mark.redis),
]
#: the Redis params only
REDIS_KINDS = STORE_KINDS[1:]


def url_of(request: pytest.FixtureRequest, kind: str) -> str:
    """The test Redis's URL for ``kind`` "redis", the test cluster's for "cluster"."""
    url: str = request.getfixturevalue("redis_url" if kind == "redis" else "redis_cluster_url")
    return url


def raw_client(url: str) -> AnyRedis:
    """A client of the test's own for ``url`` (one server's, or a cluster's that follows ``MOVED``)."""
    return client_from_url(url, socket_timeout=5)


async def delete_prefix(raw: Any, prefix: str) -> list[bytes]:
    """Delete every key under ``prefix`` (a cluster client scans every master); returns the keys."""
    keys = [k async for k in raw.scan_iter(match=f"{prefix}:*", count=1000)]
    for key in keys:
        await raw.delete(key)
    return keys
