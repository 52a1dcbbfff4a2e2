"""``service.export.export_events``: the Redis event stream as a JSON Lines training file.

Needs the test Redis (the ``redis_url`` fixture, ``tests/conftest.py``: fails when JOURNEYREC_TEST_REDIS_URL
is set and Redis does not answer, skips when it is unset and the default does not answer). Each test uses
its own key prefix and cleans up.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest
import redis.asyncio as aioredis

from models.domain import Channel, Event, EventType
from models.errors import InvalidInputError, StoreUnavailableError
from service.export import EXPORT_SOCKET_TIMEOUT, ExportSummary, export_events, export_store
from service.settings import Settings, load_settings
from service.store.redis_store import RedisStore
from tests.conftest import REDIS_URL

T0 = 1_735_689_600.0  # 2025-01-01T00:00:00Z


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    raw = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    p = f"jrtest-{uuid.uuid4().hex[:12]}"
    try:
        yield p
    finally:
        keys = [k async for k in raw.scan_iter(match=f"{p}:*", count=1000)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


def settings_for(prefix: str, url: str = REDIS_URL) -> Settings:
    return load_settings({"redis_url": url, "redis_prefix": prefix}, environ={})


async def append(prefix: str, events: list[Event]) -> None:
    s = settings_for(prefix)
    store = RedisStore.from_url(
        REDIS_URL,
        prefix=prefix,
        visitor_ttl=s.visitor_ttl,
        recent_events=s.recent_events,
        stream_maxlen=s.stream_maxlen,
        socket_timeout=5,
    )
    try:
        await store.append(events)
    finally:
        await store.close()


def read_lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.redis
async def test_export_writes_the_stream_as_native_json_lines(prefix: str, tmp_path: Path) -> None:
    events = [
        Event(
            visitor_id="v1",
            item_id="p-1",
            event=EventType.PURCHASE,
            timestamp=T0 + 1.5,
            event_id="e-1",
            session_id="s-1",
            channel=Channel.EMAIL,
            quantity=2.0,
            value=39.9,
            country="FR",
        ),
        Event(visitor_id="v2", item_id="c-1", event=EventType.CONTENT_VIEW, timestamp=T0),
        Event(visitor_id="v1", item_id="p-1", event=EventType.PURCHASE, timestamp=T0 + 1.5, event_id="e-1"),
    ]
    await append(prefix, events)  # the third is a duplicate of the first: not in the stream
    out = tmp_path / "events.jsonl"
    summary = await export_events(settings_for(prefix), out, page_size=1)  # one entry per page
    assert read_lines(out) == [
        {
            "visitor_id": "v1",
            "item_id": "p-1",
            "event": "purchase",
            "timestamp": "2025-01-01T00:00:01.500000Z",
            "event_id": "e-1",
            "session_id": "s-1",
            "channel": "email",
            "quantity": 2.0,
            "value": 39.9,
            "country": "FR",
        },
        {"visitor_id": "v2", "item_id": "c-1", "event": "content_view", "timestamp": "2025-01-01T00:00:00Z"},
    ]
    stamp = read_lines(out)[0]["timestamp"]
    assert isinstance(stamp, str)
    assert dt.datetime.fromisoformat(stamp).timestamp() == T0 + 1.5
    assert isinstance(summary, ExportSummary)
    assert summary.events == 2
    assert summary.path == str(out)
    assert summary.last_entry_id is not None
    assert f"exported 2 events to {out}" in str(summary)
    assert f"--after {summary.last_entry_id}" in str(summary)
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]  # no temporary file left

    # the next export picks up after the last one
    await append(
        prefix, [Event(visitor_id="v3", item_id="p-2", event=EventType.ADD_TO_CART, timestamp=T0 + 9)]
    )
    again = await export_events(settings_for(prefix), out, after=summary.last_entry_id)
    assert again.events == 1
    assert [line["visitor_id"] for line in read_lines(out)] == ["v3"]
    nothing = await export_events(settings_for(prefix), out, after=again.last_entry_id or "0")
    assert (nothing.events, nothing.last_entry_id) == (0, None)
    assert out.read_text() == ""
    assert "exported 0 events" in str(nothing)


@pytest.mark.redis
async def test_export_refuses_a_bad_after_id_and_keeps_the_old_file(prefix: str, tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    out.write_text("old\n")
    with pytest.raises(InvalidInputError, match="stream id"):
        await export_events(settings_for(prefix), out, after="yesterday")
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["events.jsonl"]


async def test_export_from_an_unreachable_redis_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "events.jsonl"
    url = f"redis://user:secret@127.0.0.1:{port}/0"  # nothing listens there
    with pytest.raises(StoreUnavailableError) as info:
        await export_events(settings_for("jrtest-dead", url), out)
    message = str(info.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message
    assert "secret" not in message
    assert list(tmp_path.iterdir()) == []


async def test_export_needs_a_redis_url_and_an_existing_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="Redis URL"):
        await export_events(load_settings({}, environ={}), tmp_path / "x.jsonl")
    with pytest.raises(InvalidInputError, match="does not exist"):
        await export_events(settings_for("p"), tmp_path / "missing" / "x.jsonl")


@pytest.mark.redis
async def test_export_reads_every_shard_of_a_cluster(redis_cluster_url: str, tmp_path: Path) -> None:
    p = f"jrtest-{uuid.uuid4().hex[:12]}"
    s = settings_for(p, redis_cluster_url)
    store = RedisStore.from_url(
        redis_cluster_url,
        prefix=p,
        visitor_ttl=s.visitor_ttl,
        recent_events=s.recent_events,
        stream_maxlen=s.stream_maxlen,
        socket_timeout=5,
    )
    visitors = [f"x{i}" for i in range(100)]  # every shard, on every master
    events = [
        Event(visitor_id=v, item_id=f"i-{v}", event=EventType.PAGE_VIEW, timestamp=T0 + i)
        for i, v in enumerate(visitors)
    ]
    try:
        await store.append(events)
        summary = await export_events(s, tmp_path / "all.jsonl", page_size=7)
        assert summary.events == 100
        assert sorted(line["visitor_id"] for line in read_lines(tmp_path / "all.jsonl")) == sorted(visitors)
        # the next export from the last entry id finds only what came after it
        later = Event(visitor_id="x0", item_id="later", event=EventType.PAGE_VIEW, timestamp=T0 + 500)
        # a later millisecond: within one, entries of different shards are in shard order
        # (service.store.redis_store's module docstring)
        await asyncio.sleep(0.002)
        await store.append([later])
        assert summary.last_entry_id is not None
        again = await export_events(s, tmp_path / "next.jsonl", after=summary.last_entry_id)
        assert [line["item_id"] for line in read_lines(tmp_path / "next.jsonl")] == ["later"]
        assert again.events == 1
    finally:
        raw = store.client
        keys = [k async for k in raw.scan_iter(match=f"{p}:*", count=1000)]
        for key in keys:
            await raw.delete(key)
        await store.close()


async def test_an_export_waits_longer_for_a_reply_than_a_request_does(prefix: str) -> None:
    """A page of the stream is one large reply: the request path's 0.5 s socket timeout made a retrain's
    export fail on a busy server; the export waits up to EXPORT_SOCKET_TIMEOUT (or longer, if set)."""
    settings = settings_for(prefix)
    assert settings.redis_socket_timeout < EXPORT_SOCKET_TIMEOUT
    for s, want in (
        (settings, EXPORT_SOCKET_TIMEOUT),
        (msgspec.structs.replace(settings, redis_socket_timeout=45.0), 45.0),
    ):
        store = export_store(s)
        try:
            assert store.client.connection_pool.connection_kwargs["socket_timeout"] == want
        finally:
            await store.close()
