"""Scenario 4 of ``scripts.chaos``: ``kill -9`` of one master of a 3-master Redis Cluster under load.

The cluster is the script's own: three ``redis-server --cluster-enabled yes`` on free ports (AOF on,
``appendfsync always``), joined with ``redis-cli --cluster create`` as ``.ci/run`` does, with a 2 s node
timeout and ``cluster-require-full-coverage no`` so that the two surviving masters keep serving their
slots while the third is down (with full coverage, the default, the whole cluster stops answering once the
node timeout has passed). Visitors are spread over all slots; one master is killed under load, the events
acknowledged for visitors whose slot lives on the other two are checked while it is down, then it is
restarted from its AOF (and its cluster config) and every acknowledged event is checked, its visitors'
included, after the unacknowledged batches were sent again with their event ids.

Through the service (``journeyrec serve`` on the cluster URL, 2 workers) when it accepts a cluster URL.
When it refuses one, the scenario prints the refusal and runs the same faults and checks against the
visitor store itself (``RedisStore.from_url`` on the cluster URL): appends with event ids and visitor
reads from concurrent tasks, events read back from the visitor's state and the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.crc import key_slot

from models.domain import Event, EventType
from models.errors import StoreUnavailableError
from scripts.chaos_checks import (
    API_KEY,
    HEADERS,
    SERVICE_ENV,
    WORKERS,
    FailedError,
    Pace,
    check,
    first_answer,
    missing_from_journeys,
    say,
    verify_events,
    wait_for,
)
from scripts.chaos_load import (
    Answer,
    Load,
    LoadSpec,
    Op,
    Outcome,
    SentEvent,
    acknowledged,
    retry_batches,
    tally,
    unacknowledged,
)
from scripts.chaos_procs import RedisServer, Service, create_cluster, free_port, wait_cluster_ok
from service.store.redis_store import RedisStore
from tests.storefront import storefront_catalog, train_storefront_model

MASTERS = 3
PREFIX = "chaos"


def slot_owners(node: RedisServer) -> Callable[[int], int]:
    """slot -> port of the master serving it (``CLUSTER SLOTS`` of ``node``)."""
    c = redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2)
    try:
        ranges = [(int(r[0]), int(r[1]), int(r[2][1])) for r in c.execute_command("CLUSTER SLOTS")]
    finally:
        c.close()
    owner = np.zeros(16384, dtype=np.int64)
    for lo, hi, port in ranges:
        owner[lo : hi + 1] = port
    return lambda slot: int(owner[slot])


def visitor_slot(visitor: str) -> int:
    """The cluster slot of the visitor's keys (their hash tag ``{v:<hex of the id>}``,
    ``service.store.redis_store``)."""
    return int(key_slot(f"{PREFIX}:{{v:{visitor.encode().hex()}}}".encode()))


def cluster_master_kill(tmp: Path, pace: Pace) -> dict[str, Any]:
    """Start the cluster and the service on it; run through the service, or against the store when
    ``serve`` refuses the cluster URL (printed)."""
    tmp.mkdir(parents=True, exist_ok=True)
    nodes = [RedisServer(free_port(bus=True), tmp / f"node-{i}", cluster=True) for i in range(MASTERS)]
    service: Service | None = None
    try:
        for n in nodes:
            n.start()
        create_cluster(nodes)
        url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)
        say(f"cluster up: {MASTERS} masters on ports {', '.join(str(n.port) for n in nodes)} (AOF)")
        models = tmp / "models"
        train_storefront_model(models)
        service = Service(
            models,
            url,
            prefix=PREFIX,
            api_keys=f"{API_KEY}:ingest+read+admin+catalog",
            workers=WORKERS,
            log=tmp / "serve.log",
            env=SERVICE_ENV,
        )
        refusal = refused(service)
        if refusal is None:
            return {"through": "service", **through_service(service, url, nodes, pace, tmp)}
        service = None
        say(f"  SKIPPED through the service: journeyrec serve refuses the cluster URL: {refusal}")
        say("  running the same faults against the visitor store (RedisStore) on the cluster instead")
        return {
            "through": "store",
            "service_skipped": refusal,
            **asyncio.run(through_store(url, nodes, pace)),
        }
    finally:
        if service is not None:
            service.stop()
        for n in nodes:
            n.stop()


def refused(service: Service) -> str | None:
    """None once the service is ready; the line it exited with when it refused to start (status 2)."""
    try:
        service.wait_ready(HEADERS)
    except RuntimeError:
        if service.exited() == 2:
            # the CLI's one line: "journeyrec: <why>" (or click's "Error: <why>")
            lines = [ln.strip() for ln in service.log_text().splitlines() if ln.strip()]
            last = lines[-1] if lines else "exit status 2"
            return last.removeprefix("journeyrec:").removeprefix("Error:").strip()
        raise
    return None


def _by_master(
    outcomes: list[Outcome], owner: Callable[[int], int], victim: int, since: float, until: float
) -> dict[str, Any]:
    """Answers between ``since`` and ``until``, for visitors on the killed master and on the others."""
    during = [o for o in outcomes if o.started >= since and o.ended <= until]
    on_victim = [owner(visitor_slot(o.visitor)) == victim for o in during]
    mine = tally(o for o, v in zip(during, on_victim, strict=True) if v)
    others = tally(o for o, v in zip(during, on_victim, strict=True) if not v)
    return {
        "killed_masters_visitors": mine["answers"],
        "other_visitors": others["answers"],
        "other_visitors_by_op": others["by_op"],
    }


# -- through the service ----------------------------------------------------------------------------------


def through_service(
    service: Service, url: str, nodes: list[RedisServer], pace: Pace, tmp: Path
) -> dict[str, Any]:
    failures: list[str] = []
    run_id = f"ck{uuid.uuid4().hex[:6]}"
    owner = slot_owners(nodes[0])
    victim = nodes[1]
    visitors = [f"{run_id}-v{i}" for i in range(pace.visitors)]
    items = [c.item_id for c in storefront_catalog() if c.kind.value == "product"]
    spec = LoadSpec(visitors=visitors, items=items, clients=pace.clients, run_id=run_id)
    load = Load(service.base, API_KEY, spec)
    load.start()
    try:
        time.sleep(pace.warm)
        victim.kill9()
        killed = time.monotonic()
        time.sleep(pace.outage + 2.5)  # past the node timeout: the others know it failed
        on_others = [
            e for e in acknowledged(list(load.outcomes)) if owner(visitor_slot(e.visitor_id)) != victim.port
        ]
        missing_others = len(missing_from_journeys(service.base, on_others))
        restarted = time.monotonic()
        aof_load = victim.start()
        wait_cluster_ok(nodes)
        back = time.monotonic()

        def recovered() -> bool:
            done = [o for o in list(load.outcomes) if owner(visitor_slot(o.visitor)) == victim.port]
            return first_answer(done, Op.INGEST, Answer.OK, back) is not None

        wait_for(recovered, 60, "an acknowledged event of a visitor on the restarted master")
        time.sleep(pace.after)
    finally:
        outcomes = load.stop()
    whole = tally(outcomes)
    check(
        whole["answers"]["bad"] + whole["answers"]["no_answer"] == 0,
        f"bad answers or none: {whole['answers']}, e.g. {whole['bad_examples'][:1]}",
        failures,
    )
    check(missing_others == 0, f"{missing_others} acknowledged events missing on the other masters", failures)
    acked = acknowledged(outcomes)
    retried = retry_batches(service.base, API_KEY, unacknowledged(outcomes))
    retried_events = [e for b in unacknowledged(outcomes) for e in b]
    found = verify_events(service.base, url, PREFIX, acked, retried_events, run_id, tmp)
    lost = max(found["missing_in_stream"], found["missing_in_visitor_state"])
    check(lost == 0, f"acknowledged events lost: {found}", failures)
    check(found["stored_twice_in_stream"] == 0, f"events stored twice: {found}", failures)
    check(found["retried_missing"] == 0, f"retried events missing: {found}", failures)
    return {
        "visitors_per_master": dict(Counter(str(owner(visitor_slot(v))) for v in visitors)),
        "killed_master": victim.port,
        "master_down_s": round(restarted - killed, 2),
        "aof_load_s": round(aof_load, 3),
        "requests": whole["requests"],
        "answers": whole["answers"],
        "during_outage": _by_master(outcomes, owner, victim.port, killed, restarted),
        "acknowledged_on_other_masters_checked_while_down": len(on_others),
        "missing_on_other_masters_while_down": missing_others,
        "acknowledged_events": len(acked),
        "lost": lost,
        "stored_twice": found["stored_twice_in_stream"],
        "unacknowledged_events_retried": retried["events"],
        "failures": failures,
    }


# -- against the store -------------------------------------------------------------------------------------


def _event(e: SentEvent) -> Event:
    return Event(
        visitor_id=e.visitor_id,
        item_id=e.item_id,
        event=EventType(e.event),
        timestamp=e.timestamp,
        event_id=e.event_id,
    )


class StoreLoad:
    """Concurrent tasks appending one visitor's events at a time (with event ids) and reading visitors."""

    def __init__(self, store: RedisStore, visitors: list[str], items: list[str], clients: int, run_id: str):
        self.store = store
        self.visitors = visitors
        self.items = items
        self.clients = clients
        self.run_id = run_id
        self.outcomes: list[Outcome] = []
        self.stop = asyncio.Event()
        self._n = 0
        self._t0 = round(time.time() - 86_400, 3)

    def events(self, rng: np.random.Generator, visitor: str) -> tuple[SentEvent, ...]:
        out = []
        for _ in range(int(rng.integers(1, 5))):
            self._n += 1
            item = self.items[int(rng.integers(len(self.items)))]
            eid = f"{self.run_id}-{self._n}"
            out.append(SentEvent(eid, visitor, item, "product_view", round(self._t0 + self._n * 0.001, 3)))
        return tuple(out)

    async def one(self, op: Op, visitor: str, events: tuple[SentEvent, ...]) -> Outcome:
        started = time.monotonic()
        try:
            if op is Op.INGEST:
                await self.store.append([_event(e) for e in events])
            else:
                await self.store.visitor(visitor)
        except StoreUnavailableError as e:
            return Outcome(op, started, time.monotonic(), Answer.BUSY, 503, str(e)[:200], events, visitor)
        except Exception as e:  # noqa: BLE001 (anything else is what the check reports)
            where = traceback.extract_tb(e.__traceback__)[-1]
            detail = f"{type(e).__name__}: {e} (at {Path(where.filename).name}:{where.lineno} {where.name})"
            return Outcome(op, started, time.monotonic(), Answer.BAD, None, detail, events, visitor)
        return Outcome(op, started, time.monotonic(), Answer.OK, 200, "", events, visitor)

    async def client(self, index: int) -> None:
        rng = np.random.default_rng([7, index])
        while not self.stop.is_set():
            visitor = self.visitors[int(rng.integers(len(self.visitors)))]
            op = Op.INGEST if rng.random() < 0.6 else Op.JOURNEY
            self.outcomes.append(
                await self.one(op, visitor, self.events(rng, visitor) if op is Op.INGEST else ())
            )
            await asyncio.sleep(0.005)

    async def run(self) -> None:
        await asyncio.gather(*(self.client(i) for i in range(self.clients)))


async def missing_in_store(store: RedisStore, events: list[SentEvent]) -> tuple[int, int]:
    """(events missing from their visitor's state, visitors that could not be read)."""
    by_visitor: dict[str, set[str]] = {}
    for e in events:
        by_visitor.setdefault(e.visitor_id, set()).add(e.event_id)
    missing = unread = 0
    for visitor, ids in by_visitor.items():
        try:
            state = await store.visitor(visitor)
        except StoreUnavailableError:
            unread += 1
            missing += len(ids)
            continue
        missing += len(ids - {e.event_id for e in state.events})
    return missing, unread


async def stream_ids(store: RedisStore, run_id: str) -> Counter[str]:
    ids: Counter[str] = Counter()
    after = "0"
    while True:
        page = await store.read_stream(after, 10_000)
        ids.update(e.event.event_id or "" for e in page if (e.event.event_id or "").startswith(run_id + "-"))
        if len(page) < 10_000:
            return ids
        after = page[-1].entry_id


async def retry_store(store: RedisStore, batches: list[tuple[SentEvent, ...]]) -> dict[str, int]:
    sent = duplicates = 0
    for batch in batches:
        for attempt in range(50):
            try:
                result = await store.append([_event(e) for e in batch])
            except StoreUnavailableError:
                await asyncio.sleep(0.1 * (attempt + 1))
                continue
            sent += len(batch)
            duplicates += result.duplicates
            break
        else:
            raise FailedError(f"a retried batch was never stored: {batch[0].event_id}")
    return {"events": sent, "duplicates": duplicates}


async def through_store(url: str, nodes: list[RedisServer], pace: Pace) -> dict[str, Any]:
    failures: list[str] = []
    run_id = f"cs{uuid.uuid4().hex[:6]}"
    owner = slot_owners(nodes[0])
    victim = nodes[1]
    visitors = [f"{run_id}-v{i}" for i in range(pace.visitors)]
    items = [c.item_id for c in storefront_catalog() if c.kind.value == "product"]
    store = RedisStore.from_url(
        url,
        prefix=PREFIX,
        visitor_ttl=90 * 86_400,
        recent_events=1000,
        stream_maxlen=10_000_000,
        socket_timeout=0.5,
        max_connections=64,
    )
    load = StoreLoad(store, visitors, items, pace.clients, run_id)
    task = asyncio.create_task(load.run())
    try:
        await asyncio.sleep(pace.warm)
        victim.kill9()
        killed = time.monotonic()
        await asyncio.sleep(pace.outage + 2.5)  # past the node timeout: the others know it failed
        on_others = [
            e for e in acknowledged(list(load.outcomes)) if owner(visitor_slot(e.visitor_id)) != victim.port
        ]
        missing_others, unread_others = await missing_in_store(store, on_others)
        restarted = time.monotonic()
        aof_load = await asyncio.to_thread(victim.start)
        await asyncio.to_thread(wait_cluster_ok, nodes)
        back = time.monotonic()
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            done = [o for o in list(load.outcomes) if owner(visitor_slot(o.visitor)) == victim.port]
            if first_answer(done, Op.INGEST, Answer.OK, back) is not None:
                break
            await asyncio.sleep(0.05)
        else:
            raise FailedError("no event of a visitor on the restarted master stored within 60 s")
        recovered = time.monotonic() - back
        await asyncio.sleep(pace.after)
    finally:
        load.stop.set()
        with contextlib.suppress(Exception):
            await task
    outcomes = load.outcomes
    try:
        whole = tally(outcomes)
        check(
            whole["answers"]["bad"] == 0,
            f"{whole['answers']['bad']} errors not StoreUnavailableError, e.g. {whole['bad_examples'][:1]}",
            failures,
        )
        check(
            missing_others == 0,
            f"{missing_others} acknowledged events missing on the other masters",
            failures,
        )
        acked = acknowledged(outcomes)
        retried = await retry_store(store, unacknowledged(outcomes))
        missing_state, _ = await missing_in_store(store, acked)
        stream = await stream_ids(store, run_id)
        missing_stream = sum(1 for e in acked if e.event_id not in stream)
        twice = sum(1 for n in stream.values() if n > 1)
        retried_events = [e for b in unacknowledged(outcomes) for e in b]
        missing_retried, _ = await missing_in_store(store, retried_events)
        missing_retried += sum(1 for e in retried_events if e.event_id not in stream)
        lost = max(missing_state, missing_stream)
        check(
            lost == 0, f"acknowledged events lost: state {missing_state}, stream {missing_stream}", failures
        )
        check(twice == 0, f"{twice} events stored twice in the stream", failures)
        check(missing_retried == 0, f"{missing_retried} retried events missing", failures)
    finally:
        await store.close()
    return {
        "visitors_per_master": dict(Counter(str(owner(visitor_slot(v))) for v in visitors)),
        "killed_master": victim.port,
        "master_down_s": round(restarted - killed, 2),
        "aof_load_s": round(aof_load, 3),
        "first_ack_on_restarted_master_after_s": round(recovered, 3),
        "operations": whole["requests"],
        "answers": whole["answers"],
        "errors_seen": whole["bad_examples"],
        "errors_after_restart": sum(1 for o in outcomes if o.answer is Answer.BAD and o.ended >= restarted),
        "during_outage": _by_master(outcomes, owner, victim.port, killed, restarted),
        "acknowledged_on_other_masters_checked_while_down": len(on_others),
        "missing_on_other_masters_while_down": missing_others,
        "unreadable_visitors_on_other_masters_while_down": unread_others,
        "acknowledged_events": len(acked),
        "lost": lost,
        "stored_twice": twice,
        "unacknowledged_events_retried": retried["events"],
        "retried_found_stored_already": retried["duplicates"],
        "failures": failures,
    }
