"""Fixtures shared by every test package: the storefront model, the test Redis and the test Redis Cluster.

Redis: ``JOURNEYREC_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/15). A test that asks for ``redis_url``
fails when that variable is set and Redis does not answer, and is skipped when it is unset and nothing
answers at the default. Redis Cluster likewise: ``redis_cluster_url``, ``JOURNEYREC_TEST_REDIS_CLUSTER_URL``
(default redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103, the cluster ``.ci/run`` starts).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster
from redis.exceptions import RedisClusterException

from models.recommender import Recommender
from tests.storefront import train_storefront_model

REDIS_URL_VARIABLE = "JOURNEYREC_TEST_REDIS_URL"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/15"
REDIS_URL = os.environ.get(REDIS_URL_VARIABLE, DEFAULT_REDIS_URL)
REDIS_CLUSTER_URL_VARIABLE = "JOURNEYREC_TEST_REDIS_CLUSTER_URL"
DEFAULT_REDIS_CLUSTER_URL = "redis+cluster://127.0.0.1:7101,127.0.0.1:7102,127.0.0.1:7103"
REDIS_CLUSTER_URL = os.environ.get(REDIS_CLUSTER_URL_VARIABLE, DEFAULT_REDIS_CLUSTER_URL)


def require_redis(url: str, environ: Mapping[str, str]) -> str:
    """``url`` once a Redis there answers a ping; else the test fails when ``environ`` names a test Redis
    explicitly (it was asked for) and is skipped when it does not."""
    try:
        client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError) as e:
        if REDIS_URL_VARIABLE in environ:
            pytest.fail(f"{REDIS_URL_VARIABLE}={url}: Redis does not answer: {e}")
        pytest.skip(f"no Redis at {url} (set {REDIS_URL_VARIABLE} to require one)")
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The test Redis's URL (see the module docstring). Each test uses its own key prefix and cleans up."""
    return require_redis(REDIS_URL, os.environ)


def require_redis_cluster(url: str, environ: Mapping[str, str]) -> str:
    """``url`` (``redis+cluster://host:port,...``) once the cluster there answers ``cluster info`` with
    state ok; else fails or skips as ``require_redis`` does, on ``JOURNEYREC_TEST_REDIS_CLUSTER_URL``."""
    try:
        hosts = url.partition("://")[2].split("/", 1)[0].split(",")
        nodes = [ClusterNode(h.rsplit(":", 1)[0], int(h.rsplit(":", 1)[1])) for h in hosts]
        client = RedisCluster(startup_nodes=nodes, socket_timeout=2, socket_connect_timeout=2)
        try:
            state = client.cluster_info().get("cluster_state")
        finally:
            client.close()
    except (redis.RedisError, RedisClusterException, OSError, ValueError, IndexError) as e:
        state = f"{type(e).__name__}: {e}"
    if state != "ok":
        if REDIS_CLUSTER_URL_VARIABLE in environ:
            pytest.fail(f"{REDIS_CLUSTER_URL_VARIABLE}={url}: Redis Cluster does not answer: {state}")
        pytest.skip(f"no Redis Cluster at {url} (set {REDIS_CLUSTER_URL_VARIABLE} to require one)")
    return url


@pytest.fixture(scope="session")
def redis_cluster_url() -> str:
    """The test Redis Cluster's URL (see the module docstring). Each test uses its own key prefix and cleans
    up on every master."""
    return require_redis_cluster(REDIS_CLUSTER_URL, os.environ)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory with one version trained on the storefront (``tests.storefront``)."""
    d = tmp_path_factory.mktemp("models")
    train_storefront_model(d)
    return d


@pytest.fixture(scope="session")
def recommender(models_dir: Path) -> Recommender:
    return Recommender.load(models_dir)
