"""``journeyrec retrain`` against the test Redis on a tiny simulated shop (``training.simulate``: 300
visitors, 150 items, 30 days), ingested through the service's store: a first run publishes, a run with
nothing new stops early, a worse candidate is refused, the lease admits one trainer, a run that fails while
training publishes nothing and leaves the cursor. Each test uses its own key prefix and cleans up.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import redis.asyncio as aioredis

import journeyrec.retrain as rt
from journeyrec.cli import main
from models import artifact
from models.dataset import CHANNELS
from models.domain import EVENT_TYPES, Event
from models.errors import InvalidInputError
from models.overlay import LiveItem
from service.export import export_events
from service.settings import Settings, load_settings
from service.store.factory import redis_store
from service.store.redis_catalog import RedisCatalog
from tests.service.api_fixtures import delete_prefix, sync_client
from tests.service.redis_fixtures import REDIS_KINDS, url_of
from training.loaders import load_events
from training.pipeline import config_for, train_and_publish
from training.simulate import Simulation, SimulationConfig, simulate
from training.stage_model import StageAwareRanker, StageModelConfig

DAY = 86_400.0


@pytest.fixture(scope="module")
def shop() -> Simulation:
    return simulate(SimulationConfig(visitors=300, items=150, days=30, seed=3, warmup_days=10))


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    p = f"jrtest-{uuid.uuid4().hex[:12]}"
    yield p
    raw = redis.Redis.from_url(redis_url, socket_timeout=5)
    keys = list(raw.scan_iter(match=f"*{p}*", count=1000))
    if keys:
        for k in keys:
            raw.delete(k)
    raw.close()


@pytest.fixture(params=REDIS_KINDS)
def store_url(request: pytest.FixtureRequest) -> str:
    """The test Redis's URL, or the test Redis Cluster's."""
    return url_of(request, request.param)


@pytest.fixture
def store_prefix(store_url: str) -> Iterator[str]:
    p = f"jrtest-{uuid.uuid4().hex[:12]}"
    yield p
    delete_prefix(store_url, p)


def settings_for(url: str, prefix: str, models: Path) -> Settings:
    return load_settings({"redis_url": url, "redis_prefix": prefix, "models_dir": str(models)}, environ={})


def events_of(sim: Simulation, mask: np.ndarray) -> list[Event]:
    return [
        Event(
            visitor_id=sim.visitor_ids[sim.visitor[i]],
            item_id=sim.catalog[sim.item[i]].item_id,
            event=EVENT_TYPES[sim.event[i]],
            timestamp=float(sim.ts[i]),
            event_id=f"e{i}",
            session_id=f"s{sim.session[i]}",
            channel=CHANNELS[sim.channel[i]],
        )
        for i in np.flatnonzero(mask)
    ]


async def _ingest(settings: Settings, events: list[Event], sim: Simulation | None = None) -> None:
    store = redis_store(settings)
    try:
        for lo in range(0, len(events), 2000):
            await store.append(events[lo : lo + 2000])
    finally:
        await store.close()
    if sim is not None:  # the live catalog the shop keeps in the service
        assert settings.redis_url
        cat = RedisCatalog.from_url(settings.redis_url, prefix=settings.redis_prefix, socket_timeout=5)
        try:
            await cat.put([LiveItem(item=c, updated_at=float(sim.ts[0])) for c in sim.catalog])
        finally:
            await cat.close()


def ingest(settings: Settings, events: list[Event], sim: Simulation | None = None) -> None:
    asyncio.run(_ingest(settings, events, sim))


def cursor(url: str, prefix: str) -> bytes | None:
    raw = sync_client(url, timeout=5)
    try:
        value = raw.get(rt.cursor_key(prefix))
        return value if isinstance(value, bytes) or value is None else None
    finally:
        raw.close()


class ShuffledIds(StageAwareRanker):
    """The real candidate with its item ids shuffled: it ranks as trained, then each recommended item
    index is replaced by a fixed random permutation of the catalog's indices (the worse candidate)."""

    def recommend(self, visitors: np.ndarray, now: float, k: int, exclude_seen: bool) -> np.ndarray:
        top = super().recommend(visitors, now, k, exclude_seen)
        assert self.train is not None
        perm = np.random.default_rng(7).permutation(self.train.n_items).astype(np.int32)
        return np.where(top >= 0, perm[np.maximum(top, 0)], -1)


def run_cli(settings: Settings, models: Path, report: Path, *extra: str) -> int:
    assert settings.redis_url
    return main(
        [
            "retrain",
            "--redis-url",
            settings.redis_url,
            "--redis-prefix",
            settings.redis_prefix,
            "--models",
            str(models),
            "--epochs",
            "3",
            "--resamples",
            "200",
            "--report",
            str(report),
            *extra,
        ]
    )


def test_publish_then_nothing_new_then_refuse_a_worse_candidate(
    shop: Simulation,
    store_url: str,
    store_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    models = tmp_path / "models"
    s = settings_for(store_url, store_prefix, models)
    end = float(shop.ts.max())
    first = shop.ts < end - 3 * DAY
    ingest(s, events_of(shop, first), shop)
    report = tmp_path / "report.json"

    # first run: no live model, so the candidate is evaluated alone and published
    assert run_cli(s, models, report) == 0
    r1 = json.loads(report.read_text())
    err = capsys.readouterr().err
    assert r1["status"] == "published"
    assert r1["live"] is None
    assert r1["difference"] is None
    assert "no live model" in r1["reason"]
    assert 0.0 < r1["candidate"]["ndcg"] <= 1.0
    lo, hi = r1["candidate"]["ci95"]
    assert lo <= r1["candidate"]["ndcg"] <= hi
    v1 = artifact.latest_name(models)
    assert v1 == r1["published_version"]
    assert cursor(store_url, store_prefix) == r1["cursor_after"].encode()
    assert "retrain: published" in err
    assert "candidate NDCG@10" in err

    # nothing new: stops early, nothing published, cursor unchanged
    assert run_cli(s, models, report) == 0
    r2 = json.loads(report.read_text())
    assert r2["status"] == "nothing_new"
    assert artifact.list_versions(models) == [v1]
    assert cursor(store_url, store_prefix) == r1["cursor_after"].encode()

    # new days arrive; the candidate is made worse by shuffling its item ids: refused, latest unchanged
    ingest(s, events_of(shop, ~first))

    def worse(cfg: StageModelConfig, say: Any) -> ShuffledIds:
        r = ShuffledIds(cfg, say)
        r.name = "candidate"
        return r

    monkeypatch.setattr(rt, "candidate_ranker", worse)
    assert run_cli(s, models, report) == 0
    r3 = json.loads(report.read_text())
    err = capsys.readouterr().err
    print(err)
    assert r3["status"] == "kept", r3
    assert r3["live_version"] == v1
    assert r3["difference"]["value"] < -r3["margin"]
    assert r3["candidate"]["ndcg"] < r3["live"]["ndcg"]
    assert artifact.latest_name(models) == v1
    assert artifact.list_versions(models) == [v1]
    assert r3["cursor_after"] != r1["cursor_after"]
    assert cursor(store_url, store_prefix) == r3["cursor_after"].encode()  # the decision was made
    assert "the live model stays" in err
    assert "live NDCG@10" in err


@pytest.mark.redis
def test_a_better_candidate_replaces_a_damaged_live_model(
    shop: Simulation,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    models = tmp_path / "models"
    s = settings_for(redis_url, prefix, models)
    end = float(shop.ts.max())
    first = shop.ts < end - 3 * DAY
    ingest(s, events_of(shop, first), shop)
    # the live model: fitted on the first days with every event's item replaced by a fixed random other
    # item of the catalog (item ids shuffled), published as the real pipeline publishes
    exported = tmp_path / "first.jsonl"
    asyncio.run(export_events(s, exported))
    log = load_events(exported)
    perm = np.random.default_rng(11).permutation(log.n_items).astype(log.item.dtype)
    damaged = replace(log, item=perm[log.item])
    live = train_and_publish(damaged, models, config_for(None, epochs=None)).name
    capsys.readouterr()

    ingest(s, events_of(shop, ~first))
    report = tmp_path / "report.json"
    assert run_cli(s, models, report) == 0
    r = json.loads(report.read_text())
    print(capsys.readouterr().err)
    assert r["status"] == "published", r
    assert r["live_version"] == live
    assert r["difference"]["value"] > 0
    assert r["difference"]["ci95"][0] > 0
    assert r["candidate"]["ndcg"] > r["live"]["ndcg"]
    assert artifact.latest_name(models) == r["published_version"] != live
    assert sorted(artifact.list_versions(models)) == sorted([live, r["published_version"]])


def test_lease_refuses_a_second_run_and_a_failed_run_leaves_no_trace(
    shop: Simulation,
    store_url: str,
    store_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    models = tmp_path / "models"
    s = settings_for(store_url, store_prefix, models)
    ingest(s, events_of(shop, np.ones(len(shop.ts), bool)), shop)
    raw = sync_client(store_url, timeout=5)
    try:
        # another trainer holds the lease: exit 2, one line naming it, nothing done
        raw.set(rt.lease_key(store_prefix), "other-host:4242:abc", px=60_000)
        assert run_cli(s, models, tmp_path / "r.json") == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        assert "other-host:4242:abc" in err, err
        assert not models.exists()
        assert raw.get(rt.cursor_key(store_prefix)) is None
        raw.delete(rt.lease_key(store_prefix))

        # killed mid-training (an exception raised inside the fit): no version, no cursor, lease released
        def boom(self: StageAwareRanker, train: Any) -> None:
            raise RuntimeError("killed while training")

        monkeypatch.setattr(StageAwareRanker, "fit", boom)
        with pytest.raises(RuntimeError, match="killed while training"):
            asyncio.run(rt.retrain_once(s, rt.RetrainOptions(epochs=3, resamples=100)))
        assert artifact.list_versions(models) == []
        assert not (models / artifact.LATEST).exists()
        assert raw.get(rt.cursor_key(store_prefix)) is None
        assert raw.get(rt.lease_key(store_prefix)) is None
    finally:
        raw.close()


@pytest.mark.redis
def test_a_second_run_while_one_trains_exits_2_naming_the_holder(
    shop: Simulation,
    redis_url: str,
    prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    models = tmp_path / "models"
    s = settings_for(redis_url, prefix, models)
    ingest(s, events_of(shop, np.ones(len(shop.ts), bool)), shop)
    training, go = threading.Event(), threading.Event()
    fit = StageAwareRanker.fit

    def held_fit(self: StageAwareRanker, train: Any) -> None:
        training.set()
        assert go.wait(120)  # holds the first run inside its fit until the second has tried
        fit(self, train)

    monkeypatch.setattr(StageAwareRanker, "fit", held_fit)
    reports: list[rt.RetrainReport] = []
    first = threading.Thread(
        target=lambda: reports.append(
            asyncio.run(rt.retrain_once(s, rt.RetrainOptions(epochs=3, resamples=100)))
        )
    )
    first.start()
    try:
        assert training.wait(120)
        assert run_cli(s, models, tmp_path / "second.json") == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0, err
        assert f"{socket.gethostname()}:{os.getpid()}:" in err, err  # the first run's holder
        assert not (tmp_path / "second.json").exists()
    finally:
        go.set()
        first.join(300)
    assert [r.status for r in reports] == ["published"]
    assert artifact.list_versions(models) == [reports[0].published_version]


@pytest.mark.redis
def test_lease_is_renewed_and_released_only_by_its_holder(redis_url: str, prefix: str) -> None:
    async def scenario() -> None:
        client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
        key = rt.lease_key(prefix)
        try:
            a, b = rt.Lease(client, key), rt.Lease(client, key)
            await a.acquire()
            with pytest.raises(rt.LeaseHeldError, match=a.token):
                await b.acquire()
            await client.pexpire(key, 5_000)
            assert await a.renew()
            assert await client.pttl(key) > 5_000  # extended to LEASE_MS
            await b.release()  # not its token: the lease stays
            assert await client.get(key) == a.token.encode()
            await client.set(key, "someone-else")  # the lease lapsed and was taken
            assert not await a.renew()
            assert a.lost
            await a.release()
            assert await client.get(key) == b"someone-else"
        finally:
            await client.aclose()

    asyncio.run(scenario())


def test_every_takes_durations() -> None:
    assert rt.parse_every("24h") == 86_400
    assert rt.parse_every("30m") == 1_800
    assert rt.parse_every("1d") == 86_400
    with pytest.raises(InvalidInputError, match="--every 5x"):
        rt.parse_every("5x")
    with pytest.raises(InvalidInputError):
        rt.parse_every("0h")


def test_listing_the_commands_does_not_set_up_the_service_metrics() -> None:
    """``journeyrec serve`` sets prometheus_client up for its workers; the retrain command (which imports
    the service's stores) must not import it first just by being registered."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom journeyrec.cli import _register\n_register()\n"
        "assert 'prometheus_client' not in sys.modules, 'prometheus_client imported'\n"
        "assert 'journeyrec.retrain' not in sys.modules, 'journeyrec.retrain imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
