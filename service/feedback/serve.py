"""The request-path side of feedback: stamp each list answer with a ``recommendation_id`` and log it.

``Feedback.served(...)`` is the one call a list endpoint makes: it makes the id and, for a visitor's list
(and ``log_served_lists`` on), keeps the list in the visitor's served-list log with one store write. The
write is sent before the answer goes out, so an impression or click sent once the answer has arrived
reaches the store after it and finds the list (Redis runs a connection's commands in the order they
arrive); its reply is read after the answer, by a task, which then queues the list for counting. Counting
(the visitor's exposures and the counters, further round trips) happens off the request path: a queue
that one task per worker empties in batches (of what arrived within ``BATCH_WAIT``). When the write fails,
or that queue is full, the list is not counted (nor, for a failed write, attributable); each such loss is
counted (``journeyrec_feedback_write_failures_total``) and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

import msgspec

from models.attribution import ServedList, Windows
from models.errors import StoreUnavailableError
from service.feedback import metrics
from service.feedback.ids import new_recommendation_id
from service.feedback.memory import MemoryFeedbackStore
from service.feedback.redis_store import RedisFeedbackStore
from service.feedback.store_base import SUMMARY, FeedbackStore
from service.settings import Settings
from service.store.base import VisitorStore
from service.store.redis_store import RedisStore

log = logging.getLogger("journeyrec.service")

QUEUE_LIMIT = 10_000  # served lists waiting to be counted, per worker
BATCH = 256  # served lists counted per store round trip
BATCH_WAIT = 0.05  # seconds the counting task lets lists gather before it counts them


class ServedTag(msgspec.Struct, frozen=True):
    """What a list answer carries: its id, and the experiment and variant when one applied."""

    recommendation_id: str
    experiment: str | None = None
    variant: str | None = None


class Feedback:
    """The feedback store and this worker's served-list counting queue."""

    def __init__(
        self, store: FeedbackStore, *, log_lists: bool, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.log_lists = log_lists
        self.clock = clock
        self._queue: asyncio.Queue[tuple[str, ServedList]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._confirming: set[asyncio.Task[None]] = set()  # lists sent whose write is not confirmed yet

    async def served(
        self,
        visitor_id: str | None,
        *,
        stage: str,
        placement: str,
        items: Iterable[str],
        experiment: str | None = None,
        variant: str | None = None,
    ) -> ServedTag:
        """Stamp a list answer and log it for ``visitor_id`` (None: a list of no visitor, stamped only)."""
        now = self.clock()
        tag = ServedTag(new_recommendation_id(now), experiment, variant)
        if visitor_id is None or not self.log_lists:
            return tag
        served = ServedList(
            recommendation_id=tag.recommendation_id,
            served_at=now,
            stage=stage,
            placement=placement,
            items=list(items),
            experiment=experiment or SUMMARY,
            variant=variant or SUMMARY,
        )
        try:
            confirmed = await self.store.send_served(visitor_id, served)
        except StoreUnavailableError as e:
            self._not_logged(served, e)
            return tag
        # no await between sending and taking the confirmation: a cancelled request cannot strand it
        task = asyncio.get_running_loop().create_task(self._confirm(confirmed, visitor_id, served))
        self._confirming.add(task)
        task.add_done_callback(self._confirming.discard)
        return tag

    async def _confirm(self, confirmed: Awaitable[None], visitor_id: str, served: ServedList) -> None:
        try:
            await confirmed
        except StoreUnavailableError as e:
            self._not_logged(served, e)
            return
        metrics.SERVED_LISTS.inc()
        self._enqueue(visitor_id, served)

    def _not_logged(self, served: ServedList, e: Exception) -> None:
        # the answer is served anyway: the list is only not attributable
        metrics.WRITE_FAILURES.labels("served").inc()
        log.warning("served list %s not logged: %s", served.recommendation_id, e)

    def _enqueue(self, visitor_id: str, served: ServedList) -> None:
        if self._task is None or self._task.done():
            self._queue = asyncio.Queue(QUEUE_LIMIT)
            self._task = asyncio.get_running_loop().create_task(self._count_forever())
        assert self._queue is not None
        try:
            self._queue.put_nowait((visitor_id, served))
        except asyncio.QueueFull:
            metrics.WRITE_FAILURES.labels("dropped").inc()
            log.warning(
                "served list %s not counted: %d lists wait already", served.recommendation_id, QUEUE_LIMIT
            )

    async def _count_forever(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            batch = [await queue.get()]
            # let a few more lists arrive: one batch of many costs the same three round trips as one list,
            # and fewer wake-ups take less time from the requests of this worker
            await asyncio.sleep(BATCH_WAIT)
            while len(batch) < BATCH and not queue.empty():
                batch.append(queue.get_nowait())
            try:
                await self.store.add(await self.store.count_served(batch))
            except Exception as e:  # noqa: BLE001 (any failure loses this batch only, and is counted)
                metrics.WRITE_FAILURES.labels("count").inc(len(batch))
                log.warning("%d served lists not counted: %s: %s", len(batch), type(e).__name__, e)
            finally:
                for _ in batch:
                    queue.task_done()

    async def drain(self) -> None:
        """Wait until every served list sent is confirmed and counted (erase, tests, shutdown)."""
        while self._confirming:
            await asyncio.gather(*self._confirming, return_exceptions=True)
        if self._queue is not None and self._task is not None and not self._task.done():
            await self._queue.join()

    async def close(self, timeout: float = 5.0) -> None:
        """Count what is queued (for at most ``timeout`` seconds), stop the task, close the store."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.drain(), timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.store.close()


def windows_of(settings: Settings) -> Windows:
    return Windows(
        click=float(settings.attribution_click_window_seconds),
        impression=float(settings.attribution_impression_window_seconds),
    )


def build_feedback(settings: Settings, store: VisitorStore) -> Feedback:
    """The feedback store beside ``store``: in the same Redis (on its connection pool) or in memory."""
    common = {
        "windows": windows_of(settings),
        "cap": settings.served_lists_per_visitor,
        "visitor_ttl": settings.visitor_ttl,
    }
    fb: FeedbackStore
    if isinstance(store, RedisStore):
        fb = RedisFeedbackStore(store.client, prefix=store.prefix, **common)  # type: ignore[arg-type]
    else:
        fb = MemoryFeedbackStore(**common)  # type: ignore[arg-type]
    return Feedback(fb, log_lists=settings.log_served_lists)
