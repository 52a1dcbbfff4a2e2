"""The shared test Redis fixture: a Redis asked for explicitly must answer (fail), else the tests skip."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import (
    REDIS_CLUSTER_URL_VARIABLE,
    REDIS_URL_VARIABLE,
    require_redis,
    require_redis_cluster,
)


def _dead_url() -> str:
    with socket.socket() as s:  # a free port: nothing listens there once the socket is closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


def test_an_explicit_test_redis_that_does_not_answer_fails() -> None:
    url = _dead_url()
    with pytest.raises(pytest.fail.Exception, match="Redis does not answer"):
        require_redis(url, {REDIS_URL_VARIABLE: url})


def test_an_explicit_malformed_url_fails() -> None:
    with pytest.raises(pytest.fail.Exception, match="Redis does not answer"):
        require_redis("http://not-redis", {REDIS_URL_VARIABLE: "http://not-redis"})


def test_without_the_variable_a_missing_redis_skips() -> None:
    with pytest.raises(pytest.skip.Exception, match="no Redis at"):
        require_redis(_dead_url(), {})


def test_an_explicit_test_cluster_that_does_not_answer_fails() -> None:
    url = "redis+cluster://" + _dead_url().split("://")[1].split("/")[0]
    with pytest.raises(pytest.fail.Exception, match="Redis Cluster does not answer"):
        require_redis_cluster(url, {REDIS_CLUSTER_URL_VARIABLE: url})


def test_without_the_variable_a_missing_cluster_skips() -> None:
    url = "redis+cluster://" + _dead_url().split("://")[1].split("/")[0]
    with pytest.raises(pytest.skip.Exception, match="no Redis Cluster at"):
        require_redis_cluster(url, {})
