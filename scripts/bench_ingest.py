"""Benchmark: batched ingest over HTTP into Redis, with and without journey analytics (figures to read, not a
timed test).

Usage: python -m scripts.bench_ingest [--visitors 5000] [--events-per-visitor 40] [--batch 500]
                                      [--workers 2] [--concurrency 4] [--workdir DIR]

One run: simulate a small storefront and train a model on it (its journey rules are the ones ingest
uses; ``--workdir`` keeps it for the next run); then twice, with ``JOURNEYREC_JOURNEY_ANALYTICS`` off and
on: start ``journeyrec serve`` (Granian, ``--workers``, Redis db 14, a fresh key prefix), POST the same
events in batches of ``--batch`` (shuffled, so a batch touches hundreds of visitors) with ``--concurrency``
requests in flight, print events/s, read the transitions counted back, stop the server and delete the
prefix's keys. The load generator shares the machine's cores with the server, so the figures are lower
bounds for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
from pathlib import Path

import httpx
import msgspec

from scripts import bench_service
from scripts.bench_service import (
    API_KEY,
    batches,
    clean_prefix,
    free_port,
    ingest,
    make_events,
    start_server,
    stop_server,
    wait_ready,
)
from training.loaders import load_events
from training.pipeline import config_for, train_and_publish
from training.simulate import SimulationConfig, write_simulation


def model(work: Path, seed: int) -> tuple[Path, list[str]]:
    """A small published model (reused from ``work``) and its product ids."""
    sim = work / "sim"
    if not (sim / "events.csv").exists():
        write_simulation(SimulationConfig(visitors=3000, items=5000, seed=seed), sim)
    log = load_events(sim / "events.csv", catalog=sim / "catalog.csv")
    if not (work / "models" / "latest").exists():
        cfg = config_for(None, threads=2, seed=seed)
        cfg = msgspec.structs.replace(cfg, factors=msgspec.structs.replace(cfg.factors, epochs=2))
        train_and_publish(log, work / "models", cfg)
    return work / "models", [c.item_id for c in log.catalog if c.kind.value == "product"]


def transitions_counted(base: str) -> int:
    r = httpx.get(
        base + "/v1/analytics/journey",
        params={"from": str(time.time() - 30 * 86_400), "to": str(time.time() + 3_600)},
        headers={"X-API-Key": API_KEY},
        timeout=60,
    )
    r.raise_for_status()
    return sum(t["count"] for t in r.json()["transitions"])


def one_run(
    models: Path, bodies: list[bytes], n_events: int, analytics: bool, args: argparse.Namespace, logdir: Path
) -> float:
    prefix = f"bench-ingest-{os.getpid()}-{secrets.token_hex(4)}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    os.environ["JOURNEYREC_JOURNEY_ANALYTICS"] = "true" if analytics else "false"
    bench_service.WORKERS = args.workers  # start_server passes it as --workers
    log = logdir / f"server-{'on' if analytics else 'off'}.log"
    proc = start_server(models, port, prefix, log)
    try:
        wait_ready(base, proc, log)
        secs, accepted = asyncio.run(ingest(base, bodies, args.concurrency))
        rate = n_events / secs
        counted = transitions_counted(base) if analytics else 0
        print(
            f"journey analytics {'on ' if analytics else 'off'}: {n_events:,} events ({accepted:,} accepted) "
            f"in {len(bodies)} batches of {args.batch}, {args.concurrency} in flight, {args.workers} "
            f"workers: {secs:.2f} s = {rate:,.0f} events/s"
            + (f"; {counted:,} transitions counted" if analytics else ""),
            flush=True,
        )
        return rate
    finally:
        stop_server(proc)
        clean_prefix(prefix)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--visitors", type=int, default=5000)
    ap.add_argument("--events-per-visitor", type=int, default=40)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", type=Path, help="keep the simulation and model here for the next run")
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as d:
        work = args.workdir or Path(d)
        models, products = model(work, args.seed)
        visitors = [f"bench-v{i}" for i in range(args.visitors)]
        events = make_events(visitors, products, args.events_per_visitor, args.seed)
        bodies = batches(events, args.batch, args.seed)
        n_events = sum(len(v) for v in events.values())
        off = one_run(models, bodies, n_events, False, args, Path(d))
        on = one_run(models, bodies, n_events, True, args, Path(d))
        print(
            f"with transitions: {on:,.0f} events/s ({on / off:.0%} of {off:,.0f} without); target >= 20,000"
        )


if __name__ == "__main__":
    main()
