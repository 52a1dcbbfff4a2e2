"""A request body the client does not finish (it disconnects, or its chunked encoding is malformed, which
the server reports the same way) is the client's problem: a 400 (if anyone is left to read it), never a 500,
and never counted as a server error in the metrics."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar import Litestar
from prometheus_client import REGISTRY

from tests.service.api_fixtures import INGEST_KEY, READ_KEY
from tests.service.test_api_e2e_redis import Server


def _server_errors(path: str) -> float:
    return sum(
        s.value
        for metric in REGISTRY.collect()
        if metric.name == "journeyrec_http_requests_error"
        for s in metric.samples
        if s.name.endswith("_total") and s.labels.get("path") == path
    )


async def _call(app: Litestar, path: str, key: str, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One POST through the ASGI interface: the body arrives as ``parts``, then the client is gone."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"test"),
            (b"x-api-key", key.encode()),
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    pending = list(parts)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)  # type: ignore[arg-type]
    return sent


async def test_disconnect_during_an_ingest_upload_is_400_and_no_server_error(app: Litestar) -> None:
    before = _server_errors("/v1/events")
    sent = await _call(
        app,
        "/v1/events",
        INGEST_KEY,
        [{"type": "http.request", "body": b'{"visitor_id": "v", "item', "more_body": True}],
    )
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert b"request body incomplete" in body
    assert _server_errors("/v1/events") == before


async def test_disconnect_during_an_export_upload_is_400(app: Litestar) -> None:
    before = _server_errors("/v1/retargeting/export")
    sent = await _call(
        app,
        "/v1/retargeting/export",
        READ_KEY,
        [{"type": "http.request", "body": b'{"visitor_ids": ["a", ', "more_body": True}],
    )
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 400
    assert _server_errors("/v1/retargeting/export") == before


# -- over real HTTP (Granian), with a raw socket -------------------------------------------------------------

_HEAD = "\r\n".join(
    [
        "POST /v1/events HTTP/1.1",
        "Host: test",
        "X-API-Key: {key}",
        "Content-Type: application/json",
        "{extra}\r\n\r\n",
    ]
)


def _exchange(port: int, raw: bytes, *, half_close: bool) -> bytes:
    """Send ``raw``, optionally close our sending side, and read whatever comes back until the server closes
    or goes quiet."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(raw)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        s.settimeout(5)
        received = b""
        try:
            while chunk := s.recv(65536):
                received += chunk
                if b"\r\n\r\n" in received and not half_close:
                    break
        except TimeoutError:
            pass
        return received


def _status(response: bytes) -> int | None:
    line = response.split(b"\r\n", 1)[0]
    return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else None


@pytest.fixture(scope="module")
def served(models_dir: Path) -> Iterator[Server]:
    server = Server(models_dir, None, "unused", env_extra={"JOURNEYREC_MODEL_POLL_SECONDS": "0"})
    try:
        server.wait_live().close()
        yield server
    finally:
        server.stop()


def test_malformed_chunks_and_early_disconnects_over_http_are_client_errors(served: Server) -> None:
    head = _HEAD.format(key=INGEST_KEY, extra="Transfer-Encoding: chunked").encode()
    # a chunk size that is not hexadecimal
    bad_chunk = _exchange(served.port, head + b"zz\r\n{}\r\n0\r\n\r\n", half_close=False)
    assert _status(bad_chunk) in (None, 400), bad_chunk  # a 400, or the server closed the connection
    # a chunked body cut short: the client goes away mid-chunk
    _exchange(served.port, head + b"20\r\n" + b'{"visitor_id": "v"', half_close=True)
    # a Content-Length body cut short
    head = _HEAD.format(key=INGEST_KEY, extra="Content-Length: 200").encode()
    _exchange(served.port, head + b'{"visitor_id": "v", "item_id"', half_close=True)

    # every attempt is counted, as a 4xx, and none as a server error
    with httpx.Client(base_url=served.base, timeout=10) as http:
        for _ in range(100):
            text = http.get("/metrics").text
            counted = _samples(text, "journeyrec_http_requests_total", "/v1/events")
            if sum(counted.values()) >= 3:
                break
            time.sleep(0.05)
        assert sum(counted.values()) >= 3, text
        assert all(400 <= int(code) < 500 for code in counted), counted
        assert _samples(text, "journeyrec_http_requests_error_total", "/v1/events") == {}
        ok = http.post(
            "/v1/events",
            json={"visitor_id": "v", "item_id": "i", "event": "page_view"},
            headers={"X-API-Key": INGEST_KEY},
        )
        assert ok.status_code == 200  # the worker is fine


def _samples(text: str, name: str, path: str) -> dict[str, float]:
    """Sum of the samples of ``name`` for ``path``, by status code."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") and f'path="{path}"' in line:
            code = line.split('status_code="', 1)[1].split('"', 1)[0]
            out[code] = out.get(code, 0.0) + float(line.rsplit(" ", 1)[1])
    return out
