"""Benchmark: what the operator console costs the service, and how fast its pages load (figures to read).

Usage: python -m scripts.bench_console --workdir /work/bench-svc [--analytics-visitors 50000]
                                       [--events-per-visitor 4] [--duration 10] [--rounds 2]
                                       [--report reports/console-bench.json]

One run: the bench model of ``scripts.bench_service`` (100,000 items; simulated and trained in
``--workdir`` when absent, as that script does); ``journeyrec serve`` (2 workers, Redis db 14, a unique key
prefix); journey analytics fed for ``--analytics-visitors`` visitors (``--events-per-visitor`` events each
over the last 7 days, ``bench_service.make_events``, ingested in batches with analytics on, as the
service runs by default); a draft experiment so that the Experiments page lists one. Then:

1. recommend p50 at concurrency 1 (``wrk -t1 -c1``, ``--duration`` s, rotating over 2,000 of those
   visitors) without and with a headless Chromium (Debian's ``/usr/bin/chromium`` driven by Playwright)
   keeping the console open with the operator's key and moving to the next page every ``--cycle``
   seconds (Journey, a visitor, Experiments, Catalog & rules, Models, again: each page at least once in a
   run of 10 s); alternated ``--rounds``
   times (without, with, without, with), so a drift of the machine's load weighs on both;
2. each page's load time: from the start of a navigation to ``/console#<page>`` (a fresh document, the
   key already in the tab) to the page's data rendered (the console sets ``aria-busy="false"`` on its
   ``<main>`` once the page's API answers are on screen), read in the browser as ``performance.now()``
   when that holds; ``--loads`` times per page, median and max.

It prints the figures and writes them to ``--report`` (JSON). Chromium, wrk, the two workers and Redis
share the machine's cores: the "with" figure includes the browser's own rendering on them.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
import msgspec

from models.domain import ItemKind
from scripts.bench_report import Machine, this_machine
from scripts.bench_service import (
    API_KEY,
    WORKERS,
    batches,
    clean_prefix,
    free_port,
    ingest,
    make_events,
    sequential_wrk,
    start_server,
    stop_server,
    wait_ready,
)
from training.loaders import load_catalog, load_events
from training.pipeline import config_for, train_and_publish
from training.simulate import SimulationConfig, write_simulation

CHROMIUM = Path("/usr/bin/chromium")
REPORT = Path("reports") / "console-bench.json"
PAGES = ("journey", "visitor", "experiments", "catalog", "models")
EXPERIMENT = "console-bench"
#: what a rendered page must not show: an API call that failed (the console shows it as an alert)
FAILED = "main [role=alert]"


class PageLoad(msgspec.Struct, frozen=True):
    page: str
    median_ms: float
    max_ms: float
    samples_ms: list[float]


class Round(msgspec.Struct, frozen=True):
    console: bool
    p50_ms: float
    p90_ms: float
    p99_ms: float
    requests: int
    console_api_requests: int = 0
    console_pages_shown: int = 0


class ConsoleBench(msgspec.Struct, frozen=True):
    """The figures of one run (latencies in milliseconds)."""

    date: str
    machine: Machine
    items: int
    workers: int
    analytics_visitors: int
    analytics_events: int
    ingest_s: float
    latency_client: str
    cycle_s: float
    rounds: list[Round]
    p50_without_ms: float
    p50_with_ms: float
    p50_change: float
    within_10_percent: bool
    page_loads: list[PageLoad]
    slowest_page_ms: float
    under_1_s: bool
    browser_errors: list[str]


def ensure_model(work: Path, args: argparse.Namespace) -> list[str]:
    """The bench model in ``work/models`` (simulated and trained as ``bench_service`` does when absent);
    returns the catalog's product ids."""
    sim = work / "sim"
    if not (work / "models" / "latest").exists():
        if not (sim / "events.csv").exists():
            write_simulation(SimulationConfig(visitors=args.visitors, items=args.items, seed=args.seed), sim)
        log = load_events(sim / "events.csv", catalog=sim / "catalog.csv")
        cfg = config_for(None, threads=args.threads, seed=args.seed)
        cfg = msgspec.structs.replace(cfg, factors=msgspec.structs.replace(cfg.factors, epochs=args.epochs))
        train_and_publish(log, work / "models", cfg)
        print(f"model trained and published in {work / 'models'}", flush=True)
    return [c.item_id for c in load_catalog(sim / "catalog.csv") if c.kind is ItemKind.PRODUCT]


def create_experiment(base: str) -> None:
    """A draft experiment (not started: it changes no answer) for the Experiments page to list."""
    doc = {
        "placements": ["email"],
        "variants": [{"name": "aware", "control": True}, {"name": "agnostic", "blend": "stage_agnostic"}],
    }
    r = httpx.put(f"{base}/v1/experiments/{EXPERIMENT}", json=doc, headers={"X-API-Key": API_KEY}, timeout=30)
    r.raise_for_status()


def _browser(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])


def _tab(browser: Any, base: str, errors: list[str], first: str = "journey") -> Any:
    """A tab on the console's page ``first`` with the operator's key entered (kept in the tab's
    sessionStorage)."""
    page = browser.new_context(viewport={"width": 1366, "height": 768}).new_page()
    page.set_default_timeout(30_000)
    page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.goto(f"{base}/console#{first}")
    page.get_by_label("API key", exact=True).fill(API_KEY)
    page.get_by_label("API key", exact=True).press("Enter")
    page.wait_for_selector(f'main[aria-busy="false"] .page[data-page="{first}"]')
    return page


def _hash(name: str, visitor: str) -> str:
    return f"visitor/{visitor}" if name == "visitor" else name


class ConsoleOpen(threading.Thread):
    """A headless Chromium keeping the console open: the next page every ``cycle`` seconds, until stopped.
    Its own Playwright in this thread (the sync API belongs to the thread that started it)."""

    def __init__(self, base: str, visitor: str, cycle: float) -> None:
        super().__init__(daemon=True)
        self.base, self.visitor, self.cycle = base, visitor, cycle
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.errors: list[str] = []
        self.api_requests = 0
        self.pages_shown = 0
        self.shown: set[str] = set()
        self.failure: Exception | None = None

    def run(self) -> None:
        from playwright.sync_api import sync_playwright

        try:
            with sync_playwright() as p:
                browser = _browser(p)
                try:
                    # opened on the last page: the cycle starts with the first one (Journey, the heaviest)
                    page = _tab(browser, self.base, self.errors, first=PAGES[-1])
                    page.on("request", lambda r: self._count(r.url))
                    self.ready.set()
                    i = 0
                    while not self.stop.is_set():
                        name = PAGES[i % len(PAGES)]
                        i += 1
                        page.evaluate("h => { location.hash = h; }", _hash(name, self.visitor))
                        page.wait_for_selector(f'main[aria-busy="false"] .page[data-page="{name}"]')
                        self.pages_shown += 1
                        self.shown.add(name)
                        self.stop.wait(self.cycle)
                finally:
                    browser.close()
        except Exception as e:  # noqa: BLE001 (reported by the main thread)
            self.failure = e
            self.ready.set()

    def _count(self, url: str) -> None:
        if "/v1/" in url:
            self.api_requests += 1


def p50_rounds(
    base: str, visitors: list[str], args: argparse.Namespace, work: Path, errors: list[str]
) -> list[Round]:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is missing (apt-get install wrk): the figures of record are wrk's")
    rounds: list[Round] = []
    for r in range(args.rounds):
        for with_console in (False, True):
            opened = None
            if with_console:
                opened = ConsoleOpen(base, visitors[0], args.cycle)
                opened.start()
                opened.ready.wait(120)
                if opened.failure is not None:
                    raise RuntimeError(f"the console did not open: {opened.failure}")
            try:
                w = sequential_wrk(wrk, base, visitors, args.duration, work)
            finally:
                if opened is not None:
                    opened.stop.set()
                    opened.join(60)
            if opened is not None and opened.failure is not None:
                raise RuntimeError(f"the console failed while open: {opened.failure}")
            errors += opened.errors if opened is not None else []
            one = Round(
                console=with_console,
                p50_ms=w["50"],
                p90_ms=w["90"],
                p99_ms=w["99"],
                requests=int(w["n"]),
                console_api_requests=opened.api_requests if opened is not None else 0,
                console_pages_shown=opened.pages_shown if opened is not None else 0,
            )
            rounds.append(one)
            if opened is not None and opened.shown != set(PAGES):
                raise RuntimeError(f"the console showed only {sorted(opened.shown)}: use a shorter --cycle")
            extra = (
                f"; console showed {one.console_pages_shown} pages (all five), "
                f"{one.console_api_requests} API calls"
                if with_console
                else ""
            )
            print(
                f"round {r + 1} {'with' if with_console else 'without'} the console: recommend p50 "
                f"{one.p50_ms:.2f} ms, p90 {one.p90_ms:.2f} ms, p99 {one.p99_ms:.2f} ms "
                f"({one.requests:,} requests in {args.duration} s){extra}",
                flush=True,
            )
    return rounds


def page_loads(base: str, visitor: str, loads: int, errors: list[str]) -> list[PageLoad]:
    """Each page's time from the start of a navigation to its data rendered, ``loads`` times."""
    from playwright.sync_api import sync_playwright

    out: list[PageLoad] = []
    with sync_playwright() as p:
        browser = _browser(p)
        try:
            page = _tab(browser, base, errors)
            for name in PAGES:
                samples: list[float] = []
                for _ in range(loads + 1):  # the first load warms the server's and the browser's caches
                    page.goto("about:blank")
                    page.goto(f"{base}/console#{_hash(name, visitor)}", wait_until="commit")
                    done = page.wait_for_function(
                        "name => document.querySelector("
                        '`main[aria-busy="false"] .page[data-page="${name}"]`) && performance.now()',
                        arg=name,
                        polling="raf",
                    )
                    if page.locator(FAILED).count():
                        raise RuntimeError(f"page {name}: {page.locator(FAILED).first.inner_text()}")
                    samples.append(float(done.json_value()))
                samples = samples[1:]
                load = PageLoad(
                    name, statistics.median(samples), max(samples), [round(s, 1) for s in samples]
                )
                out.append(load)
                print(
                    f"page {name}: navigation to data rendered median {load.median_ms:.0f} ms, max "
                    f"{load.max_ms:.0f} ms ({loads} loads)",
                    flush=True,
                )
        finally:
            browser.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", type=Path, help="the bench model's directory (built there when absent)")
    ap.add_argument("--visitors", type=int, default=20_000, help="simulated visitors (when building)")
    ap.add_argument("--items", type=int, default=100_000, help="simulated items (when building)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--analytics-visitors", type=int, default=50_000)
    ap.add_argument("--events-per-visitor", type=int, default=4)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--ingest-concurrency", type=int, default=4)
    ap.add_argument("--duration", type=int, default=10, help="seconds of each wrk run")
    ap.add_argument("--rounds", type=int, default=2, help="pairs of runs without and with the console")
    ap.add_argument("--cycle", type=float, default=2.0, help="seconds the console stays on a page")
    ap.add_argument("--loads", type=int, default=5, help="timed loads of each page")
    ap.add_argument("--report", type=Path, default=REPORT)
    args = ap.parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing (apt-get install chromium)")
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-console-") as d:
        root = Path(d)
        work = args.workdir or root
        products = ensure_model(work, args)
        n_items = int(
            msgspec.json.decode((work / "models" / "latest" / "manifest.json").read_bytes())["n_items"]
        )
        visitors = [f"console-bench-{i}" for i in range(args.analytics_visitors)]
        events = make_events(visitors, products, args.events_per_visitor, args.seed)
        bodies = batches(events, args.batch, args.seed)
        n_events = sum(len(v) for v in events.values())
        del events

        prefix = f"bench-console-{os.getpid()}-{secrets.token_hex(4)}"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server_log = root / "server.log"
        proc = start_server(work / "models", port, prefix, server_log)
        errors: list[str] = []
        try:
            ready = wait_ready(base, proc, server_log)
            print(
                f"server: {WORKERS} workers on {base}, ready in {ready:.1f} s, redis prefix {prefix}",
                flush=True,
            )
            secs, accepted = asyncio.run(ingest(base, bodies, args.ingest_concurrency))
            print(
                f"analytics: {n_events:,} events ({accepted:,} accepted) for {len(visitors):,} visitors in "
                f"{secs:.1f} s, journey analytics on",
                flush=True,
            )
            create_experiment(base)
            rotate = visitors[: min(2000, len(visitors))]
            rounds = p50_rounds(base, rotate, args, root, errors)
            loads = page_loads(base, visitors[0], args.loads, errors)
        finally:
            stop_server(proc)
            removed = clean_prefix(prefix)
            print(f"server stopped; deleted {removed:,} Redis keys under {prefix}:*", flush=True)

    without = statistics.median(r.p50_ms for r in rounds if not r.console)
    with_console = statistics.median(r.p50_ms for r in rounds if r.console)
    slowest = max(p.max_ms for p in loads)
    result = ConsoleBench(
        date=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        machine=this_machine(),
        items=n_items,
        workers=WORKERS,
        analytics_visitors=len(visitors),
        analytics_events=n_events,
        ingest_s=round(secs, 2),
        latency_client=f"wrk -t1 -c1 -d{args.duration}s",
        cycle_s=args.cycle,
        rounds=rounds,
        p50_without_ms=without,
        p50_with_ms=with_console,
        p50_change=with_console / without - 1.0,
        within_10_percent=with_console <= 1.1 * without,
        page_loads=loads,
        slowest_page_ms=slowest,
        under_1_s=slowest < 1000.0,
        browser_errors=errors,
    )
    print(
        f"\nrecommend p50 (median of {args.rounds} runs each): {without:.2f} ms without the console, "
        f"{with_console:.2f} ms with it open ({result.p50_change:+.1%}; target within +10 %: "
        f"{'met' if result.within_10_percent else 'NOT met'})"
    )
    print(
        f"slowest page load {slowest:.0f} ms (target under 1 s: {'met' if result.under_1_s else 'NOT met'}); "
        f"browser console errors: {len(errors)}"
    )
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_bytes(msgspec.json.format(msgspec.json.encode(result)) + b"\n")
    print(f"written to {args.report}; load average at end {os.getloadavg()[0]:.2f}")
    if errors:
        print("browser errors:\n  " + "\n  ".join(errors[:20]))


if __name__ == "__main__":
    main()
