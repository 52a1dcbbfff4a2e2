"""Mixed load for ``scripts.chaos``: concurrent clients ingesting events (each with an ``event_id``), asking
for recommendations and reading journeys, every answer recorded with when it was asked and answered.

The clients run on an asyncio loop in a thread of their own, so that the chaos script can break things
(``kill -9``) from its main thread while they run. Times are ``time.monotonic()``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

import httpx
import msgspec
import numpy as np


class Op(StrEnum):
    INGEST = "ingest"
    RECOMMEND = "recommend"
    JOURNEY = "journey"


class Answer(StrEnum):
    """How an answer is classed.

    ok: 2xx (a recommendation not flagged fallback); fallback: a recommendation flagged ``"fallback": true``;
    busy: 503 with a ``Retry-After`` of at least 1 s; bad: any other status (a 503 without Retry-After
    too); no_answer: the connection failed or timed out before an answer."""

    OK = "ok"
    FALLBACK = "fallback"
    BUSY = "busy"
    BAD = "bad"
    NO_ANSWER = "no_answer"


class SentEvent(NamedTuple):
    event_id: str
    visitor_id: str
    item_id: str
    event: str
    timestamp: float


@dataclass
class Outcome:
    op: Op
    started: float
    ended: float
    answer: Answer
    status: int | None = None
    detail: str = ""
    events: tuple[SentEvent, ...] = ()
    visitor: str = ""


def classify(op: Op, status: int, headers: httpx.Headers, body: bytes) -> Answer:
    if 200 <= status < 300:
        if op is Op.RECOMMEND:
            try:
                fallback = bool(msgspec.json.decode(body).get("fallback"))
            except (msgspec.DecodeError, AttributeError):
                return Answer.BAD
            return Answer.FALLBACK if fallback else Answer.OK
        return Answer.OK
    if status == 503:
        try:
            return Answer.BUSY if int(headers.get("retry-after", "0")) >= 1 else Answer.BAD
        except ValueError:
            return Answer.BAD
    return Answer.BAD


@dataclass
class LoadSpec:
    """visitors, items: the ids the clients use; clients: concurrent clients (each one connection kept
    alive); batch: most events per ingest request; mix: share of ingest / recommend / journey requests;
    pause: seconds each client waits between its requests (the load stays below saturation, so that
    answers are not slowed by the load itself)."""

    visitors: list[str]
    items: list[str]
    clients: int = 6
    batch: int = 4
    mix: tuple[float, float, float] = (0.4, 0.4, 0.2)
    pause: float = 0.01
    timeout: float = 10.0
    seed: int = 0
    run_id: str = "chaos"


@dataclass
class Load:
    """Runs ``spec``'s clients against ``base`` from ``start()`` to ``stop()``; ``outcomes`` holds every
    request's outcome, in the order they ended."""

    base: str
    api_key: str
    spec: LoadSpec
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _counter: int = 0
    # events' timestamps: a day back, a millisecond apart (unique: the journey check matches on them)
    _t0: float = field(default_factory=lambda: round(time.time() - 86_400, 3))

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self._thread.start()

    def stop(self) -> list[Outcome]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.spec.timeout + 30)
        return self.outcomes

    async def _run(self) -> None:
        await asyncio.gather(*(self._client(i) for i in range(self.spec.clients)))

    def _events(self, rng: np.random.Generator, client: int, visitor: str) -> list[SentEvent]:
        """1 to ``batch`` events of one visitor (a storefront sends a visitor's events together)."""
        n = int(rng.integers(1, self.spec.batch + 1))
        out = []
        for _ in range(n):
            self._counter += 1
            item = self.spec.items[int(rng.integers(len(self.spec.items)))]
            kind = "add_to_cart" if rng.random() < 0.15 else "product_view"
            eid = f"{self.spec.run_id}-{client}-{self._counter}"
            out.append(SentEvent(eid, visitor, item, kind, round(self._t0 + self._counter * 0.001, 3)))
        return out

    async def _client(self, index: int) -> None:
        rng = np.random.default_rng([self.spec.seed, index])
        headers = {"X-API-Key": self.api_key}
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(
            base_url=self.base, headers=headers, timeout=self.spec.timeout, limits=limits
        ) as client:
            while not self._stop.is_set():
                op = Op(rng.choice([o.value for o in Op], p=list(self.spec.mix)))
                visitor = self.spec.visitors[int(rng.integers(len(self.spec.visitors)))]
                events = self._events(rng, index, visitor) if op is Op.INGEST else []
                self.outcomes.append(await self.one(client, op, visitor, events))
                await asyncio.sleep(self.spec.pause)

    async def one(self, client: httpx.AsyncClient, op: Op, visitor: str, events: list[SentEvent]) -> Outcome:
        sent: tuple[SentEvent, ...] = ()
        started = time.monotonic()
        try:
            if op is Op.INGEST:
                sent = tuple(events)
                body = {"events": [e._asdict() for e in sent]}
                r = await client.post("/v1/events", content=msgspec.json.encode(body))
            elif op is Op.RECOMMEND:
                r = await client.get(f"/v1/visitors/{visitor}/recommendations", params={"k": 5})
            else:
                r = await client.get(f"/v1/visitors/{visitor}/journey", params={"limit": 5})
        except httpx.HTTPError as e:
            ended = time.monotonic()
            return Outcome(op, started, ended, Answer.NO_ANSWER, None, type(e).__name__, sent, visitor)
        answer = classify(op, r.status_code, r.headers, r.content)
        detail = r.text[:200] if answer in (Answer.BAD, Answer.BUSY) else ""
        return Outcome(op, started, time.monotonic(), answer, r.status_code, detail, sent, visitor)


def acknowledged(outcomes: Iterable[Outcome]) -> list[SentEvent]:
    """The events of every ingest request answered 2xx."""
    return [e for o in outcomes if o.op is Op.INGEST and o.answer is Answer.OK for e in o.events]


def unacknowledged(outcomes: Iterable[Outcome]) -> list[tuple[SentEvent, ...]]:
    """The event batches of ingest requests not answered 2xx (a client retries them)."""
    return [o.events for o in outcomes if o.op is Op.INGEST and o.answer is not Answer.OK]


def tally(outcomes: Iterable[Outcome]) -> dict[str, Any]:
    """Counts by answer class, by operation and in total, plus a few of the bad answers."""
    by_op: dict[str, Counter[str]] = {op.value: Counter() for op in Op}
    bad: list[str] = []
    for o in outcomes:
        by_op[o.op.value][o.answer.value] += 1
        if o.answer in (Answer.BAD, Answer.NO_ANSWER) and len(bad) < 5:
            bad.append(f"{o.op.value} {o.status} {o.detail}".strip())
    total: Counter[str] = Counter()
    for c in by_op.values():
        total.update(c)
    return {
        "requests": sum(total.values()),
        "answers": {a.value: total[a.value] for a in Answer},
        "by_op": {op: {a.value: c[a.value] for a in Answer if c[a.value]} for op, c in by_op.items()},
        "bad_examples": bad,
    }


def retry_batches(base: str, api_key: str, batches: list[tuple[SentEvent, ...]]) -> dict[str, int]:
    """Send each batch again (same ``event_id``s), as a client does after a 503 or no answer, until it
    is acknowledged; returns the events sent and how many the service reported as duplicates (stored
    by the first attempt although it was not acknowledged)."""
    sent = duplicates = 0
    with httpx.Client(base_url=base, headers={"X-API-Key": api_key}, timeout=10) as client:
        for batch in batches:
            if not batch:
                continue
            body = msgspec.json.encode({"events": [e._asdict() for e in batch]})
            for attempt in range(50):
                try:
                    r = client.post("/v1/events", content=body)
                except httpx.HTTPError:
                    r = None
                if r is not None and r.status_code == 200:
                    sent += len(batch)
                    duplicates += int(r.json()["duplicates"])
                    break
                time.sleep(0.1 * (attempt + 1))
            else:
                raise RuntimeError(f"a retried batch was never acknowledged: {batch[0].event_id}")
    return {"events": sent, "duplicates": duplicates}
