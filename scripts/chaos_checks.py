"""What ``scripts.chaos`` and ``scripts.chaos_cluster`` share: the run's settings and key, its pacing, and
the checks that read events back through the service and ``journeyrec export-events``."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec

from scripts.chaos_load import Answer, Op, Outcome, SentEvent
from scripts.chaos_procs import ROOT, clean_env

API_KEY = "chaoskey-0123456789abcdef"
HEADERS = {"X-API-Key": API_KEY}
REPORT = Path("reports") / "chaos.json"
WORKERS = 2
#: service settings of every chaos run: workers follow ``latest`` and beat often, so that a check waits
#: fractions of a second; a visitor keeps enough events for the journey check to see all of them
SERVICE_ENV = {
    "JOURNEYREC_MODEL_POLL_SECONDS": "0.2",
    "JOURNEYREC_HEARTBEAT_SECONDS": "0.5",
    "JOURNEYREC_RECENT_EVENTS": "1000",
    "JOURNEYREC_RESPAWN_WORKERS": "true",
}


@dataclass(frozen=True)
class Pace:
    """How long each phase lasts and how much load it gets."""

    visitors: int
    clients: int
    warm: float  # seconds of load before the fault
    outage: float  # seconds Redis stays down
    after: float  # seconds of load after recovery
    publish_gap: float  # seconds between two publications

    @classmethod
    def of(cls, quick: bool) -> Pace:
        if quick:
            return cls(visitors=30, clients=3, warm=0.6, outage=1.0, after=0.6, publish_gap=0.5)
        return cls(visitors=300, clients=8, warm=4.0, outage=5.0, after=4.0, publish_gap=1.5)


class FailedError(Exception):
    """A check that did not hold (the message says which)."""


def check(ok: bool, message: str, failures: list[str]) -> None:
    if not ok:
        failures.append(message)


def say(line: str) -> None:
    print(line, flush=True)


# -- events back ------------------------------------------------------------------------------------------


def export_event_ids(redis_url: str, prefix: str, out: Path) -> Counter[str]:
    """Every stream entry's event id, counted, read through ``journeyrec export-events``."""
    cmd = [sys.executable, "-m", "journeyrec.cli", "export-events", "--redis-url", redis_url]
    cmd += ["--redis-prefix", prefix, "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, env=clean_env(), check=True, capture_output=True, timeout=300)
    ids: Counter[str] = Counter()
    with out.open("rb") as f:
        for line in f:
            eid = msgspec.json.decode(line).get("event_id")
            if eid:
                ids[eid] += 1
    return ids


def missing_from_journeys(base: str, events: list[SentEvent]) -> list[SentEvent]:
    """The events not among their visitor's touchpoints (``GET /v1/visitors/{id}/journey``)."""
    by_visitor: dict[str, list[SentEvent]] = {}
    for e in events:
        by_visitor.setdefault(e.visitor_id, []).append(e)
    missing: list[SentEvent] = []
    with httpx.Client(base_url=base, headers=HEADERS, timeout=10) as client:
        for visitor, evs in by_visitor.items():
            r = client.get(f"/v1/visitors/{visitor}/journey", params={"limit": 500})
            if r.status_code != 200:
                missing += evs
                continue
            seen = {(t["item_id"], t["event"], round(t["timestamp"], 3)) for t in r.json()["touchpoints"]}
            missing += [e for e in evs if (e.item_id, e.event, e.timestamp) not in seen]
    return missing


def verify_events(
    base: str,
    redis_url: str,
    prefix: str,
    acked: list[SentEvent],
    retried: list[SentEvent],
    run_id: str,
    tmp: Path,
) -> dict[str, int]:
    """The events acknowledged, and those acknowledged only when sent again, each looked for in its
    visitor's state (journey) and in the stream (one export); and the run's events found twice there."""
    stream = export_event_ids(redis_url, prefix, tmp / f"export-{uuid.uuid4().hex[:6]}.jsonl")
    mine = {eid: n for eid, n in stream.items() if eid.startswith(run_id + "-")}
    not_in_state = {e.event_id for e in missing_from_journeys(base, acked + retried)}
    return {
        "missing_in_stream": sum(1 for e in acked if e.event_id not in mine),
        "missing_in_visitor_state": sum(1 for e in acked if e.event_id in not_in_state),
        "retried_missing": sum(1 for e in retried if e.event_id not in mine or e.event_id in not_in_state),
        "stored_twice_in_stream": sum(1 for n in mine.values() if n > 1),
    }


def first_answer(outcomes: list[Outcome], op: Op, answer: Answer, after: float) -> float | None:
    """When the first ``op`` request asked at ``after`` or later was answered ``answer`` (None: none)."""
    ends = [o.ended for o in outcomes if o.op is op and o.answer is answer and o.started >= after]
    return min(ends) if ends else None


def wait_for(cond: Callable[[], bool], timeout: float, what: str, *, step: float = 0.05) -> float:
    """Seconds until ``cond()`` held (asked every ``step`` s); FailedError naming ``what`` after
    ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(step)
    raise FailedError(f"{what}: not within {timeout:.0f} s")
