"""``service.store.resp``: RESP packing (known bytes, non-ASCII lengths) and one-round-trip runs against
the test Redis (replies in order, error replies raised, scripts loaded on NOSCRIPT, no stale reply after a
cancelled run)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from service.store.resp import evalsha, pack, run


def test_pack_writes_resp2() -> None:
    assert pack([["GET", "k"]]) == b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"
    assert pack([["SET", "k", b"\x00\xff"], ["PING"]]) == (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\x00\xff\r\n*1\r\n$4\r\nPING\r\n"
    )


def test_pack_counts_bytes_not_characters() -> None:
    assert pack([["SET", "k", "é"]]) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\n\xc3\xa9\r\n"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[tuple[aioredis.Redis, str]]:
    c = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    prefix = f"jrtest-{uuid.uuid4().hex[:12]}"
    try:
        yield c, prefix
    finally:
        keys = [k async for k in c.scan_iter(match=f"{prefix}:*")]
        if keys:
            await c.delete(*keys)
        await c.aclose()


@pytest.mark.redis
async def test_run_answers_in_order_and_loads_a_missing_script(client: tuple[aioredis.Redis, str]) -> None:
    c, prefix = client
    # a script no server has seen (a unique comment): the first EVALSHA is refused with NOSCRIPT
    script = c.register_script(f"-- {uuid.uuid4().hex}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    commands = [evalsha(script, [f"{prefix}:n"], [str(i)]) for i in range(1, 201)]
    replies = await run(c, [["SET", f"{prefix}:s", "é"], *commands, ["GET", f"{prefix}:s"]], [script])
    assert replies[0] == b"OK"
    assert replies[1:-1] == [i * (i + 1) // 2 for i in range(1, 201)]
    assert replies[-1] == "é".encode()


@pytest.mark.redis
async def test_an_error_reply_is_raised(client: tuple[aioredis.Redis, str]) -> None:
    c, prefix = client
    await c.set(f"{prefix}:s", "text")
    with pytest.raises(ResponseError):
        await run(c, [["INCR", f"{prefix}:s"], ["PING"]], [])
    assert await run(c, [["PING"]], []) == [b"PONG"]  # the connection went back in step


@pytest.mark.redis
async def test_a_cancelled_run_leaves_no_stale_reply(client: tuple[aioredis.Redis, str]) -> None:
    c, prefix = client
    big = [["SET", f"{prefix}:k{i}", str(i)] for i in range(20_000)]
    task = asyncio.create_task(run(c, big, []))
    await asyncio.sleep(0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    for i in range(20):
        assert await run(c, [["ECHO", f"x{i}"]], []) == [f"x{i}".encode()]


def test_the_snapshot_template_packs_as_the_generic_commands() -> None:
    from service.analytics.redis_store import _snapshot_commands, _snapshot_text

    class Visitors:
        def visitor_base(self, v: str) -> str:
            return f"jr:{{v:{v.encode().hex()}}}"

    ids = ["a", "visitor:{7}", "z" * 300]
    text = "".join(_snapshot_text(Visitors().visitor_base(v), "7776000") for v in ids)
    assert text.encode() == pack(_snapshot_commands(Visitors(), ids, "7776000"))  # type: ignore[arg-type]
