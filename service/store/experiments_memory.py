"""The embedded experiments store: documents in this process's memory (one process only, lost on restart).
Semantics in ``service.store.experiments_base``; no method awaits while it reads or changes state, so each
is atomic with respect to the other coroutines of the event loop."""

from __future__ import annotations

import time
from collections.abc import Callable

from models.experiments import Experiment
from service.store.experiments_base import ExperimentWriter, decode_all


class MemoryExperimentStore(ExperimentWriter):
    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock=clock)
        self._docs: dict[str, bytes] = {}
        self._version = 0

    async def version(self) -> int:
        return self._version

    async def list(self) -> list[Experiment]:
        return decode_all(list(self._docs.values()))

    async def _raw(self, experiment_id: str) -> bytes | None:
        return self._docs.get(experiment_id)

    async def _cas(self, experiment_id: str, old: bytes | None, new: bytes | None) -> bool:
        if self._docs.get(experiment_id) != old:
            return False
        if new is None:
            self._docs.pop(experiment_id, None)
        else:
            self._docs[experiment_id] = new
        self._version += 1
        return True

    async def close(self) -> None:
        return None
