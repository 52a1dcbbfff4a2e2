"""This worker's heartbeat: who it is and which model version it serves, in the fleet store
(``service.store.fleet_base``), so that ``GET /v1/models`` can say which version each worker serves.

The app beats once at start-up (after the first model load), then every ``heartbeat_seconds`` (a follower,
``service.followers``), and at once after this worker's model changed (a reload, an activation, or a
follow of ``latest``); it leaves the fleet when it shuts down, trying ``LEAVE_ATTEMPTS`` times (a busy
store may time one out). A beat that fails (the store is down) is logged and tried again at the next
interval: a worker unheard of for the fleet's ``ttl`` drops off the list, which is what it should look like
from outside.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from models.errors import ArtifactError, NotFoundError, StoreUnavailableError
from service.model_holder import ModelHolder
from service.store.fleet_base import FleetStore, WorkerBeat

log = logging.getLogger("journeyrec.service")

#: tries to leave the fleet at shutdown, ``LEAVE_BACKOFF_S`` apart, then twice that, ...
LEAVE_ATTEMPTS = 3
LEAVE_BACKOFF_S = 0.1


def worker_id() -> str:
    """This process as ``host:pid``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class Heartbeat:
    """The beats of one worker process."""

    def __init__(
        self, fleet: FleetStore, holder: ModelHolder, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.fleet = fleet
        self.holder = holder
        self._clock = clock
        self.worker = worker_id()
        self.started = clock()

    def current(self) -> WorkerBeat:
        """This worker's beat at this moment."""
        model = self.holder.current
        version = model.version if model is not None else None
        return WorkerBeat(self.worker, version, self.started, self._clock())

    async def beat(self) -> bool:
        """Write this worker's beat; False (logged) when the store did not take it."""
        try:
            await self.fleet.beat(self.current())
        except StoreUnavailableError as e:
            log.warning("worker heartbeat not written: %s", e)
            return False
        return True

    async def leave(self) -> None:
        """Take this worker off the list (shutdown), trying ``LEAVE_ATTEMPTS`` times; when the store never
        takes it, the beat expires after the fleet's ``ttl`` instead (logged)."""
        delay = LEAVE_BACKOFF_S
        for attempt in range(1, LEAVE_ATTEMPTS + 1):
            try:
                await self.fleet.leave(self.worker)
            except StoreUnavailableError as e:
                if attempt == LEAVE_ATTEMPTS:
                    log.warning(
                        "worker heartbeat not removed after %d attempts; it is listed for up to %g s: %s",
                        attempt,
                        self.fleet.ttl,
                        e,
                    )
                    return
                await asyncio.sleep(delay)
                delay *= 2
            else:
                return

    async def join_fleet(self) -> str | None:
        """When this worker has no model (``latest`` was refused at start-up), load the version the other
        workers serve (the one most of them serve, the most recently seen on a tie) without moving
        ``latest``; returns it, or None when there is none to join or it did not load (logged)."""
        if self.holder.current is not None:
            return None
        try:
            beats = await self.fleet.workers()
        except StoreUnavailableError as e:
            log.warning("no model, and the fleet's versions could not be read: %s", e)
            return None
        served: dict[str, tuple[int, float]] = {}
        for b in beats:
            if b.worker != self.worker and b.model_version is not None:
                n, seen = served.get(b.model_version, (0, 0.0))
                served[b.model_version] = (n + 1, max(seen, b.last_seen))
        if not served:
            return None
        version = max(served, key=lambda v: served[v])
        try:
            await self.holder.adopt(version)
        except (ArtifactError, NotFoundError) as e:
            log.warning("no model, and the fleet's version %s did not load here: %s", version, e)
            return None
        return version
