"""Scenario 4 of ``scripts.chaos``: ``kill -9`` of one master of a 3-master Redis Cluster under load.

The cluster is the script's own: three ``redis-server --cluster-enabled yes`` on free ports (AOF on,
``appendfsync always``), joined with ``redis-cli --cluster create`` as ``.ci/run`` does, with a 2 s node
timeout and ``cluster-require-full-coverage no`` so that the two surviving masters keep serving their
slots while the third is down (with full coverage, the default, the whole cluster stops answering once the
node timeout has passed). Visitors are spread over all slots; one master is killed under load, the events
acknowledged for visitors whose slot lives on the other two are checked while it is down, then it is
restarted from its AOF (and its cluster config) and every acknowledged event is checked, its visitors'
included, after the unacknowledged batches were sent again with their event ids.

All of it through the service: ``journeyrec serve`` on the cluster URL, 2 workers.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redis.crc import key_slot

from scripts.chaos_checks import (
    API_KEY,
    HEADERS,
    SERVICE_ENV,
    WORKERS,
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
    acknowledged,
    retry_batches,
    tally,
    unacknowledged,
)
from scripts.chaos_procs import RedisServer, Service, create_cluster, free_port, wait_cluster_ok
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
    """Start the cluster and the service on it, and run the scenario through the service."""
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
        service.wait_ready(HEADERS)
        return through_service(service, url, nodes, pace, tmp)
    finally:
        if service is not None:
            service.stop()
        for n in nodes:
            n.stop()


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
