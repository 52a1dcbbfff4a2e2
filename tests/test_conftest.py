"""The shared test Redis fixture: a Redis asked for explicitly must answer (fail), else the tests skip."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import REDIS_URL_VARIABLE, require_redis


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
