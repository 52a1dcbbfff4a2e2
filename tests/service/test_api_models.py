"""Model versions and hot reload: swap atomically, refuse a corrupted artifact, lose no request."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient, TestClient

from models.artifact import ARRAYS, LATEST, resolve_latest
from models.errors import ArtifactError
from models.recommender import Recommender
from service.app import create_app
from service.heartbeat import Heartbeat
from service.model_holder import ModelHolder, ReloadResult
from service.store.fleet_base import MemoryFleet, WorkerBeat
from tests.artifact_faults import corrupt_inside_npz
from tests.service.api_fixtures import H_ADMIN, H_READ, LogRecords, api_settings, make_app, memory_store
from tests.storefront import train_storefront_model


@pytest.fixture
def own_models(models_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's models directory (these tests move ``latest``)."""
    d = tmp_path / "models"
    shutil.copytree(models_dir, d, symlinks=True)
    return d


def _point_latest(models: Path, version: str) -> None:
    tmp = models / ".latest-test"
    os.symlink(version, tmp)
    os.replace(tmp, models / LATEST)


def _corrupt_copy(models: Path) -> str:
    """A copy of the live version with one byte of its arrays flipped, published as ``latest``."""
    live = resolve_latest(models)
    bad = models / (live.name + "-corrupt")
    shutil.copytree(live, bad)
    data = bytearray((bad / ARRAYS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / ARRAYS).write_bytes(bytes(data))
    _point_latest(models, bad.name)
    return bad.name


def test_models_listing_and_noop_reload(own_models: Path, recommender: Recommender) -> None:
    with TestClient(make_app(own_models, None)) as c:  # loads `latest` on startup
        body = c.get("/v1/models", headers=H_READ).json()
        assert body["live"]["version"] == recommender.version
        assert body["live"]["manifest"]["version"] == recommender.version
        assert body["latest"] == resolve_latest(own_models).name
        assert body["versions"] == [resolve_latest(own_models).name]
        r = c.post("/v1/models/reload", headers=H_ADMIN)
        assert r.status_code == 200
        assert r.json() == {
            "version": recommender.version,
            "previous": recommender.version,
            "changed": False,
        }


def test_corrupted_artifact_is_refused_and_old_model_keeps_serving(
    own_models: Path, recommender: Recommender
) -> None:
    with TestClient(make_app(own_models, recommender), raise_server_exceptions=False) as c:
        _corrupt_copy(own_models)
        r = c.post("/v1/models/reload", headers=H_ADMIN)
        assert r.status_code == 422
        assert "sha256 does not match" in r.json()["detail"]
        assert f"still serving {recommender.version}" in r.json()["detail"]
        r = c.get("/v1/visitors/v/recommendations", headers=H_READ)
        assert r.status_code == 200
        assert r.json()["model_version"] == recommender.version
        assert c.get("/v1/models", headers=H_READ).json()["last_error"]
        assert c.get("/health/ready").status_code == 200


def test_not_ready_until_a_model_is_published(tmp_path: Path, models_dir: Path) -> None:
    empty = tmp_path / "empty-models"
    empty.mkdir()
    with TestClient(make_app(empty, None), raise_server_exceptions=False) as c:
        r = c.get("/health/ready")
        assert r.status_code == 503
        assert "no model loaded" in r.json()["detail"]
        r = c.get("/v1/visitors/v/recommendations", headers=H_READ)
        assert r.status_code == 503
        assert "Retry-After" in r.headers
        assert c.post("/v1/models/reload", headers=H_ADMIN).status_code == 422
        shutil.copytree(models_dir, empty, symlinks=True, dirs_exist_ok=True)
        r = c.post("/v1/models/reload", headers=H_ADMIN)
        assert r.status_code == 200
        assert r.json()["changed"] is True
        assert r.json()["previous"] is None
        assert c.get("/health/ready").status_code == 200


async def test_hot_reload_under_traffic_loses_no_request(own_models: Path, recommender: Recommender) -> None:
    new_dir = train_storefront_model(own_models, seed=11)  # a genuinely new version is now `latest`
    new_version = new_dir.name
    holder = ModelHolder.with_model(recommender, own_models)
    app = create_app(api_settings(models_dir=str(own_models)), store=memory_store(), model_holder=holder)
    async with AsyncTestClient(app) as c:

        async def one(i: int) -> tuple[int, str]:
            r = await c.get(f"/v1/visitors/traffic-{i % 7}/recommendations?k=5", headers=H_READ)
            return r.status_code, r.json()["model_version"]

        async def reloads() -> list[int]:
            codes = []
            for _ in range(3):
                codes.append((await c.post("/v1/models/reload", headers=H_ADMIN)).status_code)
                await asyncio.sleep(0)
            return codes

        results = await asyncio.gather(*(one(i) for i in range(150)), reloads())
        answers = [x for x in results[:-1] if isinstance(x, tuple)]
        assert all(code == 200 for code, _v in answers)
        assert {v for _c, v in answers} <= {recommender.version, new_version}
        assert results[-1] == [200, 200, 200]
        after = await c.get("/v1/visitors/v/recommendations", headers=H_READ)
        assert after.json()["model_version"] == new_version


async def test_concurrent_reloads_are_serialized(own_models: Path, recommender: Recommender) -> None:
    train_storefront_model(own_models, seed=12)
    holder = ModelHolder.with_model(recommender, own_models)
    results = await asyncio.gather(*(holder.reload() for _ in range(4)))
    # exactly one reload swapped; the others found `latest` already live
    assert [r.changed for r in results].count(True) == 1
    assert holder.require().version == results[0].version


async def test_reload_if_changed_follows_latest_and_skips_a_refused_version(
    own_models: Path, recommender: Recommender
) -> None:
    holder = ModelHolder(own_models)
    await holder.reload()
    assert await holder.reload_if_changed() is None  # `latest` is the live version
    bad = _corrupt_copy(own_models)
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        await holder.reload_if_changed()
    assert await holder.reload_if_changed() is None  # the refused version is not tried again
    assert holder.require().version == recommender.version
    new_dir = train_storefront_model(own_models, seed=13)  # `latest` moves on
    result = await holder.reload_if_changed()
    assert result is not None
    assert result.changed
    assert holder.require().version == new_dir.name
    assert bad != new_dir.name


async def test_reload_if_changed_retries_a_refused_version_repaired_in_place(
    own_models: Path, recommender: Recommender
) -> None:
    holder = ModelHolder(own_models)
    await holder.reload()
    bad = own_models / _corrupt_copy(own_models)
    with pytest.raises(ArtifactError, match="sha256 does not match"):
        await holder.reload_if_changed()
    assert await holder.reload_if_changed() is None  # unchanged: not tried again
    # the data scientist copies the good arrays over the corrupted file, under the same version directory
    shutil.copyfile(resolve_latest(own_models).parent / recommender.version / ARRAYS, bad / ARRAYS)
    os.utime(bad / ARRAYS, ns=(time.time_ns(), time.time_ns() + 10**9))  # a coarse clock still sees a change
    result = await holder.reload_if_changed()
    assert result is not None
    assert holder.require().version == recommender.version  # the copy keeps the manifest's version
    assert holder.last_error is None
    assert await holder.reload_if_changed() is None  # now live


async def test_every_app_follows_latest_without_a_reload_request(
    own_models: Path, recommender: Recommender
) -> None:
    # what each worker process does: POST /v1/models/reload reaches only one of them
    holder = ModelHolder.with_model(recommender, own_models)
    settings = api_settings(models_dir=str(own_models), model_poll_seconds=0.05)
    app = create_app(settings, store=memory_store(), model_holder=holder)
    async with AsyncTestClient(app) as c:
        new_dir = train_storefront_model(own_models, seed=14)
        for _ in range(200):
            r = await c.get("/v1/visitors/v/recommendations", headers=H_READ)
            if r.json()["model_version"] == new_dir.name:
                break
            await asyncio.sleep(0.05)
        assert r.json()["model_version"] == new_dir.name
        metrics = (await c.get("/metrics")).text
        assert 'journeyrec_model_reloads_total{outcome="changed"}' in metrics


def _damaged_copy(models: Path) -> str:
    """A copy of the live version damaged inside its npz (its manifest re-hashed), published as ``latest``."""
    live = resolve_latest(models)
    bad = models / (live.name + "-zipdamage")
    shutil.copytree(live, bad)
    corrupt_inside_npz(bad)
    _point_latest(models, bad.name)
    return bad.name


def _refused_count(metrics_text: str) -> float:
    line = 'journeyrec_model_reloads_total{outcome="refused"} '
    return sum(float(x[len(line) :]) for x in metrics_text.splitlines() if x.startswith(line))


def test_manual_reload_of_a_version_damaged_inside_its_npz_is_refused(
    own_models: Path, recommender: Recommender
) -> None:
    with TestClient(make_app(own_models, recommender), raise_server_exceptions=False) as c:
        bad = _damaged_copy(own_models)
        r = c.post("/v1/models/reload", headers=H_ADMIN)
        assert r.status_code == 422, r.text
        assert "BadZipFile: Bad CRC-32" in r.json()["detail"]
        refused = c.get("/v1/models", headers=H_READ).json()["last_refused"]
        assert refused["version"] == bad
        assert "BadZipFile" in refused["reason"]


async def test_the_follower_refuses_a_damaged_version_and_adopts_the_next_good_one(
    own_models: Path, recommender: Recommender, service_log: LogRecords
) -> None:
    holder = ModelHolder.with_model(recommender, own_models)
    settings = api_settings(models_dir=str(own_models), model_poll_seconds=0.02)
    app = create_app(settings, store=memory_store(), model_holder=holder)
    async with AsyncTestClient(app) as c:
        refused_before = _refused_count((await c.get("/metrics")).text)
        bad = _damaged_copy(own_models)
        for _ in range(500):
            if holder.last_refusal is not None:
                break
            await asyncio.sleep(0.02)
        models = (await c.get("/v1/models", headers=H_READ)).json()
        assert models["last_refused"]["version"] == bad
        assert "Bad CRC-32" in models["last_refused"]["reason"]
        assert models["live"]["version"] == recommender.version
        ready = await c.get("/health/ready")
        assert ready.status_code == 200  # the old model serves
        assert f"version {bad} refused" in ready.json()["detail"]
        assert _refused_count((await c.get("/metrics")).text) == refused_before + 1
        assert any(
            r.levelname == "ERROR" and "refused" in r.getMessage() and "Bad CRC-32" in r.getMessage()
            for r in service_log.records
        )
        good = train_storefront_model(own_models, seed=15)  # `latest` moves on to a good version
        for _ in range(500):
            if holder.require().version == good.name:
                break
            await asyncio.sleep(0.02)
        assert holder.require().version == good.name
        ready = await c.get("/health/ready")
        assert ready.status_code == 200
        assert "detail" not in ready.json()  # caught up: nothing refused since the live model loaded
        assert (await c.get("/v1/models", headers=H_READ)).json()["last_refused"]["version"] == bad


async def test_any_loader_failure_is_a_refusal(own_models: Path, recommender: Recommender) -> None:
    def broken(_directory: Path) -> Recommender:
        raise MemoryError("no room for the arrays")

    holder = ModelHolder(own_models, loader=broken)
    with pytest.raises(ArtifactError, match="MemoryError: no room for the arrays"):
        await holder.reload_if_changed()
    assert holder.last_refusal is not None
    assert holder.last_refusal.version == resolve_latest(own_models).name
    assert await holder.reload_if_changed() is None  # refused: not tried again while unchanged


async def test_the_latest_follower_is_restarted_when_it_fails(
    own_models: Path, recommender: Recommender, service_log: LogRecords
) -> None:
    holder = ModelHolder.with_model(recommender, own_models)
    real = holder.reload_if_changed
    failures = [RuntimeError("unexpected bug in a poll")]

    async def flaky() -> ReloadResult | None:
        if failures:
            raise failures.pop()
        return await real()

    holder.reload_if_changed = flaky  # type: ignore[method-assign]
    settings = api_settings(models_dir=str(own_models), model_poll_seconds=0.02)
    app = create_app(settings, store=memory_store(), model_holder=holder)
    async with AsyncTestClient(app):
        good = train_storefront_model(own_models, seed=16)
        for _ in range(500):
            if holder.require().version == good.name:
                break
            await asyncio.sleep(0.02)
        assert holder.require().version == good.name
        assert any("follow-latest failed" in r.getMessage() for r in service_log.records)


async def test_a_worker_started_on_a_refused_latest_joins_the_fleets_version(own_models: Path) -> None:
    """The other workers serve the last good version; ``latest`` is damaged when this one starts: it
    serves the fleet's version, leaves ``latest`` where it is, and still follows it once repaired."""
    good = resolve_latest(own_models).name
    bad = _corrupt_copy(own_models)
    fleet = MemoryFleet(60.0)
    await fleet.beat(WorkerBeat("host:1", good, 0.0, time.time()))
    await fleet.beat(WorkerBeat("host:2", None, 0.0, time.time()))  # one without a model: not a vote
    holder = ModelHolder(own_models)
    with pytest.raises(ArtifactError):
        await holder.reload()
    heartbeat = Heartbeat(fleet, holder)
    assert await heartbeat.join_fleet() == good
    assert holder.current is not None
    assert holder.current.version == good
    assert resolve_latest(own_models).name == bad  # not moved
    assert await heartbeat.join_fleet() is None  # it has a model now
    _point_latest(own_models, good)
    assert (await holder.reload()).version == good


async def test_no_fleet_version_leaves_the_worker_without_a_model(own_models: Path) -> None:
    _corrupt_copy(own_models)
    holder = ModelHolder(own_models)
    with pytest.raises(ArtifactError):
        await holder.reload()
    assert await Heartbeat(MemoryFleet(60.0), holder).join_fleet() is None
    assert holder.current is None
