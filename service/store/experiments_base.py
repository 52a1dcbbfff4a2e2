"""The experiments store: every experiment document, and a version counter that moves on every change.

``ExperimentStore`` is the interface; ``service.store.experiments_memory`` (one process) and
``service.store.experiments_redis`` (shared by every worker) implement it and pass the same contract tests
(``tests/service/test_experiments_store.py``).

Semantics
- ``put`` creates an experiment, or replaces one that is a draft. A running or stopped one is never
  replaced (its visitors were assigned by its variants and weights, and its results are read against
  them): ``ConflictError`` (HTTP 409). A stored document is always a draft when put: ``state``,
  ``started_at`` and ``stopped_at`` come from ``start`` and ``stop`` only.
- ``start``: draft -> running (``started_at`` = now); ``stop``: running -> stopped (``stopped_at`` = now).
  Starting a running one, or stopping a stopped one, changes nothing; any other transition is a conflict.
  A stopped experiment is not started again: its assignment would carry on under a gap in the data.
- ``delete``: only a draft or a stopped experiment (a running one is stopped first).
- Every change is one atomic compare-and-set of the document (it is written only if the stored one is
  still the one the change was computed from) and moves ``version``; ``version()`` is one cheap read that
  every worker polls (``service.experiment_runtime.ExperimentFollower``).
- Unknown ids are ``NotFoundError`` (HTTP 404).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

import msgspec

from models.errors import NotFoundError
from models.experiments import Experiment, State
from service.errors import ConflictError

#: how often a change is computed again when other writers keep changing the same document
CAS_ATTEMPTS = 10

_encode = msgspec.json.encode
_decode = msgspec.json.Decoder(Experiment).decode


class ExperimentStore(Protocol):
    async def version(self) -> int:
        """A counter that moves on every change (0: nothing ever stored); one cheap read."""
        ...

    async def list(self) -> list[Experiment]:
        """Every experiment, by id."""
        ...

    async def get(self, experiment_id: str) -> Experiment:
        """The experiment, or NotFoundError."""
        ...

    async def put(self, experiment: Experiment) -> Experiment:
        """Create, or replace a draft (module docstring); returns what was stored."""
        ...

    async def start(self, experiment_id: str) -> Experiment: ...

    async def stop(self, experiment_id: str) -> Experiment: ...

    async def delete(self, experiment_id: str) -> None: ...

    async def close(self) -> None: ...


class ExperimentWriter:
    """The transitions both stores share, over two primitives subclasses give: ``_raw`` (the stored JSON
    of one id, or None) and ``_cas`` (write or delete it if the stored JSON is still the one given)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock

    async def _raw(self, experiment_id: str) -> bytes | None:
        raise NotImplementedError

    async def _cas(self, experiment_id: str, old: bytes | None, new: bytes | None) -> bool:
        raise NotImplementedError

    async def get(self, experiment_id: str) -> Experiment:
        raw = await self._raw(experiment_id)
        if raw is None:
            raise NotFoundError(f"no experiment {experiment_id!r}")
        return _decode(raw)

    async def _change(
        self, experiment_id: str, change: Callable[[Experiment | None], Experiment | None]
    ) -> Experiment | None:
        """Apply ``change`` (the stored document or None -> the new one, None to delete) atomically."""
        for _ in range(CAS_ATTEMPTS):
            raw = await self._raw(experiment_id)
            new = change(None if raw is None else _decode(raw))
            if await self._cas(experiment_id, raw, None if new is None else _encode(new)):
                return new
        raise ConflictError(
            f"experiment {experiment_id!r} kept changing while this change was written; retry"
        )

    async def put(self, experiment: Experiment) -> Experiment:
        def replace(old: Experiment | None) -> Experiment:
            if old is not None and old.state != "draft":
                raise ConflictError(
                    f"experiment {experiment.id!r} is {old.state}: only a draft can be replaced "
                    "(use a new id for a new experiment)"
                )
            return msgspec.structs.replace(experiment, state="draft", started_at=None, stopped_at=None)

        return await self._stored(experiment.id, replace)

    async def start(self, experiment_id: str) -> Experiment:
        return await self._move(experiment_id, "running", {"stopped": "is stopped: it cannot run again"})

    async def stop(self, experiment_id: str) -> Experiment:
        return await self._move(experiment_id, "stopped", {"draft": "is a draft: it never ran"})

    async def _move(self, experiment_id: str, to: State, refused: dict[str, str]) -> Experiment:
        """Move the experiment to state ``to`` stamping the time (``started_at`` or ``stopped_at``); one
        already there is answered as it is; a state in ``refused`` is a conflict saying why."""
        now = self._clock()
        stamp = "started_at" if to == "running" else "stopped_at"

        def move(old: Experiment | None) -> Experiment:
            old = _existing(experiment_id, old)
            if old.state == to:
                return old
            if old.state in refused:
                raise ConflictError(f"experiment {experiment_id!r} {refused[old.state]}")
            return msgspec.structs.replace(old, state=to, **{stamp: now})

        return await self._stored(experiment_id, move)

    async def delete(self, experiment_id: str) -> None:
        def delete(old: Experiment | None) -> None:
            check_deletable(_existing(experiment_id, old))

        await self._change(experiment_id, delete)

    async def _stored(
        self, experiment_id: str, change: Callable[[Experiment | None], Experiment]
    ) -> Experiment:
        out = await self._change(experiment_id, change)
        if out is None:  # a change that returns a document never deletes: unreachable
            raise NotFoundError(f"no experiment {experiment_id!r}")
        return out


def check_deletable(experiment: Experiment) -> None:
    """Raise ConflictError unless ``experiment`` may be deleted (a draft or a stopped one)."""
    if experiment.state == "running":
        raise ConflictError(f"experiment {experiment.id!r} is running: stop it first")


def _existing(experiment_id: str, old: Experiment | None) -> Experiment:
    if old is None:
        raise NotFoundError(f"no experiment {experiment_id!r}")
    return old


def decode_all(raws: list[bytes]) -> list[Experiment]:
    """Stored documents, by id."""
    return sorted((_decode(r) for r in raws), key=lambda e: e.id)
