"""A simulated A/B test: the stage-aware blend against a stage-agnostic control, on a live server.

Usage: python -m scripts.ab_sim --url URL --admin-key KEY --api-key KEY [--visitors 20000] [--days 14]
                                [--items 2000 --shop-seed 1] [--experiment ID] [--out reports/ab-sim.json]
       python -m scripts.ab_sim --serve [--visitors 20000] ...      (``make ab``)

With ``--url`` the server must serve a model trained on ``journeyrec simulate --items ITEMS --seed
SHOP_SEED`` (the catalog the simulated visitors know). With ``--serve`` the script makes one: it simulates
that shop (20,000 visitors, 120 days), trains a model on it, starts ``journeyrec serve`` (2 workers,
Redis db 14, a unique key prefix) and stops it and deletes its keys at the end.

Steps: create the experiment (``PUT /v1/experiments/{id}``: placements ``[PLACEMENT]``, all traffic, two
equal variants: ``stage-agnostic`` (the control, ``blend: stage_agnostic``) and ``stage-aware``), start it,
run ``simulate-traffic`` against the server (``training.traffic``), read ``GET
/v1/experiments/{id}/results``, print it as a per-stage table with the 95 % intervals against the control
and the simulator's own per-stage counts, stop the experiment, and write everything to ``--out``.

Read the result for what it is: the visitors' clicks come from the simulator's response model
(``training.simulate``: position bias x (taste relevance + fit to the visitor's true stage)); the
experiment measures how much more of what that model rewards each blend shows, not real shoppers.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import msgspec

from models.domain import STAGES
from training.traffic import TrafficConfig, TrafficSummary, run_traffic, summary_lines

OUT = Path("reports/ab-sim.json")
CONTROL, TREATMENT = "stage-agnostic", "stage-aware"
STAGE_ORDER = ["all", *(s.value for s in STAGES)]
# (results field, heading, format of a value)
METRICS = (
    ("ctr", "CTR", "{:.2%}"),
    ("add_to_cart_rate", "cart rate", "{:.2%}"),
    ("conversion_rate", "conversion", "{:.2%}"),
    ("revenue_per_visitor", "revenue/visitor", "{:.3f}"),
)


def experiment_body(placement: str, salt: str) -> dict[str, Any]:
    """The experiment document (``models.experiments.Experiment`` without its id)."""
    return {
        "placements": [placement],
        "traffic": 1.0,
        "holdout": 0.0,
        "salt": salt,
        "variants": [
            {"name": CONTROL, "weight": 1.0, "control": True, "blend": "stage_agnostic"},
            {"name": TREATMENT, "weight": 1.0, "blend": "stage_aware"},
        ],
    }


def _check(r: httpx.Response, what: str) -> dict[str, Any]:
    if r.status_code >= 300:
        sys.exit(f"ab_sim: {what}: {r.status_code} {r.text[:300]}")
    body: dict[str, Any] = r.json()
    return body


def create_and_start(base: str, admin_key: str, experiment: str, placement: str) -> dict[str, Any]:
    """Create the experiment (PUT, or POST with the id in the body on a server that wants that) and start
    it; waits a second so that every worker follows the change."""
    body = experiment_body(placement, salt=experiment)
    with httpx.Client(base_url=base, headers={"X-API-Key": admin_key}, timeout=30) as http:
        r = http.put(f"/v1/experiments/{experiment}", json=body)
        if r.status_code in (404, 405):
            r = http.post("/v1/experiments", json={"id": experiment, **body})
        _check(r, f"create experiment {experiment}")
        doc = _check(http.post(f"/v1/experiments/{experiment}/start"), f"start experiment {experiment}")
    time.sleep(1.0)  # JOURNEYREC_EXPERIMENTS_POLL_SECONDS is 0.5 s by default
    return doc


def read_results(base: str, admin_key: str, experiment: str, stop: bool) -> dict[str, Any]:
    with httpx.Client(base_url=base, headers={"X-API-Key": admin_key}, timeout=60) as http:
        results = _check(http.get(f"/v1/experiments/{experiment}/results"), "results")
        if stop:
            _check(http.post(f"/v1/experiments/{experiment}/stop"), f"stop experiment {experiment}")
    return results


def _metric_cell(m: dict[str, Any] | None, fmt: str) -> str:
    """``value`` and, against the control, ``diff [low, high]`` with a * when the interval excludes 0."""
    if not m or m.get("value") is None:
        return "-"
    text = fmt.format(m["value"])
    d = m.get("vs_control")
    if d:
        star = "*" if d.get("significant") else ""
        text += f" ({d['diff']:+.4f} [{d['low']:+.4f}, {d['high']:+.4f}]{star})"
    return text


def results_lines(results: dict[str, Any]) -> list[str]:
    """The results as a table per stage: every variant's visitors, lists and metrics, each with its
    difference to the control and 95 % interval (* = the interval excludes 0), then the sample-ratio check."""
    cells = results.get("cells") or []
    by_stage: dict[str, list[dict[str, Any]]] = {}
    for c in cells:
        by_stage.setdefault(c["stage"], []).append(c)
    control = results.get("control", CONTROL)
    method = results.get("method", "")
    lines = [
        f"experiment {results.get('experiment', '?')}: control {control}; method: {method}",
        "value (difference to control [95 % interval], * = excludes 0)",
    ]
    stages = [s for s in STAGE_ORDER if s in by_stage] + sorted(set(by_stage) - set(STAGE_ORDER))
    for stage in stages:
        lines.append(f"-- {stage}")
        rows = sorted(by_stage[stage], key=lambda c: (c["variant"] != control, c["variant"]))
        for c in rows:
            lines.append(f"   {c['variant']:<16} visitors {c['visitors']:>7,}  lists {int(c['lists']):>8,}")
            for field, heading, fmt in METRICS:
                lines.append(f"      {heading:<16} {_metric_cell(c.get(field), fmt)}")
    srm = results.get("sample_ratio") or {}
    if srm:
        p = srm.get("p_value")
        flag = "MISMATCH: do not read the results" if srm.get("mismatch") else "ok"
        observed = ", ".join(f"{k} {v:,}" for k, v in (srm.get("observed") or {}).items())
        lines.append(f"sample ratio: {observed}; p = {'-' if p is None else f'{p:.3g}'}: {flag}")
    return lines


def _serve(visitors: int, items: int, shop_seed: int, epochs: int) -> tuple[str, str, Any, str]:
    """Simulate the shop, train on it and start a 2-worker server on Redis: (url, key, process, prefix)."""
    from scripts.bench_service import API_KEY, free_port, start_server, wait_ready
    from training.loaders import read_events
    from training.pipeline import config_for, train_and_publish
    from training.simulate import SimulationConfig, write_simulation

    work = Path(tempfile.mkdtemp(prefix="ab-sim-"))
    print(f"simulating the shop ({visitors:,} visitors, {items:,} items, seed {shop_seed}) in {work}")
    write_simulation(SimulationConfig(visitors=visitors, items=items, seed=shop_seed), work / "sim")
    log, _ = read_events([str(work / "sim" / "events.csv")], catalog=str(work / "sim" / "catalog.csv"))
    cfg = config_for(None, seed=shop_seed, threads=2)
    cfg = msgspec.structs.replace(cfg, factors=msgspec.structs.replace(cfg.factors, epochs=epochs))
    print(f"training on {log.n_events:,} events")
    train_and_publish(log, work / "models", cfg)
    port, prefix = free_port(), f"absim-{uuid.uuid4().hex[:8]}"
    proc = start_server(work / "models", port, prefix, work / "server.log")
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, proc, work / "server.log")
    return base, API_KEY, proc, prefix


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", help="a running server (else --serve)")
    ap.add_argument("--serve", action="store_true", help="simulate, train and serve a model (Redis db 14)")
    ap.add_argument("--admin-key", help="a key with the admin scope (with --url)")
    ap.add_argument("--api-key", help="a key with the ingest and read scopes (with --url)")
    ap.add_argument("--visitors", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--days", type=int, default=14)
    ap.add_argument("--placement", default="home")
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--shop-seed", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=8, help="training epochs with --serve")
    ap.add_argument("--experiment", default=None, help="experiment id (default ab-sim-<time>)")
    ap.add_argument("--keep-running", action="store_true", help="do not stop the experiment at the end")
    ap.add_argument("--out", type=Path, default=OUT)
    a = ap.parse_args()
    if bool(a.url) == a.serve:
        ap.error("give either --url (with --admin-key and --api-key) or --serve")
    if a.url and not (a.admin_key and a.api_key):
        ap.error("--url needs --admin-key and --api-key")
    experiment = a.experiment or f"ab-sim-{int(time.time())}"
    proc, prefix = None, ""
    if a.serve:
        a.url, key, proc, prefix = _serve(20_000, a.items, a.shop_seed, a.epochs)
        a.admin_key = a.api_key = key
    try:
        doc = create_and_start(a.url, a.admin_key, experiment, a.placement)
        print(f"experiment {experiment} running: {CONTROL} (control) vs {TREATMENT}")
        cfg = TrafficConfig(
            url=a.url.rstrip("/"),
            api_key=a.api_key,
            visitors=a.visitors,
            concurrency=a.concurrency,
            seed=a.seed,
            days=a.days,
            placement=a.placement,
            items=a.items,
            shop_seed=a.shop_seed,
            prefix=f"{experiment}-v",
        )
        summary: TrafficSummary = asyncio.run(run_traffic(cfg, progress=_say))
        print()
        print("\n".join(summary_lines(summary)))
        results = read_results(a.url, a.admin_key, experiment, stop=not a.keep_running)
    finally:
        if proc is not None:
            from scripts.bench_service import clean_prefix, stop_server

            stop_server(proc)
            clean_prefix(prefix)
    print()
    print("\n".join(results_lines(results)))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"experiment": doc, "traffic": msgspec.to_builtins(summary), "results": results}
    a.out.write_bytes(msgspec.json.format(msgspec.json.encode(report)))
    print(f"wrote {a.out}")


def _say(message: str) -> None:
    print(f"\r{message:<80}", end="", flush=True)


if __name__ == "__main__":
    main()
