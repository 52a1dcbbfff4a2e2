"""``journeyrec export-catalog``: the trained catalog merged with the live catalog, as the catalog CSV the
training loader reads (``training.loaders.load_catalog`` reads it back here).

Needs the test Redis (the ``redis_url`` fixture, ``tests/conftest.py``). Each test uses its own key prefix
and cleans up.
"""

from __future__ import annotations

import csv
import socket
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from journeyrec.cli import main
from models.domain import CatalogItem, ItemKind, Stage
from models.overlay import LiveItem
from models.recommender import Recommender
from service.export_catalog import export_catalog
from service.settings import Settings, load_settings
from service.store.redis_catalog import RedisCatalog
from tests.conftest import REDIS_URL
from tests.storefront import product_id
from training.loaders import load_catalog

T0 = 1_735_689_600.0
KETTLE, TENT = product_id("Kettle"), product_id("Tent")


@pytest.fixture
async def prefix(redis_url: str) -> AsyncIterator[str]:
    raw = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    p = f"jrtest-{uuid.uuid4().hex[:12]}"
    try:
        yield p
    finally:
        keys = [k async for k in raw.scan_iter(match=f"{p}:*", count=1000)]
        if keys:
            await raw.delete(*keys)
        await raw.aclose()


def settings_for(models_dir: Path, prefix: str, url: str = REDIS_URL) -> Settings:
    return load_settings(
        {"models_dir": str(models_dir), "redis_url": url, "redis_prefix": prefix}, environ={}
    )


@pytest.mark.redis
async def test_the_export_reads_back_as_the_merged_catalog(
    models_dir: Path, recommender: Recommender, prefix: str, tmp_path: Path
) -> None:
    trained = {c.item_id: c for c in recommender.bundle.catalog}
    new = CatalogItem(
        item_id="p-kitchen-new",
        title="Kettle 3, glass",  # a comma: quoted in the CSV
        category="kitchen",
        price=49.99,
        tags=("glass", "1.7 l"),
        stages=(Stage.CONSIDERATION, Stage.DECISION),
        repeatable=True,
    )
    sold_out = LiveItem(
        item=CatalogItem(
            **{
                **{f: getattr(trained[KETTLE], f) for f in CatalogItem.__struct_fields__},
                "in_stock": False,
                "price": 35.0,
            }
        ),
        updated_at=T0 + 1,
        expires_at=T0 + 86_400,
    )
    store = RedisCatalog.from_url(REDIS_URL, prefix=prefix, socket_timeout=5)
    try:
        await store.put(
            [
                sold_out,
                LiveItem(item=new, updated_at=T0),
                LiveItem(item=trained[TENT], updated_at=T0, retired=True),
                LiveItem(
                    item=CatalogItem(item_id="c-new", kind=ItemKind.CONTENT), updated_at=T0, hidden=True
                ),
            ]
        )
    finally:
        await store.close()
    out = tmp_path / "catalog.csv"
    summary = await export_catalog(settings_for(models_dir, prefix), out)
    assert (summary.items, summary.new, summary.changed, summary.hidden, summary.retired) == (
        len(trained) + 2, 2, 2, 1, 1,
    )  # fmt: skip
    assert summary.trained == len(trained) - 2
    assert summary.version == 4
    items = {c.item_id: c for c in load_catalog(out)}
    assert list(items)[: len(trained)] == list(trained)  # the model's order, then the new items
    assert items["p-kitchen-new"] == new
    assert items[KETTLE] == sold_out.item
    assert items[TENT] == trained[TENT]
    assert all(items[i] == c for i, c in trained.items() if i not in (KETTLE, TENT))
    with out.open(newline="") as f:
        rows = {r["item_id"]: r for r in csv.DictReader(f)}
    assert (rows[TENT]["retired"], rows["c-new"]["hidden"], rows[KETTLE]["retired"]) == (
        "true",
        "true",
        "false",
    )
    assert rows[KETTLE]["expires_at"] == "2025-01-02T00:00:00Z"
    assert rows[product_id("Teapot")]["updated_at"] == ""  # nothing live: the model's row as it is


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_command_says_what_is_wrong_in_one_line(
    models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "c.csv")
    cases = [
        (["export-catalog", "--models", str(models_dir), "--out", out], "--redis-url"),
        (["export-catalog", "--redis-url", "redis://127.0.0.1:1/0", "--out", out], "--models"),
        (
            ["export-catalog", "--models", str(models_dir), "--out", out,
             "--redis-url", f"redis://127.0.0.1:{_free_port()}/0"],
            "cannot read the live catalog from redis://127.0.0.1:",
        ),
        (
            ["export-catalog", "--models", str(tmp_path), "--redis-url", "redis://x:1/0", "--out", out],
            str(tmp_path),
        ),
    ]  # fmt: skip
    for argv, needle in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert needle in err, err
        assert err.count("\n") == 1, err
    assert not Path(out).exists()
