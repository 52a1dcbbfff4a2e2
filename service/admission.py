"""What a worker lets in, and for how long it waits for a client: two ASGI middlewares.

``AdmissionGate`` bounds the requests one worker process handles at once (``Settings.max_concurrency``).
A request beyond that waits for a place, at most ``max_queued`` of them and each at most
``queue_timeout_seconds``; any other is answered ``503`` with ``Retry-After`` at once. A burst thus turns
into waiting and, past what the worker can absorb, into explicit 503s: never into degraded answers. The
Redis pool is sized from the same number (``service.store.factory.pool_size``), so an admitted request
always finds a free connection. ``/health`` and ``/metrics`` are not counted: probes and scrapes must
answer while the worker is busy.

``BodyReadDeadline`` gives a client ``body_read_timeout_seconds`` to send the whole request body once the
service starts reading it; after that the answer is ``408`` (a stalled upload would otherwise hold its
place, and its connection, for as long as the client likes). Headers are timed by the server itself
(Granian's HTTP/1 ``header_read_timeout``, see ``service.cli``).

Granian accepts at most ``backpressure`` connections per worker, each holding its place while kept alive;
connections beyond that wait un-accepted in the kernel's listen backlog, where no timeout and no 503 can
reach them. ``service.cli.granian_backpressure`` therefore leaves room above what the gate holds.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litestar import Request
from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.status_codes import HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ASGIApp, Receive, ReceiveMessage, Scope, Send

from service import metrics
from service.errors import error_response
from service.settings import ENV, Settings

#: path prefixes the gate lets through uncounted
UNGATED_PATHS = ("/health", "/metrics")
HTTP_408_REQUEST_TIMEOUT = 408


class AdmissionGate(ASGIMiddleware):
    """At most ``max_concurrency`` requests of this worker at once; see the module docstring.

    One instance serves every route of one app (one worker process), so its counters are the worker's.
    """

    scopes = (ScopeType.HTTP,)

    def __init__(
        self, *, max_concurrency: int, max_queued: int, queue_timeout: float, retry_after: int
    ) -> None:
        self.max_concurrency = max_concurrency
        self.max_queued = max_queued
        self.queue_timeout = queue_timeout
        self.retry_after = retry_after
        self._places = asyncio.Semaphore(max_concurrency)
        self.waiting = 0
        self.should_bypass_for_scope = _ungated

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        if not self._places.locked():
            await self._places.acquire()  # a free place: taken without suspending
        elif self.waiting >= self.max_queued:
            await self._shed(scope, receive, send, "queue_full")
            return
        else:
            self.waiting += 1
            try:
                async with asyncio.timeout(self.queue_timeout):
                    await self._places.acquire()
            except TimeoutError:
                await self._shed(scope, receive, send, "queue_timeout")
                return
            finally:
                self.waiting -= 1
        try:
            await next_app(scope, receive, send)
        finally:
            self._places.release()

    async def _shed(self, scope: Scope, receive: Receive, send: Send, reason: str) -> None:
        metrics.SHED.labels(reason).inc()
        why = (
            f"{self.waiting} requests already wait"
            if reason == "queue_full"
            else f"no place freed within {self.queue_timeout:g} s"
        )
        detail = (
            f"server busy: {self.max_concurrency} requests in progress in this worker "
            f"({ENV['max_concurrency']}) and {why}; retry after {self.retry_after} s"
        )
        response = error_response(
            HTTP_503_SERVICE_UNAVAILABLE, detail, {"Retry-After": str(self.retry_after)}
        ).to_asgi_response(None, Request[Any, Any, Any](scope, receive))
        await response(scope, receive, send)


def _ungated(scope: Scope) -> bool:
    return scope["path"].startswith(UNGATED_PATHS)


class RequestTimeoutError(HTTPException):
    """The request body did not arrive in time (answered by the app's HTTPException handler)."""

    status_code = HTTP_408_REQUEST_TIMEOUT


class BodyReadDeadline(ASGIMiddleware):
    """The whole request body within ``timeout`` seconds of the first read, else 408 (connection closed)."""

    scopes = (ScopeType.HTTP,)

    def __init__(self, *, timeout: float) -> None:
        self.timeout = timeout

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        deadline: float | None = None
        body_done = False

        async def receive_in_time() -> ReceiveMessage:
            nonlocal deadline, body_done
            if body_done:
                return await receive()
            if deadline is None:
                deadline = asyncio.get_running_loop().time() + self.timeout
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                body_done = True
                raise RequestTimeoutError(
                    detail=f"request body not received within {self.timeout:g} s "
                    f"({ENV['body_read_timeout_seconds']})",
                    headers={"Connection": "close"},
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_done = True
            return message

        await next_app(scope, receive_in_time, send)


def admission_middleware(settings: Settings) -> list[ASGIMiddleware]:
    """The app's admission middlewares, outermost first."""
    return [
        AdmissionGate(
            max_concurrency=settings.max_concurrency,
            max_queued=settings.max_queued,
            queue_timeout=settings.queue_timeout_seconds,
            retry_after=settings.retry_after,
        ),
        BodyReadDeadline(timeout=settings.body_read_timeout_seconds),
    ]
