"""``POST /v1/models/activate``: roll back to a published version; every worker follows ``latest``.

Two published versions: the session's storefront model (older) and one trained with another seed (newer,
``latest``). Each test works on its own copy of that directory.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient, TestClient

from models.artifact import ARRAYS, LATEST, resolve_latest
from models.recommender import Recommender
from service.app import create_app
from service.model_holder import ModelHolder
from tests.service.api_fixtures import H_ADMIN, H_READ, api_settings, make_app, memory_store
from tests.storefront import train_storefront_model


@pytest.fixture(scope="module")
def two_versions(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A models directory with the session's version and a newer one ``latest`` points at."""
    d = tmp_path_factory.mktemp("two-versions") / "models"
    shutil.copytree(models_dir, d, symlinks=True)
    old = resolve_latest(d).name
    new = train_storefront_model(d, seed=14).name
    assert resolve_latest(d).name == new != old
    return d, old, new


@pytest.fixture
def models(two_versions: tuple[Path, str, str], tmp_path: Path) -> tuple[Path, str, str]:
    src, old, new = two_versions
    d = tmp_path / "models"
    shutil.copytree(src, d, symlinks=True)
    return d, old, new


def test_activate_an_older_version_serves_it_and_repoints_latest(models: tuple[Path, str, str]) -> None:
    d, old, new = models
    # a heartbeat interval no test outlasts: the fleet's version moves only with the beat of an activation
    with TestClient(make_app(d, None, heartbeat_seconds=300)) as c:  # loads `latest` (the newer version)
        assert c.get("/v1/visitors/v/recommendations", headers=H_READ).json()["model_version"] == new
        body = c.get("/v1/models", headers=H_READ).json()
        me = f"{socket.gethostname()}:{os.getpid()}"
        assert body["worker"] == me
        assert [(w["worker"], w["model_version"]) for w in body["workers"]] == [(me, new)]
        assert body["workers_error"] is None
        r = c.post("/v1/models/activate", headers=H_ADMIN, json={"version": old})
        assert r.status_code == 200, r.text
        assert r.json() == {"version": old, "previous": new, "changed": True}
        assert os.readlink(d / LATEST) == old
        assert c.get("/v1/visitors/v/recommendations", headers=H_READ).json()["model_version"] == old
        body = c.get("/v1/models", headers=H_READ).json()
        assert body["latest"] == old
        assert body["live"]["version"] == old
        assert [p["version"] for p in body["published"]] == sorted([old, new])
        assert all(p["created_at"] and p["n_items"] > 0 for p in body["published"])
        assert [(w["worker"], w["model_version"]) for w in body["workers"]] == [(me, old)]
        # forward again; activating the live version changes nothing
        assert c.post("/v1/models/activate", headers=H_ADMIN, json={"version": new}).json()["changed"]
        again = c.post("/v1/models/activate", headers=H_ADMIN, json={"version": new}).json()
        assert again == {"version": new, "previous": new, "changed": False}
        assert os.readlink(d / LATEST) == new
    assert not [p.name for p in d.iterdir() if p.name.startswith(".latest")]  # no temporary link left


async def test_every_worker_follows_an_activation(models: tuple[Path, str, str]) -> None:
    d, old, new = models
    settings = api_settings(models_dir=str(d), model_poll_seconds=0.05)
    # two apps over one directory: the workers of one server (the request reaches only the first)
    first = create_app(settings, store=memory_store(), model_holder=ModelHolder(d))
    second = create_app(settings, store=memory_store(), model_holder=ModelHolder(d))
    async with AsyncTestClient(first) as a, AsyncTestClient(second) as b:
        r = await b.get("/v1/visitors/v/recommendations", headers=H_READ)
        assert r.json()["model_version"] == new
        done = await a.post("/v1/models/activate", headers=H_ADMIN, json={"version": old})
        assert done.status_code == 200
        for _ in range(200):
            r = await b.get("/v1/visitors/v/recommendations", headers=H_READ)
            if r.json()["model_version"] == old:
                break
            await asyncio.sleep(0.05)
        assert r.json()["model_version"] == old


def test_unknown_or_malformed_version_is_refused_by_name(models: tuple[Path, str, str]) -> None:
    d, _old, new = models
    with TestClient(make_app(d, None)) as c:
        r = c.post("/v1/models/activate", headers=H_ADMIN, json={"version": "20990101T000000Z-none"})
        assert r.status_code == 404
        assert "'20990101T000000Z-none'" in r.json()["detail"]
        r = c.post("/v1/models/activate", headers=H_ADMIN, json={"version": "../etc"})
        assert r.status_code == 400
        assert "version" in r.json()["detail"]
        r = c.post("/v1/models/activate", headers=H_ADMIN, json={"version": LATEST})
        assert r.status_code == 404  # the link is not a version
        assert os.readlink(d / LATEST) == new


def test_a_version_failing_verification_is_not_activated(models: tuple[Path, str, str]) -> None:
    d, old, new = models
    bad = d / (old + "-corrupt")
    shutil.copytree(d / old, bad)
    data = bytearray((bad / ARRAYS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (bad / ARRAYS).write_bytes(bytes(data))
    with TestClient(make_app(d, None)) as c:
        r = c.post("/v1/models/activate", headers=H_ADMIN, json={"version": bad.name})
        assert r.status_code == 400
        detail = r.json()["detail"]
        assert repr(bad.name) in detail
        assert "sha256 does not match" in detail
        assert os.readlink(d / LATEST) == new  # nothing moved
        assert c.get("/v1/visitors/v/recommendations", headers=H_READ).json()["model_version"] == new


def test_activate_needs_the_admin_scope(models: tuple[Path, str, str], recommender: Recommender) -> None:
    d, old, new = models
    with TestClient(make_app(d, recommender)) as c:
        r = c.post("/v1/models/activate", headers=H_READ, json={"version": old})
        assert r.status_code == 403
        assert c.post("/v1/models/activate", json={"version": old}).status_code == 401
        assert os.readlink(d / LATEST) == new
