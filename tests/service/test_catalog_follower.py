"""Every worker follows the live catalog: the follower applies a new version once, through the model
holder, off the request path; a store outage keeps the last catalog served; a reload applies the current
catalog before the new model serves.

The model is a stand-in here (it records the overlay it was given): what ``with_overlay`` serves is tested
in ``tests/models``; the app over the real model end to end in ``test_api_catalog_e2e_redis.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, cast

import pytest

from models.domain import CatalogItem
from models.errors import StoreUnavailableError
from models.overlay import CatalogOverlay, LiveItem
from models.recommender import Recommender
from service.catalog_follower import CatalogFollower
from service.model_holder import ModelHolder
from service.store.memory_catalog import MemoryCatalog

T0 = 1_735_689_600.0


class StandIn:
    """A model that knows one item, ``trained``; ``with_overlay`` returns a front that records the overlay
    and counts, on the model as loaded (``base``), how often one was built."""

    def __init__(
        self,
        version: str,
        directory: Path,
        overlay: CatalogOverlay | None = None,
        base: StandIn | None = None,
    ) -> None:
        self.version = version
        self.overlay = overlay
        self.base = base if base is not None else self
        self.bundle = type("Bundle", (), {"directory": directory})()
        self.merchandising = None
        self.fail = False
        self.applied = 0

    def has_item(self, item_id: str) -> bool:
        return item_id == "trained"

    def install_rules(self, ruleset: object) -> None:
        assert ruleset is None

    def with_overlay(self, overlay: CatalogOverlay, exploration: object = None) -> StandIn:
        if self.base.fail:
            raise ValueError("cannot apply")
        self.base.applied += 1
        return StandIn(self.version, self.bundle.directory, overlay, self.base)


def _holder(model: StandIn) -> ModelHolder:
    return ModelHolder.with_model(cast(Recommender, model))


def _served(holder: ModelHolder) -> Any:
    return holder.current


def live(item_id: str, t: float) -> LiveItem:
    return LiveItem(item=CatalogItem(item_id=item_id), updated_at=t)


class CountingCatalog(MemoryCatalog):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0
        self.down = False

    async def version(self) -> int:
        if self.down:
            raise StoreUnavailableError("redis: connection refused")
        return await super().version()

    async def overlay(self) -> CatalogOverlay:
        self.reads += 1
        return await super().overlay()


async def test_a_new_version_is_applied_once(tmp_path: Path) -> None:
    model = StandIn("v1", tmp_path)
    holder = _holder(model)
    catalog = CountingCatalog()
    follower = CatalogFollower(catalog, holder)
    assert await follower.step() is False  # version 0: nothing told yet
    assert (catalog.reads, _served(holder)) == (0, model)
    assert not holder.knows("new")
    await catalog.put([live("new", T0)])
    assert await follower.step() is True
    served = _served(holder)
    assert served.overlay.version == 1
    assert set(served.overlay.items) == {"new"}
    assert holder.base is model
    assert holder.knows("new")
    assert holder.knows("trained")
    assert not holder.knows("other")
    assert await follower.step() is False  # the version did not move: the overlay is not read again
    assert (catalog.reads, model.applied) == (1, 1)
    await catalog.put([live("new", T0 - 1)])  # ignored_older: the version stays
    assert await follower.step() is False
    await catalog.put([live("new", T0 + 1), live("two", T0)])
    assert await follower.step() is True
    assert _served(holder).overlay.version == 3
    assert model.applied == 2
    assert _served(holder).base is model  # built from the model as loaded, never on an overlaid one


async def test_an_unreachable_store_keeps_the_last_catalog(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    holder = _holder(StandIn("v1", tmp_path))
    catalog = CountingCatalog()
    follower = CatalogFollower(catalog, holder)
    await catalog.put([live("a", T0)])
    await follower.step()
    served = _served(holder)
    catalog.down = True
    with caplog.at_level(logging.WARNING, logger="journeyrec.service"):
        for _ in range(3):
            assert await follower.step() is False
        assert _served(holder) is served
        catalog.down = False
        await catalog.put([live("b", T0)])
        assert await follower.step() is True
    messages = [r.getMessage() for r in caplog.records]
    assert sum("cannot read the live catalog" in m for m in messages) == 1, messages
    assert sum("answers again" in m for m in messages) == 1, messages


async def test_a_catalog_that_cannot_be_applied_is_not_tried_again(tmp_path: Path) -> None:
    model = StandIn("v1", tmp_path)
    holder = _holder(model)
    catalog = CountingCatalog()
    follower = CatalogFollower(catalog, holder)
    await catalog.put([live("a", T0)])
    model.fail = True
    with pytest.raises(ValueError, match="cannot apply"):
        await follower.step()
    assert _served(holder) is model
    assert holder.overlay_failed == 1
    assert await follower.step() is False  # the same version is not tried again
    assert catalog.reads == 1
    model.fail = False
    await catalog.put([live("b", T0)])
    assert await follower.step() is True
    assert _served(holder).overlay.version == 2


async def test_a_reload_applies_the_current_catalog_first(models_dir: Path, tmp_path: Path) -> None:
    loaded: list[StandIn] = []

    def loader(directory: Path) -> Recommender:
        loaded.append(StandIn(f"v{len(loaded) + 1}", directory))
        return cast(Recommender, loaded[-1])

    holder = ModelHolder(models_dir, loader=loader)
    catalog = MemoryCatalog()
    await catalog.put([live("a", T0)])
    # the follower may apply a catalog before any model is loaded: it is kept for the model to come
    assert await CatalogFollower(catalog, holder).step() is True
    assert holder.current is None
    await holder.reload()
    served = _served(holder)
    assert served.overlay is not None
    assert served.overlay.version == 1
    assert holder.base is loaded[0]
