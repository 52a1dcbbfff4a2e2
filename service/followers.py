"""Background tasks that must keep running for the life of a worker (following ``latest``, and the like).

``Followers`` starts each one as an asyncio task under a supervisor: when a task's body raises, the failure
is logged with its traceback, counted (``journeyrec_background_restarts_total{task}``) and the body is
started again after a backoff that doubles from ``backoff_s`` up to ``max_backoff_s`` (reset once a run
lasted longer than ``max_backoff_s``). A body that returns has finished and is not restarted. ``stop``
cancels every task and waits for them, at most ``stop_timeout_s``: a body that turned its cancellation into
an error is not restarted, and one that keeps running is logged and left behind, so that the rest of a
worker's shutdown (leaving the fleet, closing the store) still happens.

``every(seconds, step)`` turns one polling step into such a body: a follower that checks something every
few seconds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from service import metrics

log = logging.getLogger("journeyrec.service")

Body = Callable[[], Awaitable[None]]

#: how long ``Followers.stop`` waits for the cancelled tasks, unless told otherwise
STOP_TIMEOUT_S = 5.0


def every(seconds: float, step: Body) -> Body:
    """A body that awaits ``step`` every ``seconds``, forever (``step`` raising ends the run)."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(seconds)
            await step()

    return loop


class Followers:
    """Supervised background tasks of one worker process."""

    def __init__(
        self, *, backoff_s: float = 1.0, max_backoff_s: float = 60.0, stop_timeout_s: float = STOP_TIMEOUT_S
    ) -> None:
        if not 0 < backoff_s <= max_backoff_s:
            raise ValueError("need 0 < backoff_s <= max_backoff_s")
        if not stop_timeout_s > 0:
            raise ValueError("need stop_timeout_s > 0")
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stop_timeout_s = stop_timeout_s
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        #: restarts of each task since it was started
        self.restarts: dict[str, int] = {}

    def start(self, name: str, body: Body) -> None:
        """Run ``body`` under supervision as the task ``name`` (one task per name)."""
        if name in self._tasks and not self._tasks[name].done():
            raise ValueError(f"a follower named {name!r} is already running")
        self.restarts[name] = 0
        self._stopping = False
        self._tasks[name] = asyncio.create_task(self._supervise(name, body), name=f"journeyrec-{name}")

    def running(self, name: str) -> bool:
        task = self._tasks.get(name)
        return task is not None and not task.done()

    async def stop(self) -> None:
        """Cancel every task and wait for them, at most ``stop_timeout_s`` (see the module docstring). No
        parameter: it is an app shutdown hook, and Litestar passes the app to a hook that takes one."""
        timeout = self.stop_timeout_s
        self._stopping = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: a failure was logged where it happened
        for task in pending:
            log.warning(
                "background task %s did not stop within %g s; going on without it", task.get_name(), timeout
            )

    async def _supervise(self, name: str, body: Body) -> None:
        delay = self.backoff_s
        while True:
            started = time.monotonic()
            try:
                await body()
            except Exception:
                if self._stopping:
                    return  # the cancellation of ``stop`` came out as an error: stopped all the same
                if time.monotonic() - started > self.max_backoff_s:
                    delay = self.backoff_s  # it had been running well: a fresh failure, not a crash loop
                self.restarts[name] += 1
                metrics.BACKGROUND_RESTARTS.labels(name).inc()
                log.exception(
                    "background task %s failed; restarting it in %.3g s (restart %d)",
                    name,
                    delay,
                    self.restarts[name],
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
            else:
                log.info("background task %s finished", name)
                return
