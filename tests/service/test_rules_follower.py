"""Every worker serves the stored rule set: the follower installs a new version on the live model, a model
the holder loads serves the held rules before it is swapped in, and a store outage keeps the held rules."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from models.errors import StoreUnavailableError
from models.recommender import Recommender
from models.rules import Hide, ItemCondition, Rule, RuleSet
from service.model_holder import ModelHolder
from service.rules_follower import RulesFollower, served_version
from service.store.rules_base import UnreadableRulesError
from service.store.rules_memory import MemoryRulesStore
from tests.service.api_fixtures import LogRecords

HIDE_TEA = Rule(id="no-tea", action=Hide(), condition=ItemCondition(categories=("tea",)))
HIDE_GARDEN = Rule(id="no-garden", action=Hide(), condition=ItemCondition(categories=("garden",)))


@pytest.fixture
def holder(recommender: Recommender, models_dir: Path) -> ModelHolder:
    return ModelHolder.with_model(copy.copy(recommender), models_dir)


class DownStore(MemoryRulesStore):
    down = False

    async def version(self) -> int:
        if self.down:
            raise StoreUnavailableError("redis: connection refused")
        return await super().version()


class UnreadableStore(MemoryRulesStore):
    unreadable = False

    async def current(self) -> RuleSet:
        got = await super().current()
        if self.unreadable:
            raise UnreadableRulesError("the stored rule set does not decode", got.version)
        return got


async def test_a_new_version_is_installed_on_the_live_model(holder: ModelHolder) -> None:
    store = MemoryRulesStore()
    follower = RulesFollower(store, holder)
    await follower.step()
    assert holder.rules == RuleSet(version=0)
    assert holder.current is not None
    assert holder.current.merchandising is None
    await store.put((HIDE_TEA,), "key3")
    await follower.step()
    assert served_version(holder.current) == 1
    assert holder.current.merchandising is not None
    assert holder.current.merchandising.ruleset.rules == (HIDE_TEA,)
    await store.put((), "key3")
    await follower.step()
    assert served_version(holder.current) == 2


async def test_an_older_rule_set_never_replaces_a_newer_one(holder: ModelHolder) -> None:
    follower = RulesFollower(MemoryRulesStore(), holder)
    await follower.serve(RuleSet(version=5, rules=(HIDE_GARDEN,)))
    await follower.serve(RuleSet(version=4, rules=(HIDE_TEA,)))  # a slower read of an older version
    assert holder.rules is not None
    assert holder.rules.version == 5
    assert holder.current is not None
    assert served_version(holder.current) == 5


async def test_a_model_swapped_in_without_the_rules_is_given_them_at_the_next_poll(
    holder: ModelHolder, recommender: Recommender
) -> None:
    store = MemoryRulesStore()
    await store.put((HIDE_TEA,), "key3")
    follower = RulesFollower(store, holder)
    await follower.step()
    holder._current = copy.copy(recommender)  # any other path that swaps the model
    holder._current.merchandising = None
    await follower.step()
    assert served_version(holder.current) == 1  # type: ignore[arg-type]


async def test_a_reload_serves_the_held_rules_before_the_new_model_serves(models_dir: Path) -> None:
    holder = ModelHolder(models_dir)
    holder.rules = RuleSet(version=3, rules=(HIDE_TEA,))
    await holder.reload()
    assert holder.current is not None
    assert served_version(holder.current) == 3


async def test_a_store_outage_keeps_the_held_rules_and_is_logged_once(
    holder: ModelHolder, service_log: LogRecords
) -> None:
    store = DownStore()
    await store.put((HIDE_TEA,), "key3")
    follower = RulesFollower(store, holder)
    await follower.step()
    store.down = True
    for _ in range(3):
        await follower.step()
    assert holder.current is not None
    assert served_version(holder.current) == 1
    down = [r for r in service_log.records if "does not answer" in r.getMessage()]
    assert len(down) == 1
    store.down = False
    await store.put((HIDE_GARDEN,), "key3")
    await follower.step()
    assert served_version(holder.current) == 2
    assert any("answers again" in r.getMessage() for r in service_log.records)


async def test_an_unreadable_stored_set_keeps_the_held_rules_and_is_logged_once(
    holder: ModelHolder, service_log: LogRecords
) -> None:
    store = UnreadableStore()
    await store.put((HIDE_TEA,), "key3")
    follower = RulesFollower(store, holder)
    await follower.step()
    store.unreadable = True
    await store.put((HIDE_GARDEN,), "key3")  # version 2, which this worker cannot read
    for _ in range(3):
        await follower.step()
    assert holder.current is not None
    assert served_version(holder.current) == 1
    logged = [r for r in service_log.records if "cannot be served" in r.getMessage()]
    assert len(logged) == 1
    assert "version 2" in logged[0].getMessage()
