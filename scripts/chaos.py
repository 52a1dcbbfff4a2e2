"""Faults as a test suite (``make chaos``): break Redis, the models directory and the server's workers
under load, on loopback, and check what the service promises. Prints its figures and writes them to
``reports/chaos.json``; exits 1 when a check fails.

Usage: python -m scripts.chaos [--quick] [--no-cluster] [--only NAME ...] [--report reports/chaos.json]

Everything runs on 127.0.0.1 in a temporary directory: the script's own redis-server (its own port, AOF on
with ``appendfsync always``: Redis fsyncs each write before acknowledging it, so a ``kill -9`` may not lose
anything the service acknowledged, which is what the first scenario checks; ``everysec`` may postpone a
write by up to 2 s when an fsync is slow, see ``scripts.chaos_procs.RedisServer``), a model trained on the
test storefront (``tests.storefront``), and ``journeyrec serve`` started as a real subprocess with 2
Granian workers (``JOURNEYREC_RESPAWN_WORKERS`` on). Load comes from concurrent clients, each on one
kept-alive connection (``scripts.chaos_load``): events ingested with an ``event_id``, recommendations,
journey reads.

1. ``redis_kill``: ``kill -9`` of Redis under load, a pause, Redis restarted from its AOF. While it is down
   the only answers allowed are 503 with ``Retry-After`` and recommendations flagged ``"fallback": true``.
   Afterwards every batch not acknowledged is sent again with the same event ids (as a client retries), and
   every acknowledged event must be in the visitor's state (its journey) and in the event stream
   (``journeyrec export-events``), once.
2. ``worker_kill``: ``kill -9`` of one of the 2 workers under load. Granian replaces it; no request may go
   unanswered or fail but those in flight when it died (asked before it was gone).
3. ``publications``: 10 model versions published under load (a copy of the live version re-published
   atomically as ``models.artifact.publish`` does: a temporary directory renamed into place, then ``latest``
   repointed), 4 damaged in different ways (``DAMAGE``, with ``tests.artifact_faults``); the last one is
   damaged, so the last good version is the one before it. No request may fail, every worker must end
   serving the last good version (its own answer and the fleet's heartbeats) and refuse each damaged one.
4. ``replaced_on_damaged_latest``: then a worker is killed again; while ``latest`` still names the damaged
   version, its replacement must serve the version the other worker serves (``Heartbeat.join_fleet``) and
   every recommendation must be answered.
5. ``cluster_master_kill`` (``scripts.chaos_cluster``): a 3-master Redis Cluster of the script's own (AOF
   on, partial coverage), visitors over all slots, ``kill -9`` of one master under load, the events
   acknowledged for visitors on the other masters checked while it is down, the master restarted from its
   AOF and its visitors checked, all through ``journeyrec serve`` on the cluster.

``--quick`` (the test suite's run, ``tests/test_chaos.py``) makes each phase shorter with fewer clients and
leaves 4 and 5 out; ``--only NAME`` runs the scenarios named. Figures are counts and seconds measured on
a shared machine: read them as what happened in this run, not as a benchmark.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec

from models import artifact
from scripts.chaos_checks import (
    API_KEY,
    HEADERS,
    REPORT,
    SERVICE_ENV,
    WORKERS,
    Pace,
    check,
    first_answer,
    say,
    verify_events,
    wait_for,
)
from scripts.chaos_cluster import cluster_master_kill
from scripts.chaos_load import (
    Answer,
    Load,
    LoadSpec,
    Op,
    acknowledged,
    retry_batches,
    tally,
    unacknowledged,
)
from scripts.chaos_procs import RedisServer, Service, free_port
from tests.artifact_faults import corrupt_inside_npz, rehash
from tests.storefront import storefront_catalog, train_storefront_model

# -- models ------------------------------------------------------------------------------------------------


def _flip_byte(version: Path) -> None:
    """One byte of the catalog flipped, the manifest left as it was: the sha256 check refuses it."""
    path = version / artifact.CATALOG
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _truncate_manifest(version: Path) -> None:
    """The manifest cut short (a copy that stopped half way): not valid JSON."""
    path = version / artifact.MANIFEST
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])


def _short_id_map(version: Path) -> None:
    """The item feature names one short, re-hashed: every file checks out, the arrays no longer fit."""
    path = version / artifact.ITEM_VOCAB
    vocab = msgspec.json.decode(path.read_bytes())
    vocab["names"] = vocab["names"][:-1]
    path.write_bytes(msgspec.json.encode(vocab))
    rehash(version, artifact.ITEM_VOCAB)


#: the damage done to the bad publications, by name
DAMAGE: dict[str, Callable[[Path], None]] = {
    "crc_inside_npz": corrupt_inside_npz,
    "sha256_mismatch": _flip_byte,
    "truncated_manifest": _truncate_manifest,
    "id_map_misfit": _short_id_map,
}
#: the 10 publications: good ones and the 4 damaged, ending on a damaged one
PUBLICATIONS = [
    "good",
    "crc_inside_npz",
    "good",
    "sha256_mismatch",
    "good",
    "good",
    "truncated_manifest",
    "good",
    "good",
    "id_map_misfit",
]


def republish(models: Path, source: Path, damage: str) -> str:
    """Publish a copy of version ``source`` under a new version name (damaged by ``DAMAGE[damage]``
    unless ``good``) the way ``models.artifact.publish`` does: written under a temporary name, fsynced,
    renamed into place, then ``latest`` repointed atomically. Returns the version name."""
    version = artifact.new_version()
    tmp = models / f".tmp-{version}"
    shutil.copytree(source, tmp)
    manifest = artifact.read_manifest(tmp)
    (tmp / artifact.MANIFEST).write_bytes(
        msgspec.json.format(msgspec.json.encode(msgspec.structs.replace(manifest, version=version)))
    )
    if damage != "good":
        DAMAGE[damage](tmp)
    for p in tmp.iterdir():
        with p.open("rb") as f:
            os.fsync(f.fileno())
    tmp.rename(models / version)
    artifact.point_latest(models, version)
    return version


# -- the stack ---------------------------------------------------------------------------------------------


@dataclass
class Stack:
    """The run's temp directory, model, Redis and server (2 workers)."""

    tmp: Path
    models: Path
    redis: RedisServer
    service: Service
    prefix: str
    items: list[str]


@contextlib.contextmanager
def stack(tmp: Path) -> Iterator[Stack]:
    models = tmp / "models"
    train_storefront_model(models)
    items = [c.item_id for c in storefront_catalog() if c.kind.value == "product"]
    redis = RedisServer(free_port(), tmp / "redis")
    service: Service | None = None
    try:
        redis.start()
        prefix = "chaos"
        service = Service(
            models,
            redis.url,
            prefix=prefix,
            api_keys=f"{API_KEY}:ingest+read+admin+catalog",
            workers=WORKERS,
            log=tmp / "serve.log",
            env=SERVICE_ENV,
        )
        started = service.wait_ready(HEADERS)
        say(f"server up: {WORKERS} workers on {service.base} in {started:.1f} s, redis on {redis.url} (AOF)")
        yield Stack(tmp, models, redis, service, prefix, items)
    finally:
        if service is not None:
            service.stop()
        redis.stop()


def load_for(s: Stack, pace: Pace, run_id: str, *, mix: tuple[float, float, float] = (0.4, 0.4, 0.2)) -> Load:
    visitors = [f"{run_id}-v{i}" for i in range(pace.visitors)]
    spec = LoadSpec(visitors=visitors, items=s.items, clients=pace.clients, mix=mix, run_id=run_id)
    return Load(s.service.base, API_KEY, spec)


# -- 1. kill -9 of Redis ---------------------------------------------------------------------------------


def redis_kill(s: Stack, pace: Pace) -> dict[str, Any]:
    run_id = f"rk{uuid.uuid4().hex[:6]}"
    load = load_for(s, pace, run_id)
    failures: list[str] = []
    load.start()
    try:
        time.sleep(pace.warm)
        s.redis.kill9()
        killed = time.monotonic()
        time.sleep(pace.outage)
        restarted = time.monotonic()
        aof_load = s.redis.start()
        redis_back = time.monotonic()

        def recovered() -> bool:
            done = list(load.outcomes)
            return (
                first_answer(done, Op.INGEST, Answer.OK, redis_back) is not None
                and first_answer(done, Op.RECOMMEND, Answer.OK, redis_back) is not None
            )

        wait_for(recovered, 60, "service recovery after Redis came back")
        time.sleep(pace.after)
    finally:
        outcomes = load.stop()
    during = [o for o in outcomes if o.started >= killed and o.ended <= restarted]
    outage = tally(during)
    allowed = outage["answers"]["busy"] + outage["answers"]["fallback"]
    check(
        allowed == outage["requests"],
        f"outage answers not 503/fallback: {outage['answers']} {outage['bad_examples'][:1]}",
        failures,
    )
    check(outage["requests"] > 0, "no request was answered during the outage", failures)
    whole = tally(outcomes)
    check(
        whole["answers"]["bad"] + whole["answers"]["no_answer"] == 0,
        f"bad answers or no answer: {whole['bad_examples']}",
        failures,
    )
    acked = acknowledged(outcomes)
    retried = retry_batches(s.service.base, API_KEY, unacknowledged(outcomes))
    retried_events = [e for b in unacknowledged(outcomes) for e in b]
    found = verify_events(s.service.base, s.redis.url, s.prefix, acked, retried_events, run_id, s.tmp)
    lost = max(found["missing_in_stream"], found["missing_in_visitor_state"])
    check(lost == 0, f"acknowledged events lost: {found}", failures)
    check(found["stored_twice_in_stream"] == 0, f"events stored twice: {found}", failures)
    check(found["retried_missing"] == 0, f"retried events missing: {found}", failures)
    first_ingest = first_answer(outcomes, Op.INGEST, Answer.OK, redis_back)
    first_rec = first_answer(outcomes, Op.RECOMMEND, Answer.OK, redis_back)
    return {
        "redis_down_s": round(restarted - killed, 2),
        "aof_load_s": round(aof_load, 3),
        "first_ack_after_redis_back_s": round((first_ingest or redis_back) - redis_back, 3),
        "first_personalised_after_redis_back_s": round((first_rec or redis_back) - redis_back, 3),
        "requests": whole["requests"],
        "answers": whole["answers"],
        "during_outage": {"requests": outage["requests"], **outage["answers"], "by_op": outage["by_op"]},
        "acknowledged_events": len(acked),
        "lost": lost,
        "stored_twice": found["stored_twice_in_stream"],
        "unacknowledged_events_retried": retried["events"],
        "retried_found_stored_already": retried["duplicates"],
        "failures": failures,
    }


# -- 2. model publications --------------------------------------------------------------------------------


def fleet(s: Stack) -> list[dict[str, Any]]:
    """The workers listed by the heartbeats that are running processes of the server."""
    body = httpx.get(s.service.base + "/v1/models", headers=HEADERS, timeout=5).json()
    pids = set(s.service.worker_pids())
    return [w for w in body["workers"] if int(w["worker"].rsplit(":", 1)[1]) in pids]


def own_answers(s: Stack) -> dict[int, dict[str, Any]]:
    """Each running worker's own ``GET /v1/models`` answer (new connections until each one answered)."""
    answers: dict[int, dict[str, Any]] = {}
    pids = set(s.service.worker_pids())
    for _ in range(400):
        body = httpx.get(s.service.base + "/v1/models", headers=HEADERS, timeout=5).json()
        pid = int(body["worker"].rsplit(":", 1)[1])
        if pid in pids:
            answers[pid] = body
        if set(answers) == pids:
            break
    return answers


def publications(s: Stack, pace: Pace) -> dict[str, Any]:
    failures: list[str] = []
    run_id = f"pub{uuid.uuid4().hex[:6]}"
    source = artifact.resolve_latest(s.models)
    log_from = len(s.service.log_text())
    load = load_for(s, pace, run_id)
    published: list[tuple[str, str]] = []
    load.start()
    try:
        time.sleep(pace.warm / 2)
        for damage in PUBLICATIONS:
            published.append((republish(s.models, source, damage), damage))
            time.sleep(pace.publish_gap)
        last_good = [v for v, d in published if d == "good"][-1]
        last_bad = published[-1][0]

        def settled() -> bool:
            listed = fleet(s)
            return len(listed) == WORKERS and all(w["model_version"] == last_good for w in listed)

        settle = wait_for(settled, 60, "every worker's heartbeat on the last good version")
        time.sleep(pace.after / 2)
    finally:
        outcomes = load.stop()
    whole = tally(outcomes)
    failed = whole["requests"] - whole["answers"]["ok"]
    check(
        failed == 0,
        f"failed requests during publications: {whole['bad_examples'] or whole['answers']}",
        failures,
    )
    answers = own_answers(s)
    check(len(answers) == WORKERS, f"answers from {len(answers)} of {WORKERS} workers", failures)
    serving = {pid: a["live"]["version"] for pid, a in answers.items()}
    check(
        all(v == last_good for v in serving.values()), f"workers serve {serving}, not {last_good}", failures
    )
    refused = {pid: (a.get("last_refused") or {}).get("version") for pid, a in answers.items()}
    check(all(v == last_bad for v in refused.values()), f"last refused {refused}, not {last_bad}", failures)
    log = s.service.log_text()[log_from:]
    refusals = [line for line in log.splitlines() if "model reload refused" in line]
    damaged = [v for v, d in published if d != "good"]
    per_damage = {d: sum(1 for line in refusals if v in line) for v, d in published if d != "good"}
    check(
        all(n >= WORKERS for n in per_damage.values()),
        f"not every worker refused every damaged version: {per_damage}",
        failures,
    )
    return {
        "publications": len(published),
        "damaged": len(damaged),
        "damage": [d for _, d in published],
        "requests": whole["requests"],
        "failed_requests": failed,
        "answers": whole["answers"],
        "last_good": last_good,
        "workers_serving_last_good": sum(1 for v in serving.values() if v == last_good),
        "heartbeats_on_last_good_s_after_last_publication": round(settle, 2),
        "refusals_logged": per_damage,
        "failures": failures,
    }


# -- 3. kill -9 of a worker -----------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has closed its sockets: every thread of it has exited (its main thread is a
    zombie or reaped). Its main thread's state alone is not enough: a worker has several threads, which
    share its open files, and the sockets close only when the last of them exits; a request sent before
    that reaches the dying worker."""
    try:
        threads = os.listdir(f"/proc/{pid}/task")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return threads in ([], [str(pid)]) and state in ("Z", "X")


def worker_kill(s: Stack, pace: Pace) -> dict[str, Any]:
    failures: list[str] = []
    run_id = f"wk{uuid.uuid4().hex[:6]}"
    before = s.service.worker_pids()
    check(len(before) == WORKERS, f"{len(before)} workers running before the kill", failures)
    victim = before[0]
    load = load_for(s, pace, run_id)
    load.start()
    try:
        time.sleep(pace.warm)
        killed = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: _gone(victim), 10, f"worker {victim} to die", step=0.001)
        dead = time.monotonic()

        def replaced() -> bool:
            pids = s.service.worker_pids()
            return len(pids) == WORKERS and victim not in pids

        wait_for(replaced, 60, "a worker to replace the killed one")
        spawned = time.monotonic()

        def serving() -> bool:
            listed = fleet(s)
            return len(listed) == WORKERS and all(w["model_version"] for w in listed)

        wait_for(serving, 60, "the new worker's heartbeat with a model")
        beating = time.monotonic()
        time.sleep(pace.after)
    finally:
        outcomes = load.stop()
    check(s.service.exited() is None, f"the server exited ({s.service.exited()})", failures)
    unanswered = [o for o in outcomes if o.answer is not Answer.OK]
    in_flight = [o for o in unanswered if o.started < dead]
    # asked once the worker was gone: a 503 with Retry-After is an answer (retry later), not a loss
    busy = [o for o in unanswered if o.started >= dead and o.answer is Answer.BUSY]
    lost = [o for o in unanswered if o.started >= dead and o.answer is not Answer.BUSY]
    gone = tally(lost)
    check(
        not lost, f"failed after the worker was gone: {gone['answers']} {gone['bad_examples'][:1]}", failures
    )
    whole = tally(outcomes)
    return {
        "requests": whole["requests"],
        "answers": whole["answers"],
        "failed_in_flight_at_kill": len(in_flight),
        "failed_in_flight_by_answer": dict(Counter(o.answer.value for o in in_flight)),
        "busy_after_kill": len(busy),
        "busy_after_kill_when": [
            f"{o.op.value} asked +{o.started - dead:.3f} s: {o.detail}" for o in busy[:3]
        ],
        "lost_after_kill": len(lost),
        "lost_after_kill_when": [
            f"{o.op.value} asked +{o.started - dead:.3f} s, answered {o.status} +{o.ended - dead:.3f} s "
            f"({o.detail})"
            for o in lost[:5]
        ],
        "worker_gone_after_s": round(dead - killed, 3),
        "replaced_after_s": round(spawned - killed, 2),
        "new_worker_beating_after_s": round(beating - killed, 2),
        "workers_after": len(s.service.worker_pids()),
        "failures": failures,
    }


# -- a worker replaced while `latest` names a damaged version -----------------------------------------------


def replaced_on_damaged_latest(s: Stack, _pace: Pace) -> dict[str, Any]:
    """After ``publications`` (``latest`` names a damaged version, the workers serve the one before it):
    ``kill -9`` of a worker; its replacement refuses ``latest`` at start-up and must serve what the other
    worker serves (``service.heartbeat.Heartbeat.join_fleet``), and 20 recommendations on new
    connections (either worker) must all be answered 200."""
    before = s.service.worker_pids()
    others = {w["model_version"] for w in fleet(s) if not w["worker"].endswith(f":{before[0]}")}
    latest = artifact.latest_name(s.models)
    os.kill(before[0], signal.SIGKILL)

    def replaced() -> bool:
        pids = s.service.worker_pids()
        return len(pids) == WORKERS and before[0] not in pids

    wait_for(replaced, 60, "a replacement")
    new = (set(s.service.worker_pids()) - set(before)).pop()
    wait_for(
        lambda: any(w["worker"].endswith(f":{new}") for w in fleet(s)), 60, "the replacement's heartbeat"
    )
    answer = own_answers(s).get(new, {})
    serves = (answer.get("live") or {}).get("version")
    url = s.service.base + "/v1/visitors/probe/recommendations"
    # each on a new connection: either worker may take it
    codes = Counter(httpx.get(url, headers=HEADERS, timeout=5).status_code for _ in range(20))
    failures = []
    if serves not in others:
        failures.append(f"the replacement serves {serves}, the other worker {sorted(others)}")
    if set(codes) != {200}:
        failures.append(f"recommendations answered {dict(codes)}, not all 200")
    return {
        "latest_names": latest,
        "replacement_serves": serves,
        "other_worker_serves": sorted(others),
        "recommendations_on_new_connections": {str(k): v for k, v in sorted(codes.items())},
        "failures": failures,
    }


# -- main --------------------------------------------------------------------------------------------------


SCENARIOS: dict[str, Callable[[Stack, Pace], dict[str, Any]]] = {
    "redis_kill": redis_kill,
    "worker_kill": worker_kill,
    "publications": publications,
    "replaced_on_damaged_latest": replaced_on_damaged_latest,
}
CLUSTER = "cluster_master_kill"
#: left out of ``--quick`` (the test suite's run): the cluster, and one more worker kill
NOT_QUICK = (CLUSTER, "replaced_on_damaged_latest")


def run(quick: bool, only: list[str]) -> dict[str, Any]:
    """Run the scenarios named in ``only`` (in their order above), each to its figures (a failed check
    recorded under ``failures``); every process and the temp directory are gone when it returns."""
    pace = Pace.of(quick)
    results: dict[str, Any] = {}
    tmp = Path(tempfile.mkdtemp(prefix="journeyrec-chaos-"))
    try:
        if any(name in only for name in SCENARIOS):
            with stack(tmp) as s:
                for name, scenario in SCENARIOS.items():
                    if name in only:
                        say(f"-- {name}")
                        seen = len(s.service.log_text())
                        results[name] = attempt(functools.partial(scenario, s, pace))
                        if results[name].get("failures"):  # what the server said meanwhile
                            results[name]["server_log"] = log_lines(s.service.log_text()[seen:])
                        show(name, results[name])
        if CLUSTER in only:
            say(f"-- {CLUSTER}")
            results[CLUSTER] = attempt(lambda: cluster_master_kill(tmp / "cluster", pace))
            show(CLUSTER, results[CLUSTER])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return results


def log_lines(text: str, keep: int = 12) -> list[str]:
    """The server's warnings and errors in ``text`` (its last ``keep`` lines): why a failed scenario's
    answers were what they were, with the figures."""
    said = [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line or "Traceback" in line]
    return said[-keep:]


def attempt(scenario: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The scenario's figures, or the failure that stopped it (a check waited in vain, a process that
    would not start)."""
    try:
        return scenario()
    except Exception as e:  # noqa: BLE001 (the run goes on with the next scenario; this one failed)
        where = traceback.extract_tb(e.__traceback__)[-1]
        at = f"{Path(where.filename).name}:{where.lineno}"
        return {"failures": [f"{type(e).__name__}: {e} (at {at})"]}


def show(name: str, figures: dict[str, Any]) -> None:
    for key, value in figures.items():
        if key != "failures":
            say(f"  {key}: {json.dumps(value)}")
    for f in figures.get("failures", []):
        say(f"  FAILED: {f}")
    say(f"  {name}: {'ok' if not figures.get('failures') else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help=f"shorter phases, fewer clients, without {NOT_QUICK}"
    )
    ap.add_argument("--no-cluster", action="store_true", help="leave the Redis Cluster scenario out")
    names = [*SCENARIOS, CLUSTER]
    ap.add_argument("--only", action="append", choices=names, help="run this scenario (repeatable)")
    ap.add_argument("--report", type=Path, default=REPORT, help="JSON file to write the figures to")
    args = ap.parse_args(argv)
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        print("chaos: redis-server and redis-cli are needed (Debian's redis-server package)", file=sys.stderr)
        return 2
    left_out = (NOT_QUICK if args.quick else ()) + ((CLUSTER,) if args.no_cluster else ())
    only = args.only or [n for n in names if n not in left_out]
    results = run(args.quick, only)
    ok = all(not r.get("failures") for r in results.values())
    report = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": args.quick,
        "ok": ok,
        "scenarios": results,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    say(f"chaos: {'all checks held' if ok else 'FAILED'}; figures in {args.report}")
    return 0 if ok else 1


if __name__ == "__main__":
    # SIGTERM (a CI timeout) unwinds like Ctrl-C: every ``finally`` stops its processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
    sys.exit(130)
