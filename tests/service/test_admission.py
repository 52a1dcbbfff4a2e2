"""The admission gate and the body read deadline (service.admission), in process on a minimal app.

Requests are held inside a route on an asyncio.Event, so which request is in progress, waiting or shed is
decided by the test, not by timing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from litestar import Litestar, get, post
from litestar.params import JSONBody
from litestar.types import Message, ReceiveMessage

from service import metrics
from service.admission import AdmissionGate, BodyReadDeadline
from service.errors import EXCEPTION_HANDLERS


class Hold:
    """A route that waits until released, counting who got in."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = asyncio.Event()
        self.someone_entered = asyncio.Event()

    def app(self, gate: AdmissionGate) -> Litestar:
        @get("/v1/hold")
        async def hold() -> dict[str, str]:
            self.entered += 1
            self.someone_entered.set()
            await self.release.wait()
            return {"ok": "yes"}

        @get("/health/live")
        async def live() -> dict[str, str]:
            return {"status": "ok"}

        return Litestar([hold, live], middleware=[gate], exception_handlers=dict(EXCEPTION_HANDLERS))


def _gate(**kw: Any) -> AdmissionGate:
    args: dict[str, Any] = {"max_concurrency": 1, "max_queued": 1, "queue_timeout": 60.0, "retry_after": 3}
    args.update(kw)
    return AdmissionGate(**args)


@pytest.fixture
async def held() -> AsyncIterator[tuple[Hold, AdmissionGate, httpx.AsyncClient]]:
    hold, gate = Hold(), _gate()
    async with _client(hold.app(gate)) as client:
        yield hold, gate, client
        hold.release.set()


def _client(app: Litestar) -> httpx.AsyncClient:
    """Requests run concurrently on the test's event loop (Litestar's AsyncTestClient runs them in turn)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _shed(reason: str) -> float:
    return metrics.SHED.labels(reason)._value.get()


async def _until(check: Any) -> None:
    while not check():
        await asyncio.sleep(0.001)


async def test_beyond_the_queue_is_503_with_retry_after(
    held: tuple[Hold, AdmissionGate, httpx.AsyncClient],
) -> None:
    hold, gate, client = held
    before = _shed("queue_full")
    first = asyncio.create_task(client.get("/v1/hold"))
    await hold.someone_entered.wait()
    second = asyncio.create_task(client.get("/v1/hold"))  # waits for the one place
    await _until(lambda: gate.waiting == 1)
    third = await client.get("/v1/hold")
    assert third.status_code == 503
    assert third.headers["Retry-After"] == "3"
    assert "JOURNEYREC_MAX_CONCURRENCY" in third.json()["detail"]
    assert _shed("queue_full") == before + 1
    # health is not counted: it answers while the worker is full
    assert (await client.get("/health/live")).status_code == 200
    hold.release.set()
    assert (await first).status_code == 200
    assert (await second).status_code == 200  # the waiting request got the place
    assert hold.entered == 2


async def test_a_request_waiting_too_long_is_503() -> None:
    hold, gate = Hold(), _gate(queue_timeout=0.01)
    before = _shed("queue_timeout")
    async with _client(hold.app(gate)) as client:
        first = asyncio.create_task(client.get("/v1/hold"))
        await hold.someone_entered.wait()
        # the place is never freed while this one waits
        second = await client.get("/v1/hold")
        assert second.status_code == 503
        assert second.headers["Retry-After"] == "3"
        assert "no place freed" in second.json()["detail"]
        assert _shed("queue_timeout") == before + 1
        hold.release.set()
        assert (await first).status_code == 200
        # the place is free again
        assert (await client.get("/v1/hold")).status_code == 200
    assert hold.entered == 2


async def _run_with_stalled_body(deadline: BodyReadDeadline) -> list[Message]:
    """Call the app as a server would, with a body whose second half never comes."""

    @post("/v1/upload")
    async def upload(data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        return data

    app = Litestar([upload], middleware=[deadline], exception_handlers=dict(EXCEPTION_HANDLERS))
    chunks: list[ReceiveMessage] = [{"type": "http.request", "body": b'{"a":', "more_body": True}]
    never = asyncio.Event()

    async def receive() -> ReceiveMessage:
        if chunks:
            return chunks.pop(0)
        await never.wait()
        raise AssertionError("unreachable")

    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/upload",
        "raw_path": b"/v1/upload",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_a_stalled_body_is_408_naming_the_setting() -> None:
    sent = await _run_with_stalled_body(BodyReadDeadline(timeout=0.01))
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 408
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    assert headers["connection"] == "close"
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"JOURNEYREC_BODY_READ_TIMEOUT_SECONDS" in body
    assert b'"error":"request_timeout"' in body
