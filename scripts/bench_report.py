"""``reports/bench.json``: the latest ``make bench`` figures and the machine they ran on.

``scripts/bench_train.py`` and ``scripts/bench_service.py`` each replace their own section; the README
generator (``scripts/readme.py``) renders the file as the README's benchmark table.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from pathlib import Path

import msgspec
import numpy as np

BENCH_JSON = Path("reports") / "bench.json"


class Machine(msgspec.Struct, frozen=True):
    cpu: str
    cores: int
    python: str
    system: str


class TrainFigures(msgspec.Struct, frozen=True):
    """``bench_train``: one ``journeyrec train`` run on a simulated shop; times in seconds."""

    events: int
    visitors: int
    items: int
    threads: int
    simulate_s: float
    load_s: float
    train_publish_s: float


class ServiceFigures(msgspec.Struct, frozen=True):
    """``bench_service``: the HTTP service (2 workers, Redis) and the model in-process.

    Latencies in milliseconds; ``identical`` and ``probe_recall`` are fractions."""

    items: int
    workers: int
    ready_s: float
    ingest_events_per_s: float
    p50_ms: float
    p99_ms: float
    latency_client: str
    saturation_rps: float
    saturation_client: str
    score_ms: float
    score_predict_ms: float
    call_ms: float
    call_exhaustive_ms: float
    call_predict_ms: float
    identical: float
    probes: int
    probe_recall: float
    # the same server and visitors again with live_items live catalog items and 20 merchandising rules
    # (bench_live); absent from runs made with --no-live
    live_items: int = 0
    live_p50_ms: float | None = None
    live_p99_ms: float | None = None
    live_saturation_rps: float | None = None
    patch_visible_s: float | None = None
    # the plain figures above come from a server that logs no served lists; these from the same data on a
    # server that logs every list (attribution), then with an experiment on every recommendation too;
    # absent from runs made with --no-experiment
    logged_p50_ms: float | None = None
    logged_saturation_rps: float | None = None
    experiment_p50_ms: float | None = None
    experiment_saturation_rps: float | None = None
    # the two servers at once, request by request on one connection each (httpx client): the plain one
    # (no lists logged, no experiment) and the logging one with the experiment
    paired_plain_p50_ms: float | None = None
    paired_both_p50_ms: float | None = None
    # Redis memory under the run's prefix after the ingest, per visitor (events_per_visitor events each)
    bytes_per_visitor: float | None = None
    events_per_visitor: int | None = None


class TrainRun(msgspec.Struct, frozen=True):
    machine: Machine
    date: str  # ISO-8601, UTC
    figures: TrainFigures


class ServiceRun(msgspec.Struct, frozen=True):
    machine: Machine
    date: str  # ISO-8601, UTC
    figures: ServiceFigures


class BenchReport(msgspec.Struct, frozen=True, omit_defaults=True):
    train: TrainRun | None = None
    service: ServiceRun | None = None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def this_machine() -> Machine:
    return Machine(
        cpu=_cpu_model(),
        cores=os.cpu_count() or 1,
        python=platform.python_version(),
        system=f"{platform.system()} {platform.release()}",
    )


def read_report(path: Path = BENCH_JSON) -> BenchReport | None:
    """The report, or None when there is none (``reports/`` is git-ignored)."""
    if not path.is_file():
        return None
    return msgspec.json.decode(path.read_bytes(), type=BenchReport)


def _plain(obj: object) -> object:
    """numpy scalars (the timing helpers return them) as Python numbers."""
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"cannot encode {type(obj).__name__}")


def record(figures: TrainFigures | ServiceFigures, path: Path = BENCH_JSON) -> None:
    """Replace this benchmark's section of the report, keeping the other one."""
    old = read_report(path) or BenchReport()
    date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    if isinstance(figures, TrainFigures):
        new = msgspec.structs.replace(old, train=TrainRun(this_machine(), date, figures))
    else:
        new = msgspec.structs.replace(old, service=ServiceRun(this_machine(), date, figures))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.format(msgspec.json.encode(new, enc_hook=_plain)) + b"\n")
    tmp.replace(path)
    print(f"figures written to {path}")
