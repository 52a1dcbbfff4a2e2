"""``journeyrec retrain``: retrain from the service's event stream and publish only what is not worse.

It glues ``service`` (the event stream, the live catalog, the lease and cursor keys in Redis) to
``training`` (loading, fitting, evaluating); neither imports the other, so the glue lives here.

One run:
1. takes the lease (``{prefix}:retrain:lease``: SET NX PX with a random token, renewed while the run
   lasts, released by a compare-and-delete script); a second run while one holds it raises ``LeaseHeldError``
   naming the holder;
2. reads the cursor (``{prefix}:retrain:cursor``, the stream id of the last entry a finished run read) and
   stops early when the stream holds nothing after it;
3. exports the whole retained stream (``service.export.export_events``: the stream keeps ``visitor_ttl`` of
   events) and the catalog (``service.export_catalog``: the live model's catalog merged with the live catalog;
   the live catalog alone when no model is published) and loads them with ``training.loaders``;
4. time split: the candidate (``training.stage_model``) is fitted on everything before the last
   ``holdout_days`` days (or before the end of the live model's data, when that is later: a model is never
   judged on events it was fitted on); candidate and live model (``MODELS_DIR/latest``, as
   ``training.published``) are scored on those days by ``training.evaluate.evaluate``, NDCG@10 with
   paired bootstrap intervals (``models.bootstrap``) and the candidate-minus-live difference;
5. decides: publish when there is no live model, or when the candidate's NDCG@10 is not below the live
   model's by more than ``margin``; publishing refits the same configuration on every event and goes through
   ``models.artifact.publish`` (temporary directory, atomic rename, atomic ``latest``);
6. only then advances the cursor and writes the report.

Killed at any point before 6, a run leaves no version half-published and the cursor where it was; its lease
expires after ``LEASE_MS`` at most.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import os
import re
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import msgspec

from models import artifact
from models.errors import ArtifactError, InvalidInputError, JourneyrecError
from service.cli import OneLineError, _settings
from service.export import export_events
from service.export_catalog import catalog_rows, export_catalog
from service.settings import ENV, Settings
from service.store.factory import redis_store
from service.store.redis_catalog import RedisCatalog
from service.store.redis_store import AnyRedis, unavailable
from training.evaluate import EvalResult, evaluate, split_at
from training.loaders import load_events
from training.pipeline import config_for, split_stages, train_and_publish
from training.published import PublishedRanker
from training.stage_model import StageAwareRanker, StageModelConfig

LEASE_MS = 60_000  # the lease lapses this long after its holder stops renewing it (killed)
RENEW_S = LEASE_MS / 3000  # renewed every third of it
K = 10
STORE = "retrain store"  # how store failures name it
DAY = 86_400.0

# delete / extend the lease only while it still holds this run's token
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
_RENEW = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then"
    " return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end return 0"
)


class LeaseHeldError(JourneyrecError):
    """Another retrain holds the lease."""


class LeaseLostError(JourneyrecError):
    """The lease lapsed or was taken while this run trained: it must not publish."""


class Figure(msgspec.Struct, frozen=True):
    """NDCG@10 of one model over the held-out visitors, with its 95% paired bootstrap interval."""

    ndcg: float
    ci95: tuple[float, float]
    users: int


class Delta(msgspec.Struct, frozen=True):
    """Candidate minus live NDCG@10 over the same visitors, with its 95% paired bootstrap interval."""

    value: float
    ci95: tuple[float, float]


class RetrainReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one run decided and on which figures (``--report`` writes it as JSON).

    status: ``published`` | ``kept`` (the live model stays) | ``nothing_new`` (no stream entry after the
    cursor); reason: the decision in one sentence; cursor_before / cursor_after: stream ids (cursor_after is
    what the cursor was advanced to; None when it was not); split_at: where the held-out window starts, the
    last ``holdout_days`` (``window_days`` long), or later when the live model was fitted on events past
    that (``live_trained_until``): both models are judged on events neither was fitted on.
    """

    status: str
    reason: str
    cursor_before: str
    cursor_after: str | None = None
    events: int = 0
    train_events: int = 0
    test_events: int = 0
    holdout_days: float = 0.0
    split_at: str = ""
    margin: float = 0.0
    k: int = K
    candidate: Figure | None = None
    live: Figure | None = None
    difference: Delta | None = None
    window_days: float = 0.0
    live_version: str | None = None
    live_trained_until: str | None = None
    published_version: str | None = None
    resamples: int = 0


class RetrainOptions(msgspec.Struct, frozen=True, kw_only=True):
    holdout_days: float = 7.0
    margin: float = 0.005
    preset: str | None = None
    epochs: int | None = None
    resamples: int = 1000
    seed: int = 0


def lease_key(prefix: str) -> str:
    return f"{prefix}:retrain:lease"


def cursor_key(prefix: str) -> str:
    return f"{prefix}:retrain:cursor"


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, tz=dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Lease:
    """The one-trainer lease (module docstring); ``lost`` turns true when a renewal finds another token."""

    def __init__(self, client: AnyRedis, key: str) -> None:
        self.client, self.key = client, key
        self.token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        self.lost = False

    async def acquire(self) -> None:
        with unavailable("retrain lease", STORE):
            taken = await self.client.set(self.key, self.token, nx=True, px=LEASE_MS)
            holder = None if taken else await self.client.get(self.key)
        if not taken:
            name = holder.decode() if isinstance(holder, bytes) else "a run that has just ended; retry"
            raise LeaseHeldError(f"another retrain is running (lease {self.key} held by {name})")

    async def renew(self) -> bool:
        """Extend the lease to ``LEASE_MS`` if this run still holds it; False (and ``lost``) if not."""
        with unavailable("retrain lease", STORE):
            held = await self.client.eval(_RENEW, 1, self.key, self.token, str(LEASE_MS))
        if not held:
            self.lost = True
        return not self.lost

    async def renew_forever(self, stop: asyncio.Event) -> None:
        """Renew every ``RENEW_S`` until ``stop`` is set (or the lease is lost). A flag, not a task
        cancellation, ends it: a cancellation that lands inside the Redis client's command can be taken
        by it, and the loop would then renew for ever while the run waits for it to end."""
        try:
            while not stop.is_set() and await self.renew():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), RENEW_S)
        except JourneyrecError:  # Redis unreachable: the lease cannot be vouched for, so no publishing
            self.lost = True

    async def release(self) -> None:
        with unavailable("retrain lease", STORE):
            await self.client.eval(_RELEASE, 1, self.key, self.token)


def _figure(result: EvalResult, name: str) -> Figure:
    o = result.models[name].overall
    lo, hi = (o.ci95 or {}).get("ndcg", (float("nan"), float("nan")))
    return Figure(ndcg=round(o.ndcg, 6), ci95=(lo, hi), users=o.users)


def candidate_ranker(cfg: StageModelConfig, say: Callable[[str], None]) -> Any:
    """The model a run fits on the days before the held-out ones (a ``training`` ``Ranker``)."""
    r = StageAwareRanker(cfg, say)
    r.name = "candidate"
    return r


async def _write_live_catalog(settings: Settings, out: Path) -> bool:
    """The live catalog alone as the catalog CSV (no model published yet); False when it is empty."""
    assert settings.redis_url
    store = RedisCatalog.from_url(
        settings.redis_url, prefix=settings.redis_prefix, socket_timeout=settings.redis_socket_timeout
    )
    try:
        overlay = await store.overlay()
    finally:
        await store.close()
    if not overlay.items:
        return False
    rows, _ = catalog_rows([], overlay)
    with out.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows(rows)
    return True


def _decide(result: EvalResult, live: bool, margin: float) -> tuple[bool, str, Delta | None]:
    cand = _figure(result, "candidate")
    if not live:
        return (
            True,
            f"no live model: published after evaluating the candidate alone (NDCG@{K} {cand.ndcg:.4f})",
            None,
        )
    d = result.differences["live"].overall["ndcg"]
    delta = Delta(value=d.value, ci95=d.ci95)
    figures = f"candidate minus live NDCG@{K} {d.value:+.4f} (95% CI {d.ci95[0]:+.4f}..{d.ci95[1]:+.4f})"
    if d.value >= -margin:
        return True, f"{figures} is not below -{margin:g}: the candidate replaces the live model", delta
    return False, f"{figures} is below -{margin:g}: the candidate is worse, the live model stays", delta


async def retrain_once(
    settings: Settings, opts: RetrainOptions, say: Callable[[str], None] = lambda _m: None
) -> RetrainReport:
    """One run (module docstring). Raises LeaseHeldError, InvalidInputError (missing settings, too little
    data), StoreUnavailableError; on any error the cursor and ``latest`` are as they were."""
    if not settings.redis_url:
        raise InvalidInputError(f"retraining needs a Redis URL (--redis-url / {ENV['redis_url']})")
    models_dir = settings.models_path
    if models_dir is None:
        raise InvalidInputError(f"retraining needs the models directory (--models / {ENV['models_dir']})")
    store = redis_store(settings)
    client = store.client
    lease = Lease(client, lease_key(settings.redis_prefix))
    try:
        await lease.acquire()
        stop = asyncio.Event()
        renewer = asyncio.create_task(lease.renew_forever(stop))
        try:
            return await _run(settings, opts, models_dir, store, lease, say)
        finally:
            stop.set()  # the renewer ends at once, or after the renewal it is sending
            await renewer
            await lease.release()
    finally:
        await store.close()


async def _run(
    settings: Settings,
    opts: RetrainOptions,
    models_dir: Path,
    store: Any,
    lease: Lease,
    say: Callable[[str], None],
) -> RetrainReport:
    ckey = cursor_key(settings.redis_prefix)
    with unavailable("retrain cursor", STORE):
        raw = await store.client.get(ckey)
    before = raw.decode() if isinstance(raw, bytes) else (raw or "0")
    if not await store.read_stream(before, 1):
        return RetrainReport(
            status="nothing_new",
            reason=f"no event in the stream after {before}: nothing to retrain on",
            cursor_before=before,
        )
    try:
        live_bundle = await asyncio.to_thread(artifact.load, models_dir)
    except ArtifactError:
        if artifact.list_versions(models_dir) or (models_dir / artifact.LATEST).exists():
            raise  # a broken live model is an operator's problem, not "no model"
        live_bundle = None
    with tempfile.TemporaryDirectory(prefix="journeyrec-retrain-") as tmp:
        events_path, catalog_path = Path(tmp) / "events.jsonl", Path(tmp) / "catalog.csv"
        say("reading the retained event stream")
        exported = await export_events(settings, events_path)
        if live_bundle is not None:
            say(f"merging the catalog of {live_bundle.manifest.version} with the live catalog")
            await export_catalog(settings, catalog_path)
            catalog: Path | None = catalog_path
        else:
            catalog = catalog_path if await _write_live_catalog(settings, catalog_path) else None
        log = await asyncio.to_thread(load_events, events_path, catalog=catalog)
    say(f"loaded {log.n_events:,} events, {log.n_visitors:,} visitors, {log.n_items:,} items")
    cfg = config_for(opts.preset)
    if opts.epochs is not None:
        cfg = msgspec.structs.replace(cfg, factors=msgspec.structs.replace(cfg.factors, epochs=opts.epochs))
    end = float(log.ts.max()) + 1.0
    at = end - opts.holdout_days * DAY
    live_until = live_bundle.manifest.trained_until if live_bundle is not None else None
    if live_until is not None and live_until > at:
        # the live model learned from part of those days: judged on them it would be judged on its own
        # training data; both models are judged on the days neither has seen
        at = live_until
        say(f"the live model was fitted on events until {_iso(live_until)}: held-out window from there")
    train, test = split_at(log, at)
    if train.n_events == 0 or test.n_events == 0:
        raise InvalidInputError(
            f"no events on both sides of the hold-out start {_iso(at)} (stream {_iso(float(log.ts.min()))}"
            f" .. {_iso(end)}, --holdout-days {opts.holdout_days:g}): nothing to judge the candidate on yet"
        )
    # off the event loop, like every slow step, so that the lease keeps being renewed
    stage_of, stage_at_end = await asyncio.to_thread(split_stages, train, log, at, end, cfg)
    rankers: list[Any] = [candidate_ranker(cfg, say)]
    if live_bundle is not None:
        rankers.append(PublishedRanker(live_bundle, cfg))
    say(
        f"fitting the candidate on {train.n_events:,} events before {_iso(at)};"
        f" scoring {test.n_events:,} after"
    )
    result = await asyncio.to_thread(
        evaluate,
        rankers,
        train,
        test,
        k=K,
        now=at,
        exclude_seen=cfg.exclude_seen,
        positive=cfg.positive,
        dataset=log.source,
        split=f"time split at {_iso(at)}",
        stage_of=stage_of,
        stage_at_end=stage_at_end,
        progress=say,
        resamples=opts.resamples,
        seed=opts.seed,
        reference="candidate",
    )
    publish, reason, delta = _decide(result, live_bundle is not None, opts.margin)
    published = None
    if publish:
        if lease.lost:
            raise LeaseLostError(f"the retrain lease lapsed during the run: not publishing ({reason})")
        say(f"refitting on all {log.n_events:,} events and publishing")
        path = await asyncio.to_thread(train_and_publish, log, models_dir, cfg, say, config_source="retrain")
        published = path.name
    after = exported.last_entry_id
    if after is not None:
        with unavailable("retrain cursor", STORE):
            await store.client.set(ckey, after)
    return RetrainReport(
        status="published" if publish else "kept",
        reason=reason,
        cursor_before=before,
        cursor_after=after,
        events=log.n_events,
        train_events=train.n_events,
        test_events=test.n_events,
        holdout_days=opts.holdout_days,
        split_at=_iso(at),
        margin=opts.margin,
        candidate=_figure(result, "candidate"),
        live=_figure(result, "live") if live_bundle is not None else None,
        difference=delta,
        live_version=live_bundle.manifest.version if live_bundle is not None else None,
        window_days=round((end - at) / DAY, 3),
        live_trained_until=_iso(live_until) if live_until is not None else None,
        published_version=published,
        resamples=opts.resamples,
    )


def summary_lines(r: RetrainReport) -> list[str]:
    """The report as log lines (stderr)."""
    lines = [f"retrain: {r.status}: {r.reason}"]
    for name, f in (("candidate", r.candidate), ("live", r.live)):
        if f is not None:
            lines.append(
                f"retrain: {name} NDCG@{r.k} {f.ndcg:.4f} (95% CI {f.ci95[0]:.4f}..{f.ci95[1]:.4f},"
                f" {f.users:,} held-out visitors)"
            )
    if r.split_at:
        lines.append(
            f"retrain: held out {r.test_events:,} events from {r.split_at} ({r.window_days:g} days);"
            f" candidate fitted on {r.train_events:,} before"
        )
    if r.published_version:
        lines.append(f"retrain: published {r.published_version}")
    if r.cursor_after:
        lines.append(f"retrain: cursor {r.cursor_before} -> {r.cursor_after}")
    return lines


def write_report(report: RetrainReport, path: Path) -> None:
    """``report`` as JSON at ``path``, complete or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        f.write(msgspec.json.format(msgspec.json.encode(report)))
    Path(tmp).replace(path)


def parse_every(text: str) -> float:
    """Seconds in ``24h`` / ``30m`` / ``1d`` / ``90s``."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if not m or float(m.group(1)) <= 0:
        raise InvalidInputError(f"--every {text}: expected a positive duration such as 24h, 30m, 1d")
    return float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": DAY}[m.group(2)]


def run_command(
    redis_url: str | None,
    redis_prefix: str | None,
    models_dir: str | None,
    holdout_days: float,
    margin: float,
    preset: str | None,
    epochs: int | None,
    resamples: int,
    report_path: str | None,
    every: str | None,
) -> None:
    """``journeyrec retrain`` (``journeyrec.retrain_cli``, which imports this module only when it runs)."""
    settings = _settings({"redis_url": redis_url, "redis_prefix": redis_prefix, "models_dir": models_dir})
    opts = RetrainOptions(
        holdout_days=holdout_days, margin=margin, preset=preset, epochs=epochs, resamples=resamples
    )
    try:
        interval = parse_every(every) if every else None
    except JourneyrecError as e:
        raise OneLineError(str(e)) from None

    def say(message: str) -> None:
        click.echo(f"retrain: {_iso(time.time())} {message}", err=True)

    while True:
        try:
            report = asyncio.run(retrain_once(settings, opts, say))
        except JourneyrecError as e:
            if interval is None:
                raise OneLineError(str(e)) from None
            say(f"run failed: {e}")
        else:
            for line in summary_lines(report):
                click.echo(line, err=True)
            if report_path:
                write_report(report, Path(report_path))
        if interval is None:
            return
        say(f"next run in {every}")
        time.sleep(interval)
        sys.stderr.flush()
