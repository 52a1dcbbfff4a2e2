"""Benchmark: the HTTP service on a 100k-item catalog (figures to read, not a timed test).

Usage: python -m scripts.bench_service [--visitors 20000] [--items 100000] [--epochs 5]
                                      [--report reports/bench.json]

One run: simulate a catalog and train a model on it; start ``journeyrec serve`` (2 workers, Redis db 14,
a unique key prefix); ingest events for warm visitors; time recommendations sequentially (p50/p99) and at
saturation (wrk if installed, else an asyncio httpx load generator); time the naive LightFM ``predict`` path
against the service's vectorised ``Recommender.recommend`` in-process; stop the server, delete the prefix's
keys and print a summary table with each figure and its target. The figures go to the report's ``service``
section (``scripts/bench_report.py``), which the README's benchmark table is generated from.

The load generator shares the machine's cores with the server (and with anything else running), so the
saturation figure is a lower bound for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import httpx
import msgspec
import numpy as np
import redis
import scipy.sparse as sp
from lightfm import LightFM

from models.candidates import CandidateSettings
from models.domain import Event, EventType, ItemKind
from models.recommender import Recommender
from models.request import Filters, VisitorContext
from models.scoring import StageScorer
from scripts import bench_live
from scripts.bench_report import BENCH_JSON, ServiceFigures, record
from training.loaders import load_events
from training.pipeline import config_for, train_and_publish
from training.simulate import SimulationConfig, write_simulation

API_KEY = "benchkey-0123456789abcdef"
REDIS_URL = "redis://127.0.0.1:6379/14"
ROOT = Path(__file__).resolve().parent.parent
WORKERS = 2


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


# -- synthetic traffic -----------------------------------------------------------------------------------


def make_events(
    visitor_ids: list[str], product_ids: list[str], per_visitor: int, seed: int
) -> dict[str, list[Event]]:
    """Per visitor, ``per_visitor`` events over the last 7 days: views, some carts, a few purchases."""
    rng = np.random.default_rng(seed)
    now = time.time()
    kinds = [EventType.PRODUCT_VIEW, EventType.ADD_TO_CART, EventType.PURCHASE]
    out: dict[str, list[Event]] = {}
    for v in visitor_ids:
        ts = np.sort(now - rng.uniform(60, 7 * 86_400, per_visitor))
        items = rng.integers(0, len(product_ids), per_visitor)
        kind = rng.choice(3, per_visitor, p=[0.8, 0.15, 0.05])
        out[v] = [
            Event(visitor_id=v, item_id=product_ids[i], event=kinds[k], timestamp=float(t))
            for i, k, t in zip(items, kind, ts, strict=True)
        ]
    return out


def batches(events: dict[str, list[Event]], size: int, seed: int) -> list[bytes]:
    """JSON bodies of ``size`` events each (pre-encoded: the client's encoding is not what we time)."""
    flat = [
        {"visitor_id": e.visitor_id, "item_id": e.item_id, "event": e.event.value, "timestamp": e.timestamp}
        for evs in events.values()
        for e in evs
    ]
    order = np.random.default_rng(seed).permutation(len(flat))
    rows = [flat[i] for i in order]
    return [msgspec.json.encode({"events": rows[i : i + size]}) for i in range(0, len(rows), size)]


def context(v: str, evs: list[Event]) -> VisitorContext:
    """What the store would hand the model: recent events, the cart (carted, not bought), purchases."""
    cart: dict[str, float] = {}
    bought: dict[str, float] = {}
    for e in evs:
        if e.event is EventType.ADD_TO_CART:
            cart[e.item_id] = cart.get(e.item_id, 0.0) + 1.0
        elif e.event is EventType.PURCHASE:
            bought[e.item_id] = e.timestamp
            cart.pop(e.item_id, None)
    return VisitorContext(visitor_id=v, events=evs, cart=cart, purchases=bought, now=time.time())


# -- server ----------------------------------------------------------------------------------------------


def start_server(models: Path, port: int, prefix: str, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["JOURNEYREC_API_KEYS"] = f"{API_KEY}:ingest+read+admin+catalog"
    env["JOURNEYREC_REDIS_PREFIX"] = prefix
    env["JOURNEYREC_LOG_LEVEL"] = "warning"
    cmd = [
        str(ROOT / ".venv" / "bin" / "journeyrec"),
        "serve",
        "--models",
        str(models),
        "--redis-url",
        REDIS_URL,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(WORKERS),
    ]
    fh = log.open("wb")
    return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(base + "/health/ready", timeout=1.0).status_code == 200:
                return time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    sys.exit(f"server not ready after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def stop_server(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def memory_of(prefix: str) -> tuple[int, int]:
    """(bytes, keys) Redis holds under ``prefix``: ``MEMORY USAGE ... SAMPLES 0`` (every element counted) of
    each key, summed."""
    r = redis.Redis.from_url(REDIS_URL)
    keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.memory_usage(k, samples=0)
    total = sum(int(n or 0) for n in pipe.execute())
    r.close()
    return total, len(keys)


def clean_prefix(prefix: str) -> int:
    r = redis.Redis.from_url(REDIS_URL)
    n = 0
    keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
    for i in range(0, len(keys), 1000):
        n += int(r.delete(*keys[i : i + 1000]))
    r.close()
    return n


# -- phases ----------------------------------------------------------------------------------------------


async def ingest(base: str, bodies: list[bytes], concurrency: int) -> tuple[float, int]:
    """POST every body with ``concurrency`` requests in flight; returns (seconds, events accepted)."""
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    queue = list(reversed(bodies))
    accepted = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal accepted
        while queue:
            body = queue.pop()
            r = await client.post(base + "/v1/events", content=body, headers=headers)
            r.raise_for_status()
            accepted += int(r.json()["accepted"])

    limits = httpx.Limits(max_connections=concurrency)
    async with httpx.AsyncClient(timeout=30.0, limits=limits) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        return time.perf_counter() - t0, accepted


def sequential(base: str, visitors: list[str], n: int, warmup: int) -> list[float]:
    """Milliseconds per GET recommendations, one at a time over a keep-alive connection."""
    headers = {"X-API-Key": API_KEY}
    out: list[float] = []
    with httpx.Client(base_url=base, headers=headers, timeout=10.0) as c:
        for i in range(warmup + n):
            v = visitors[i % len(visitors)]
            t0 = time.perf_counter()
            r = c.get(f"/v1/visitors/{v}/recommendations", params={"k": 10})
            dt = time.perf_counter() - t0
            if r.status_code != 200:
                sys.exit(f"recommendations: HTTP {r.status_code}: {r.text[:300]}")
            if i >= warmup:
                out.append(dt * 1000)
    return out


WRK_LUA = """
local ids = {%s}
local n = 0
wrk.headers["X-API-Key"] = "%s"
request = function()
  n = n + 1
  return wrk.format("GET", "/v1/visitors/" .. ids[(n %% #ids) + 1] .. "/recommendations?k=10")
end
"""


def _wrk(wrk: str, base: str, visitors: list[str], threads: int, conns: int, secs: int, d: Path) -> str:
    lua = d / "rotate.lua"
    lua.write_text(WRK_LUA % (",".join(f'"{v}"' for v in visitors), API_KEY))
    cmd = [wrk, f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--latency", "-s", str(lua), base]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def _wrk_ms(out: str, label: str) -> float:
    """A latency percentile line of ``wrk --latency`` (e.g. label "50%") in milliseconds."""
    m = re.search(rf"^\s*{re.escape(label)}\s+([\d.]+)(us|ms|s)\s*$", out, re.MULTILINE)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]


def sequential_wrk(wrk: str, base: str, visitors: list[str], secs: int, d: Path) -> dict[str, float]:
    """Latency percentiles (ms) of one connection, one request at a time, measured by wrk."""
    _wrk(wrk, base, visitors, 1, 1, 2, d)  # warm-up
    out = _wrk(wrk, base, visitors, 1, 1, secs, d)
    m = re.search(r"(\d+) requests in", out)
    res = {q: _wrk_ms(out, f"{q}%") for q in ("50", "90", "99")}
    res["n"] = float(m.group(1)) if m else float("nan")
    return res


def saturate_wrk(
    wrk: str, base: str, visitors: list[str], conns: int, secs: int, d: Path
) -> tuple[float, str]:
    out = _wrk(wrk, base, visitors, 2, conns, secs, d)
    m = re.search(r"Requests/sec:\s*([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    note = f", {bad.group(1)} non-2xx" if bad else ", all 2xx"
    return (float(m.group(1)) if m else float("nan")), f"wrk -t2 -c{conns} -d{secs}s{note}"


async def saturate_httpx(base: str, visitors: list[str], conns: int, secs: int) -> tuple[float, str]:
    headers = {"X-API-Key": API_KEY}
    done = 0
    bad = 0
    deadline = time.perf_counter() + secs

    async def worker(c: httpx.AsyncClient, j: int) -> None:
        nonlocal done, bad
        i = j
        while time.perf_counter() < deadline:
            r = await c.get(f"/v1/visitors/{visitors[i % len(visitors)]}/recommendations", params={"k": 10})
            done += 1
            bad += r.status_code != 200
            i += conns

    limits = httpx.Limits(max_connections=conns)
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=10.0, limits=limits) as c:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(c, j) for j in range(conns)))
        el = time.perf_counter() - t0
    return done / el, f"asyncio httpx, {conns} connections, {secs} s, {bad} non-200"


class NaiveScorer(StageScorer):
    """The same scorer, but each request's factor scores come from ``LightFM.predict`` over the hybrid
    features (what serving without precomputed item representations would do)."""

    def __init__(self, base: StageScorer) -> None:
        super().__init__(base.factors, base.tables, base.blend_weights)
        self.base = base
        f = base.factors
        n_uf, d = f.user_emb.shape
        self.model = LightFM(no_components=d)
        self.model._initialize(d, f.item_emb.shape[0], n_uf)
        self.model.user_embeddings[:] = f.user_emb
        self.model.user_biases[:] = f.user_bias
        self.model.item_embeddings[:] = f.item_emb
        self.model.item_biases[:] = f.item_bias
        self.item_features = f.item_features.tocsr().astype(np.float32)
        self.items = np.arange(self.item_features.shape[0], dtype=np.int32)
        self.users = np.zeros(len(self.items), dtype=np.int32)

    def raw_scores(self, user_repr: np.ndarray, user_row: tuple[np.ndarray, np.ndarray]) -> np.ndarray:  # noqa: ARG002
        cols, vals = user_row
        user_features = sp.csr_matrix(
            (vals, cols, np.array([0, len(cols)])), shape=(1, self.model.user_embeddings.shape[0])
        )
        s = self.model.predict(
            self.users,
            self.items,
            user_features=user_features,
            item_features=self.item_features,
            num_threads=1,
        )
        # LightFM adds the user bias, which the served scores leave out (it does not change a ranking)
        return (s - float((user_features @ self.model.user_biases)[0])).astype(np.float32)


def _ms_per_call(fn: Callable[[int], object], calls: int) -> float:
    for i in range(5):
        fn(i)
    t0 = time.perf_counter()
    for i in range(calls):
        fn(i)
    return (time.perf_counter() - t0) * 1000 / calls


def in_process(models: Path, ctxs: list[VisitorContext], calls: int) -> dict[str, float]:
    """ms/call of the scoring step and of the whole recommend call, precomputed vs naive ``predict``, and
    how the candidate path compares with scoring every item (agreement of the top 10)."""
    rec = Recommender.load(models)
    naive = NaiveScorer(rec.scorer)
    f = Filters()
    n_uf = rec.n_user_features
    rng = np.random.default_rng(0)
    reps = [rec.scorer.factors.user_emb[rng.integers(0, n_uf)] for _ in range(64)]
    ufs = [(np.array([int(rng.integers(0, n_uf))]), np.ones(1, np.float32)) for _ in range(64)]

    def top10(s: np.ndarray) -> np.ndarray:
        top = np.argpartition(-s, 10)[:10]
        return top[np.argsort(-s[top])]

    out = {
        "score_vec": _ms_per_call(lambda i: top10(rec.scorer.raw_scores(reps[i % 64], ufs[i % 64])), calls),
        "score_naive": _ms_per_call(lambda i: top10(naive.raw_scores(reps[i % 64], ufs[i % 64])), calls),
        "call_vec": _ms_per_call(lambda i: rec.recommend(ctxs[i % len(ctxs)], 10, f), calls),
    }
    # scoring every item: with the precomputed representations, then with LightFM.predict in their place
    exhaustive = Recommender(rec.bundle, CandidateSettings(exhaustive_max_items=len(rec.catalog.items)))
    out["call_exhaustive"] = _ms_per_call(lambda i: exhaustive.recommend(ctxs[i % len(ctxs)], 10, f), calls)
    exhaustive.scorer = naive
    out["call_naive"] = _ms_per_call(lambda i: exhaustive.recommend(ctxs[i % len(ctxs)], 10, f), calls)
    exhaustive.scorer = naive.base
    # how often the candidate path returns exactly the exhaustive top 10, over the warm visitors, the same
    # visitors on a product page, and strangers from a few countries
    products = [c.item_id for c in rec.catalog.items if c.kind is ItemKind.PRODUCT]
    probes = [
        *ctxs,
        *(
            msgspec.structs.replace(c, current_item=products[(i * 7919) % len(products)])
            for i, c in enumerate(ctxs)
        ),
        *(
            VisitorContext(
                visitor_id=f"stranger-{i}", events=[], cart={}, purchases={}, now=time.time(), country=c
            )
            for i, c in enumerate(["uk", "de", "fr", "nl"] * 25)
        ),
    ]
    same = overlap = 0.0
    for c in probes:
        a = [r.item_id for r in rec.recommend(c, 10, f).products]
        b = [r.item_id for r in exhaustive.recommend(c, 10, f).products]
        same += a == b
        overlap += len(set(a) & set(b)) / max(len(b), 1)
    out["identical"], out["overlap"], out["probes"] = same / len(probes), overlap / len(probes), len(probes)
    # the cluster probe alone: how many of a visitor's 10 best items by factor score it finds
    assert rec.candidates is not None
    sc, clusters = rec.scorer, rec.candidates.clusters
    vectors = np.hstack([sc.item_repr, sc.item_bias[:, None]])
    hits = 0.0
    for u in sc.factors.user_emb[rng.choice(len(sc.factors.user_emb), 300, replace=False)]:
        q = np.append(u, np.float32(1.0)).astype(np.float32)
        best = np.argpartition(-(vectors @ q), 10)[:10]
        hits += np.isin(best, clusters.probe(q, rec.candidate_settings.probe_items)[0]).mean()
    out["probe_recall"] = hits / 300
    return out


EXPERIMENT = "bench-blend"


def start_experiment(base: str, visitors: list[str], timeout: float = 120.0) -> float:
    """Create and start an experiment (control vs the stage-agnostic blend, every visitor, placement
    home); returns the seconds from the start to the first of 40 consecutive answers on new connections
    (so from both workers, each with its stage-agnostic front built) that carry it."""
    headers = {"X-API-Key": API_KEY}
    doc = {
        "placements": ["home"],
        "variants": [{"name": "aware", "control": True}, {"name": "agnostic", "blend": "stage_agnostic"}],
    }
    r = httpx.put(f"{base}/v1/experiments/{EXPERIMENT}", json=doc, headers=headers, timeout=timeout)
    if r.status_code != 200:
        sys.exit(f"experiment: HTTP {r.status_code}: {r.text[:300]}")
    t0 = time.perf_counter()
    httpx.post(f"{base}/v1/experiments/{EXPERIMENT}/start", headers=headers, timeout=30).raise_for_status()
    agree, i, since = 0, 0, t0
    while agree < 40:
        if time.perf_counter() - t0 > timeout:
            sys.exit(f"experiment not served by every worker after {timeout:.0f} s")
        v = visitors[i % len(visitors)]
        i += 1
        asked = time.perf_counter()
        with httpx.Client(base_url=base, headers=headers, timeout=timeout) as c:
            out = c.get(f"/v1/visitors/{v}/recommendations", params={"k": 10}).json()
        if out.get("experiment") != EXPERIMENT:
            agree = 0
        else:
            since = asked if agree == 0 else since
            agree += 1
    return since - t0


def versus(res: dict[str, float], key: str, name: str, base: str = "") -> list[tuple[str, str, str, bool]]:
    """The summary rows comparing the run ``key`` with the run ``base`` (the plain one unless told): p50
    within +10 %, req/s within -10 %."""
    p50, rps = res[key + "p50"], res[key + "rps"]
    p50_0, rps_0 = res[base + "p50"], res[base + "rps"]
    return [
        (f"{name}: p50 vs without (ms)", f"{p50:.2f}/{p50_0:.2f}", "<= +10 %", p50 <= 1.1 * p50_0),
        (f"{name}: req/s vs without", f"{rps:,.0f}/{rps_0:,.0f}", ">= -10 %", rps >= 0.9 * rps_0),
    ]


def _label(key: str) -> str:
    return {"": "", "live_": " (live)", "log_": " (lists logged)", "exp_": " (experiment, lists logged)"}.get(
        key, f" ({key})"
    )


class Side(NamedTuple):
    """One side of an alternated comparison: a server, the placement asked, and whether its answers carry
    an experiment."""

    base: str
    placement: str
    experiment: bool


def alternated(sides: tuple[Side, Side], visitors: list[str], n: int, warmup: int) -> tuple[list[float], ...]:
    """Milliseconds per GET recommendations on each side, alternated request by request (the order swapped
    every request) for the same visitors, one keep-alive connection per server: a machine whose load
    drifts weighs on both alike. Returns one list per side."""
    headers = {"X-API-Key": API_KEY}
    clients = {s.base: httpx.Client(base_url=s.base, headers=headers, timeout=10.0) for s in sides}
    out: tuple[list[float], ...] = ([], [])
    try:
        for i in range(warmup + n):
            v = visitors[i % len(visitors)]
            for j in (0, 1) if i % 2 else (1, 0):
                side = sides[j]
                t0 = time.perf_counter()
                r = clients[side.base].get(
                    f"/v1/visitors/{v}/recommendations", params={"k": 10, "placement": side.placement}
                )
                dt = time.perf_counter() - t0
                if r.status_code != 200 or ("experiment" in r.json()) != side.experiment:
                    sys.exit(f"recommendations at {side.placement}: HTTP {r.status_code}: {r.text[:300]}")
                if i >= warmup:
                    out[j].append(dt * 1000)
    finally:
        for c in clients.values():
            c.close()
    return out


def stop_experiment(base: str) -> None:
    headers = {"X-API-Key": API_KEY}
    httpx.post(f"{base}/v1/experiments/{EXPERIMENT}/stop", headers=headers, timeout=30).raise_for_status()


def under_load(
    base: str, warm: list[str], args: argparse.Namespace, root: Path, res: dict[str, float], key: str
) -> tuple[str, str]:
    """Recommend latency at concurrency 1 and saturation; figures into ``res`` under ``key`` + p50/p99/rps.
    Returns (latency client, saturation client)."""
    lat = sequential(base, warm, args.requests, warmup=200)
    res[key + "p50"], res[key + "p99"] = pct(lat, 50), pct(lat, 99)
    latency_client = "httpx client, one connection"
    print(
        f"recommend{_label(key)} (k=10, concurrency 1, httpx client, {len(lat)} requests after "
        f"200 warm-up): p50 {pct(lat, 50):.2f} ms, p90 {pct(lat, 90):.2f} ms, p99 {pct(lat, 99):.2f} ms, "
        f"max {max(lat):.2f} ms",
        flush=True,
    )
    wrk = None if args.no_wrk else shutil.which("wrk")
    if wrk:
        # the figure of record: wrk's C client adds far less than httpx's Python one
        w = sequential_wrk(wrk, base, warm, args.duration, root)
        res[key + "p50"], res[key + "p99"] = w["50"], w["99"]
        latency_client = "wrk -t1 -c1"
        print(
            f"recommend{_label(key)} (k=10, concurrency 1, wrk -t1 -c1, {w['n']:,.0f} requests "
            f"in {args.duration} s): p50 {w['50']:.2f} ms, p90 {w['90']:.2f} ms, p99 {w['99']:.2f} ms",
            flush=True,
        )
        rps, how = saturate_wrk(wrk, base, warm, args.connections, args.duration, root)
    else:
        rps, how = asyncio.run(saturate_httpx(base, warm, args.connections, args.duration))
    res[key + "rps"] = rps
    print(
        f"saturation{_label(key)}: {rps:,.0f} req/s ({how}; generator shares the cores)",
        flush=True,
    )
    return latency_client, how


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--visitors", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--warm-visitors", type=int, default=2000)
    ap.add_argument("--events-per-visitor", type=int, default=50)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--ingest-concurrency", type=int, default=4)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--naive-calls", type=int, default=300)
    ap.add_argument("--report", type=Path, default=BENCH_JSON, help="JSON file the figures are written to")
    ap.add_argument("--no-live", action="store_true", help="skip the run with 10,000 live items and 20 rules")
    ap.add_argument(
        "--no-experiment", action="store_true", help="skip the run with an experiment on every request"
    )
    ap.add_argument("--no-wrk", action="store_true", help="use the httpx load generator even if wrk exists")
    ap.add_argument(
        "--workdir", type=Path, help="keep the simulation and model here and reuse them on the next run"
    )
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-service-") as d:
        root = Path(d)
        work = args.workdir or root
        sim = work / "sim"
        t0 = time.perf_counter()
        if not (sim / "events.csv").exists():
            write_simulation(SimulationConfig(visitors=args.visitors, items=args.items, seed=args.seed), sim)
        t1 = time.perf_counter()
        log = load_events(sim / "events.csv", catalog=sim / "catalog.csv")
        t2 = time.perf_counter()
        cfg = config_for(None, threads=args.threads, seed=args.seed)
        cfg = msgspec.structs.replace(cfg, factors=msgspec.structs.replace(cfg.factors, epochs=args.epochs))
        published = work / "models" / "latest"
        if not published.exists():
            published = train_and_publish(log, work / "models", cfg)
        t3 = time.perf_counter()
        print(
            f"model: {log.n_events:,} events, {log.n_visitors:,} visitors, {log.n_items:,} items; "
            f"simulate {t1 - t0:.1f} s, load {t2 - t1:.1f} s, train+publish {t3 - t2:.1f} s "
            f"(epochs={cfg.factors.epochs} + warm_epochs={cfg.factors.warm_epochs}, "
            f"no_components={cfg.factors.no_components}, threads={args.threads}"
            f"{'; reused from ' + str(work) if args.workdir and t3 - t2 < 1 else ''})",
            flush=True,
        )

        product_items = [c for c in log.catalog if c.kind is ItemKind.PRODUCT]
        products = [c.item_id for c in product_items]
        rng = np.random.default_rng(args.seed)
        warm = [log.visitor_ids[i] for i in rng.choice(log.n_visitors, args.warm_visitors, replace=False)]
        events = make_events(warm, products, args.events_per_visitor, args.seed)
        bodies = batches(events, args.batch, args.seed)
        n_events = sum(len(v) for v in events.values())
        n_items = log.n_items
        del log

        prefix = f"bench-{os.getpid()}-{secrets.token_hex(4)}"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server_log = root / "server.log"
        # the plain server logs no served lists; the second one, on the same data, logs every list (and
        # runs the experiment): their difference is what attribution and experiments cost
        os.environ["JOURNEYREC_LOG_SERVED_LISTS"] = "false"
        proc = start_server(work / "models", port, prefix, server_log)
        res: dict[str, float] = {}
        plain: subprocess.Popen[bytes] | None = None
        latency_client, saturation_client = "httpx client, one connection", ""
        try:
            ready = wait_ready(base, proc, server_log)
            res["ready"] = ready
            print(
                f"server: {WORKERS} workers on {base}, ready in {ready:.1f} s, redis prefix {prefix}, "
                "served lists not logged",
                flush=True,
            )

            secs, accepted = asyncio.run(ingest(base, bodies, args.ingest_concurrency))
            res["ingest"] = n_events / secs
            print(
                f"ingest: {n_events:,} events ({accepted:,} accepted) for {len(warm):,} visitors in "
                f"{len(bodies)} batches of {args.batch}, {args.ingest_concurrency} in flight: {secs:.2f} s "
                f"= {res['ingest']:,.0f} events/s (stage transitions counted)",
                flush=True,
            )

            used, n_keys = memory_of(prefix)
            res["bytes_per_visitor"] = used / len(warm)
            print(
                f"redis memory after ingest: {used / 1e6:,.1f} MB in {n_keys:,} keys = "
                f"{res['bytes_per_visitor']:,.0f} bytes per visitor ({args.events_per_visitor} events each: "
                f"{res['bytes_per_visitor'] / args.events_per_visitor:,.0f} bytes per event, journey records "
                "and rollups included)",
                flush=True,
            )
            latency_client, saturation_client = under_load(base, warm, args, root, res, "")
            if not (args.no_experiment and args.no_live):
                # the plain server stays up (idle) for the paired comparison below
                plain, plain_base = proc, base
                os.environ["JOURNEYREC_LOG_SERVED_LISTS"] = "true"
                port = free_port()
                base = f"http://127.0.0.1:{port}"
                proc = start_server(work / "models", port, prefix, root / "server-logged.log")
                wait_ready(base, proc, root / "server-logged.log")
                print(f"a second server on the same data, logging every served list: {base}", flush=True)
                under_load(base, warm, args, root, res, "log_")
            if not args.no_experiment:
                # the same server and visitors with an experiment running on every recommendation
                res["exp_ready"] = start_experiment(base, warm)
                print(
                    "experiment: control vs stage-agnostic blend on placement home, 100 % traffic; every "
                    f"worker served it from {res['exp_ready']:.2f} s after the start",
                    flush=True,
                )
                under_load(base, warm, args, root, res, "exp_")
                # the experiment (placement home) and not (placement other, the same work otherwise)
                sides = (Side(base, "home", True), Side(base, "other", False))
                on, off = alternated(sides, warm, args.requests, warmup=200)
                res["pair_on_p50"], res["pair_off_p50"] = pct(on, 50), pct(off, 50)
                print(
                    f"recommend alternating with and without the experiment ({len(on)} pairs, one "
                    "connection, lists logged in both): "
                    f"p50 {pct(on, 50):.2f} ms with, {pct(off, 50):.2f} ms without; p99 {pct(on, 99):.2f} / "
                    f"{pct(off, 99):.2f} ms",
                    flush=True,
                )
                # the plain server (no lists logged, no experiment) and the logging one with the experiment
                sides = (Side(plain_base, "other", False), Side(base, "home", True))
                a, b = alternated(sides, warm, args.requests, warmup=200)
                res["paired_plain_p50"], res["paired_exp_p50"] = pct(a, 50), pct(b, 50)
                print(
                    "recommend alternating between the plain server (no lists logged, no experiment) and "
                    f"the logging server with the experiment ({len(a)} pairs, one connection each): p50 "
                    f"{pct(b, 50):.2f} ms with both, {pct(a, 50):.2f} ms with neither; "
                    f"p99 {pct(b, 99):.2f} / {pct(a, 99):.2f} ms",
                    flush=True,
                )
                stop_experiment(base)
            if not args.no_live:
                # the same server and visitors with 10,000 live items and 20 rules
                live = bench_live.install(base, {"X-API-Key": API_KEY}, product_items, args.seed)
                res.update(live)
                print(
                    f"live catalog: {live['live_items']:,.0f} items written in {live['live_write_s']:.1f} s "
                    f"(5,000 new, 5,000 patched) and 20 rules; every worker served both "
                    f"{live['live_applied_s']:.2f} s after the last write",
                    flush=True,
                )
                under_load(base, warm, args, root, res, "live_")
                res["patch_visible"] = bench_live.patch_visible(base, {"X-API-Key": API_KEY}, products[0])
                print(
                    f"PATCH in_stock=false served by every worker {res['patch_visible']:.2f} s after it "
                    f"answered (from then on {bench_live.AGREE} consecutive answers on new connections "
                    "showed it)",
                    flush=True,
                )
        finally:
            stop_server(proc)
            if plain is not None:
                stop_server(plain)
            removed = clean_prefix(prefix)
            print(f"server stopped; deleted {removed:,} Redis keys under {prefix}:*", flush=True)

        ctxs = [context(v, events[v]) for v in warm]
        res.update(in_process(published, ctxs, args.naive_calls))
        print(
            f"in-process, {args.naive_calls} calls each: scoring step (factor scores + top 10) "
            f"{res['score_vec']:.2f} ms precomputed vs {res['score_naive']:.2f} ms LightFM.predict; "
            f"whole recommend call {res['call_vec']:.2f} ms vs {res['call_naive']:.2f} ms with predict "
            f"({res['call_exhaustive']:.2f} ms scoring every item without predict)",
            flush=True,
        )
        print(
            f"candidate pre-selection vs scoring every item, {res['probes']:,} contexts: top 10 identical "
            f"{res['identical']:.1%}, mean overlap {res['overlap']:.1%}; the cluster probe finds "
            f"{res['probe_recall']:.1%} of a visitor's 10 best items by factor score (300 visitors)",
            flush=True,
        )

    rows = [
        ("ingest events/s", f"{res['ingest']:,.0f}", ">= 20,000", res["ingest"] >= 20_000),
        ("recommend p50 (ms, conc 1)", f"{res['p50']:.2f}", "<= 2", res["p50"] <= 2),
        ("recommend p99 (ms, conc 1)", f"{res['p99']:.2f}", "<= 5", res["p99"] <= 5),
        ("saturation req/s", f"{res['rps']:,.0f}", ">= 1,200", res["rps"] >= 1200),
    ]
    if "log_p50" in res:
        rows += versus(res, "log_", "lists logged")
    if "exp_p50" in res:
        rows += versus(res, "exp_", "experiment + lists logged")
        on, off = res["pair_on_p50"], res["pair_off_p50"]
        rows.append(("experiment: p50 alternating (ms)", f"{on:.2f}/{off:.2f}", "<= +10 %", on <= 1.1 * off))
        both, neither = res["paired_exp_p50"], res["paired_plain_p50"]
        rows.append(
            (
                "both vs neither, alternating (ms)",
                f"{both:.2f}/{neither:.2f}",
                "<= +10 %",
                both <= 1.1 * neither,
            )
        )
    if "live_p50" in res:
        rows += [
            *versus(res, "live_", "live", base="log_"),
            ("PATCH on every worker (s)", f"{res['patch_visible']:.2f}", "<= 1", res["patch_visible"] <= 1),
        ]
    rows += [
        (
            "scoring step speed-up vs predict",
            f"{res['score_naive'] / res['score_vec']:.1f}x",
            ">= 4x",
            res["score_naive"] / res["score_vec"] >= 4,
        ),
        ("whole call speed-up vs predict", f"{res['call_naive'] / res['call_vec']:.1f}x", "-", None),
    ]
    print(f"\n{'figure':30s} {'value':>10s}  {'target':>9s}  met")
    for name, val, target, ok in rows:
        print(f"{name:30s} {val:>10s}  {target:>9s}  {'' if ok is None else ('yes' if ok else 'NO')}")
    load = os.getloadavg()[0]
    print(f"load average at end: {load:.2f} (other processes may share the {os.cpu_count()} cores)")
    figures = ServiceFigures(
        items=n_items,
        workers=WORKERS,
        ready_s=res["ready"],
        ingest_events_per_s=res["ingest"],
        p50_ms=res["p50"],
        p99_ms=res["p99"],
        latency_client=latency_client,
        saturation_rps=res["rps"],
        saturation_client=saturation_client,
        score_ms=res["score_vec"],
        score_predict_ms=res["score_naive"],
        call_ms=res["call_vec"],
        call_exhaustive_ms=res["call_exhaustive"],
        call_predict_ms=res["call_naive"],
        identical=res["identical"],
        probes=int(res["probes"]),
        probe_recall=res["probe_recall"],
        live_items=int(res.get("live_items", 0)),
        live_p50_ms=res.get("live_p50"),
        live_p99_ms=res.get("live_p99"),
        live_saturation_rps=res.get("live_rps"),
        patch_visible_s=res.get("patch_visible"),
        logged_p50_ms=res.get("log_p50"),
        logged_saturation_rps=res.get("log_rps"),
        experiment_p50_ms=res.get("exp_p50"),
        experiment_saturation_rps=res.get("exp_rps"),
        paired_plain_p50_ms=res.get("paired_plain_p50"),
        paired_both_p50_ms=res.get("paired_exp_p50"),
        bytes_per_visitor=res["bytes_per_visitor"],
        events_per_visitor=args.events_per_visitor,
    )
    record(figures, args.report)


if __name__ == "__main__":
    main()
