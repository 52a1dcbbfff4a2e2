"""Which exceptions ``service.store.redis_store.unavailable`` turns into a store outage: redis-py's, and
any raised in redis-py's connection code or the event loop's transport under it (a connection the peer
closed, redis/redis-py#4287: TypeError or AttributeError from asyncio, RuntimeError from uvloop); never
one raised by ours."""

from __future__ import annotations

import builtins

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from service.store.base import StoreDownError
from service.store.redis_store import unavailable


def _raise_in(filename: str, exc: str) -> None:
    """Raise ``exc`` from code whose frame names ``filename`` (as a module of that path would)."""
    exec(compile(f"raise {exc}('x')", filename, "exec"))


@pytest.mark.parametrize("exc", ["AttributeError", "TypeError", "RuntimeError"])
def test_a_fault_inside_redis_py_is_a_store_outage(exc: str) -> None:
    with pytest.raises(StoreDownError, match=f"unavailable \\(append: {exc}\\)"), unavailable("append"):
        _raise_in("/venv/lib/python3.11/site-packages/redis/asyncio/connection.py", exc)


def test_a_fault_of_asyncio_under_redis_py_is_a_store_outage() -> None:
    """The transport's error under redis-py's write (redis/redis-py#4287's TypeError)."""
    redis_py = "/venv/lib/python3.11/site-packages/redis/asyncio/connection.py"
    transport = "/usr/lib/python3.11/asyncio/selector_events.py"
    code = compile(
        f"exec(compile(\"raise TypeError('NoneType object is not callable')\", {transport!r}, 'exec'))",
        redis_py,
        "exec",
    )
    with pytest.raises(StoreDownError), unavailable("append"):
        exec(code)


def test_a_closed_uvloop_handle_under_redis_py_is_a_store_outage() -> None:
    """uvloop's "unable to perform operation on <TCPTransport closed=True ...>; the handler is closed"."""
    redis_py = "/venv/lib/python3.11/site-packages/redis/asyncio/connection.py"
    transport = "uvloop/handles/handle.pyx"
    code = compile(
        f"exec(compile(\"raise RuntimeError('the handler is closed')\", {transport!r}, 'exec'))",
        redis_py,
        "exec",
    )
    with pytest.raises(StoreDownError, match="RuntimeError"), unavailable("append"):
        exec(code)


def test_asyncio_alone_is_not_redis_py() -> None:
    with pytest.raises(TypeError), unavailable("append"):
        _raise_in("/usr/lib/python3.11/asyncio/selector_events.py", "TypeError")


@pytest.mark.parametrize("exc", ["AttributeError", "TypeError", "RuntimeError", "ValueError"])
def test_a_fault_of_ours_is_not_hidden(exc: str) -> None:
    with pytest.raises(getattr(builtins, exc)), unavailable("append"):
        _raise_in("/repo/service/store/redis_store.py", exc)


def test_a_redis_error_is_a_store_outage() -> None:
    with pytest.raises(StoreDownError), unavailable("read"):
        raise RedisConnectionError("refused")
