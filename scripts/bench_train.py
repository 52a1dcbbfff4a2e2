"""Benchmark: `journeyrec train` on ~1M simulated interactions (a figure to read, not a timed test).

Usage: python -m scripts.bench_train [--visitors 20000] [--threads 2] [--report reports/bench.json]
Prints the time of each phase (simulate, load, train+publish) and writes them to the report's ``train``
section (``scripts/bench_report.py``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from scripts.bench_report import BENCH_JSON, TrainFigures, record
from training.loaders import load_events
from training.pipeline import config_for, train_and_publish
from training.simulate import SimulationConfig, write_simulation


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--visitors", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=2_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--report", type=Path, default=BENCH_JSON, help="JSON file the figures are written to")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        root = Path(d)
        t0 = time.perf_counter()
        write_simulation(
            SimulationConfig(visitors=args.visitors, items=args.items, seed=args.seed), root / "sim"
        )
        t1 = time.perf_counter()
        log = load_events(root / "sim" / "events.csv", catalog=root / "sim" / "catalog.csv")
        t2 = time.perf_counter()
        phases: dict[str, float] = {}
        last = [time.perf_counter()]
        current = ["start"]

        def progress(msg: str) -> None:
            now = time.perf_counter()
            phases[current[0]] = phases.get(current[0], 0.0) + now - last[0]
            last[0], current[0] = now, msg

        cfg = config_for(None, threads=args.threads, seed=args.seed)
        train_and_publish(log, root / "models", cfg, progress)
        progress("done")
        t3 = time.perf_counter()
    sizes = f"{log.n_events:,} events, {log.n_visitors:,} visitors, {log.n_items:,} items"
    print(f"simulate      {t1 - t0:6.1f} s  ({sizes})")
    print(f"load          {t2 - t1:6.1f} s")
    for name, secs in phases.items():
        if name != "start":
            print(f"  {name[:60]:60s} {secs:6.1f} s")
    print(f"train+publish {t3 - t2:6.1f} s  (threads={args.threads})")
    print(f"load+train    {t3 - t1:6.1f} s  target <= 60 s on 2 cores")
    figures = TrainFigures(
        events=log.n_events,
        visitors=log.n_visitors,
        items=log.n_items,
        threads=args.threads,
        simulate_s=t1 - t0,
        load_s=t2 - t1,
        train_publish_s=t3 - t2,
    )
    record(figures, args.report)


if __name__ == "__main__":
    main()
