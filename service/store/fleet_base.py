"""Which worker serves what: every worker process writes a heartbeat (``service.heartbeat``) and
``GET /v1/models`` lists the workers heard from lately.

A beat holds the worker's id (``host:pid``), the model version it serves, when it started and when it was
last seen (POSIX seconds, by the worker's own clock). A worker not heard from for ``ttl`` seconds (a few
heartbeat intervals: it stopped, crashed or lost the store) is no longer listed. Both stores pass the same
contract tests (``tests/service/test_fleet_store.py``): the Redis one (``fleet_redis``) is shared by every
worker of every instance; the embedded one below lists the workers of this process only (the embedded
visitor store serves one process anyway).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import msgspec


class WorkerBeat(msgspec.Struct, frozen=True):
    """One worker's heartbeat: ``worker`` ``host:pid``; ``model_version`` the live model it serves (None:
    none loaded); ``started`` and ``last_seen`` in POSIX seconds."""

    worker: str
    model_version: str | None
    started: float
    last_seen: float


class FleetStore(Protocol):
    ttl: float

    async def beat(self, beat: WorkerBeat) -> None:
        """Record the worker's beat (replacing its previous one). Raises StoreUnavailableError."""
        ...

    async def leave(self, worker: str) -> None:
        """Forget a worker at once (it is shutting down)."""
        ...

    async def workers(self) -> list[WorkerBeat]:
        """The workers whose last beat is younger than ``ttl``, by worker id."""
        ...


def check_ttl(ttl: float) -> float:
    if not ttl > 0:
        raise ValueError(f"the fleet's ttl must be > 0 seconds, got {ttl}")
    return ttl


class MemoryFleet:
    """FleetStore in this process's memory: the workers of this process (one, beside the embedded store)."""

    def __init__(self, ttl: float, *, clock: Callable[[], float] = time.time) -> None:
        self.ttl = check_ttl(ttl)
        self._clock = clock
        self._beats: dict[str, WorkerBeat] = {}

    async def beat(self, beat: WorkerBeat) -> None:
        self._beats[beat.worker] = beat

    async def leave(self, worker: str) -> None:
        self._beats.pop(worker, None)

    async def workers(self) -> list[WorkerBeat]:
        oldest = self._clock() - self.ttl
        for worker in [w for w, b in self._beats.items() if b.last_seen <= oldest]:
            del self._beats[worker]
        return sorted(self._beats.values(), key=lambda b: b.worker)
