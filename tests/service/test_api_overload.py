"""Over real HTTP (``journeyrec serve``, Granian, real Redis): bursts and slow clients.

A burst far beyond what the workers admit at once is answered personalised or ``503`` with Retry-After,
never with a fallback while Redis is healthy; a client that stalls in its headers or its body is cut off
by the configured read timeouts. Outcomes only are asserted: the socket timeouts are generous upper bounds,
far above the configured timeouts.
"""

from __future__ import annotations

import asyncio
import collections
import re
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.service.api_fixtures import H_INGEST, H_READ, INGEST_KEY
from tests.service.test_api_e2e_redis import Server, prefix, redis_client

# shared fixtures (pytest finds them as module attributes)
__all__ = ["prefix", "redis_client"]

pytestmark = pytest.mark.redis

BURST = 2000  # simultaneous requests: as in the reliability run that found 62 % fallbacks
SOCKET_TIMEOUT_S = 20.0  # an upper bound only: every configured timeout below is 1 s


async def _burst(base: str, n: int) -> collections.Counter[tuple[int, str]]:
    """n recommendation requests at once, each on its own connection (so both workers get some)."""
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as client:
        go = asyncio.Event()

        async def one(i: int) -> tuple[int, str]:
            await go.wait()
            r = await client.get(f"/v1/visitors/burst-{i}/recommendations?k=10", headers=H_READ)
            if r.status_code == 200:
                return 200, f"fallback={r.json()['fallback']}"
            return r.status_code, f"retry-after={r.headers.get('retry-after')}"

        tasks = [asyncio.create_task(one(i)) for i in range(n)]
        await asyncio.sleep(0)  # every task waits on `go`
        go.set()
        return collections.Counter(await asyncio.gather(*tasks))


def _metric_sum(text: str, name: str) -> float:
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.parametrize(
    ("n", "limits"),
    [
        (BURST, {}),  # the defaults
        # a pool of 2 + 4 connections per worker for 1,000 requests: the gate, not the pool, says no
        (1000, {"JOURNEYREC_MAX_CONCURRENCY": "2", "JOURNEYREC_MAX_QUEUED": "8"}),
    ],
    ids=["defaults", "tight"],
)
def test_a_burst_never_falls_back_on_a_healthy_redis(
    models_dir: Path, prefix: str, redis_client: redis.Redis, n: int, limits: dict[str, str]
) -> None:
    env = {"JOURNEYREC_MODEL_POLL_SECONDS": "0", **limits}
    server = Server(models_dir, REDIS_URL, prefix, workers=2, env_extra=env)
    try:
        server.wait_live().close()
        answers = asyncio.run(_burst(server.base, n))
        metrics_text = httpx.get(server.base + "/metrics", timeout=10).text
    finally:
        server.stop()
    assert sum(answers.values()) == n
    print(f"burst of {n}: {dict(answers)}")  # the figures, shown with pytest -s
    assert answers[(200, "fallback=True")] == 0, answers
    # only personalised answers and explicit, retryable refusals
    assert set(answers) <= {(200, "fallback=False"), (503, "retry-after=1")}, answers
    assert answers[(200, "fallback=False")] > 0, answers
    assert _metric_sum(metrics_text, "journeyrec_fallbacks_total") == 0
    shed = _metric_sum(metrics_text, "journeyrec_requests_shed_total")
    assert shed == answers[(503, "retry-after=1")]


@pytest.fixture(scope="module")
def slow_client_server(models_dir: Path, prefix: str, redis_client: redis.Redis) -> Iterator[Server]:
    server = Server(
        models_dir,
        REDIS_URL,
        prefix,
        env_extra={
            "JOURNEYREC_HEADER_READ_TIMEOUT_SECONDS": "1",
            "JOURNEYREC_BODY_READ_TIMEOUT_SECONDS": "1",
            "JOURNEYREC_MODEL_POLL_SECONDS": "0",
        },
    )
    try:
        server.wait_live().close()
        yield server
    finally:
        server.stop()


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; socket.timeout if it neither answers nor closes."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk


def test_a_stalled_body_is_answered_408(slow_client_server: Server) -> None:
    body = b'{"events": [{"visitor_id": "slow", "item_id": "p-1", "event": "page_view"}]}'
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: test\r\nX-API-Key: {INGEST_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", slow_client_server.port), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.sendall(head + body[:20])  # then nothing more
        answer = _read_until_closed(sock)
    assert re.match(rb"HTTP/1\.1 408 ", answer), answer
    assert b"JOURNEYREC_BODY_READ_TIMEOUT_SECONDS" in answer
    # the server is fine afterwards, and nothing of the half-sent event was stored
    r = httpx.get(slow_client_server.base + "/v1/visitors/slow/journey", headers=H_READ, timeout=10)
    assert r.status_code == 200
    assert r.json()["touchpoints"] == []


def test_stalled_headers_are_cut_off(slow_client_server: Server) -> None:
    with socket.create_connection(("127.0.0.1", slow_client_server.port), timeout=SOCKET_TIMEOUT_S) as sock:
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: test\r\n")  # the blank line never comes
        answer = _read_until_closed(sock)
    # closed (or answered with an error) instead of held open
    assert not answer.startswith(b"HTTP/1.1 200"), answer
    visitor = f"after-{uuid.uuid4().hex[:6]}"
    r = httpx.post(
        slow_client_server.base + "/v1/events",
        json={"visitor_id": visitor, "item_id": "p-1", "event": "page_view"},
        headers=H_INGEST,
        timeout=10,
    )
    assert r.status_code == 200, r.text
