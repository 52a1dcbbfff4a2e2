"""Assignment hashes the visitor's person (``VisitorState.person``): a visitor keeps their variant after
logging in, asked as the anonymous id or as the user id, on every placement; a store that is down hashes
the request's visitor id; similar items and complements read the visitor only to log the list for
attribution or when an experiment runs."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import msgspec
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from models.experiments import assign
from models.recommender import Recommender
from service.app import create_app
from service.model_holder import ModelHolder
from service.store.base import VisitorState
from service.store.experiments_memory import MemoryExperimentStore
from tests.service import test_api_experiments as api
from tests.service.api_fixtures import (
    H_ADMIN,
    H_INGEST,
    H_READ,
    SwitchableStore,
    api_settings,
    event,
    memory_store,
)
from tests.service.test_feedback_serve import failures
from tests.storefront import product_id

# the fixtures of the experiments API tests
client, published, exp_store, feedback = api.client, api.published, api.exp_store, api.feedback
ARMS = [("control", 1.0), ("popular", 1.0)]
PLACEMENTS = ["home", "retargeting", "similar", "complements"]
KETTLE = product_id("Kettle")


def _variant(p: str) -> str | None:
    return assign("s1", "ab", p, ARMS, 1.0, 0.0)


def _variants(client: TestClient[Litestar], who: str) -> list[str]:
    """The variant of each placement's answer to ``who``."""
    answers = [
        client.get(f"/v1/visitors/{who}/recommendations", headers=H_READ),
        client.get(f"/v1/visitors/{who}/retargeting", headers=H_READ),
        client.get(f"/v1/items/{KETTLE}/similar?visitor_id={who}", headers=H_READ),
        client.get(f"/v1/items/complements?item_id={KETTLE}&visitor_id={who}", headers=H_READ),
    ]
    out = []
    for r in answers:
        assert r.status_code == 200, r.text
        out.append(r.json()["variant"])
    export = client.post("/v1/retargeting/export", json={"visitor_ids": [who]}, headers=H_READ)
    out.append(msgspec.json.decode(export.content.splitlines()[0])["variant"])
    return out


def _start(client: TestClient[Litestar]) -> None:
    assert client.put("/v1/experiments/ab", json=api.body(placements=PLACEMENTS), headers=H_ADMIN).is_success
    assert client.post("/v1/experiments/ab/start", headers=H_ADMIN).is_success


def _link(client: TestClient[Litestar], anonymous_id: str, user_id: str) -> None:
    r = client.post(
        "/v1/identities", json={"anonymous_id": anonymous_id, "user_id": user_id}, headers=H_INGEST
    )
    assert r.status_code == 200, r.text


def _ingest(client: TestClient[Litestar], visitor: str) -> None:
    r = client.post("/v1/events", json={"events": [event(visitor, KETTLE, "product_view")]}, headers=H_INGEST)
    assert r.status_code == 200, r.text


def test_a_visitor_keeps_the_variant_after_logging_in(client: TestClient[Litestar]) -> None:
    _start(client)
    people = api._people(200)
    anon = next(p for p in people if _variant(p) == "popular")
    user = next(f"user-{p}" for p in people if _variant(f"user-{p}") == "control")
    assert _variants(client, anon) == ["popular"] * 5
    _ingest(client, anon)
    _link(client, anon, user)
    # the user id hashes to control, but the visitor is the anonymous visitor logged in
    assert _variants(client, anon) == ["popular"] * 5
    assert _variants(client, user) == ["popular"] * 5
    _link(client, anon, user)  # idempotent
    assert _variants(client, user) == ["popular"] * 5


def test_a_returning_user_takes_the_users_variant(client: TestClient[Litestar]) -> None:
    """Logging in on a new device: the user's variant, for the anonymous session's id too."""
    _start(client)
    people = api._people(200)
    anon = next(p for p in people if _variant(p) == "popular")
    user = next(f"user-{p}" for p in people if _variant(f"user-{p}") == "control")
    _ingest(client, user)  # the user has a history
    _ingest(client, anon)
    _link(client, anon, user)
    assert _variants(client, anon) == ["control"] * 5
    assert _variants(client, user) == ["control"] * 5


class CountingStore(SwitchableStore):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.reads = 0

    async def visitor(self, visitor_id: str, campaign: str | None = None) -> VisitorState:
        self.reads += 1
        return await super().visitor(visitor_id, campaign)


@pytest.mark.parametrize("logged", [True, False], ids=["lists-logged", "lists-not-logged"])
def test_item_lists_read_the_visitor_only_to_log_the_list_or_assign_a_variant(
    published: Path, recommender: Recommender, logged: bool
) -> None:
    visitors = CountingStore(memory_store())
    app = create_app(
        api_settings(models_dir=str(published), log_served_lists=logged),
        store=visitors,
        model_holder=ModelHolder.with_model(copy.copy(recommender), published),
        experiments=MemoryExperimentStore(),
    )
    people = api._people(200)
    anon = next(p for p in people if _variant(p) == "popular")
    user = next(f"user-{p}" for p in people if _variant(f"user-{p}") == "control")
    similar, complements = f"/v1/items/{KETTLE}/similar", f"/v1/items/complements?item_id={KETTLE}"
    asyncio.run(visitors.inner.link(anon, user))  # the anonymous visitor logged in as ``user``
    with TestClient(app) as c:

        def reads_of(url: str) -> tuple[int, str | None]:
            before = visitors.reads
            r = c.get(url, headers=H_READ)
            assert r.status_code == 200, r.text
            return visitors.reads - before, r.json().get("variant")

        assert reads_of(similar) == (0, None)  # no visitor: nothing to read
        assert reads_of(f"{similar}?visitor_id={user}") == (int(logged), None)
        body = api.body(placements=["similar"])
        assert c.put("/v1/experiments/ab", json=body, headers=H_ADMIN).is_success
        assert c.post("/v1/experiments/ab/start", headers=H_ADMIN).is_success
        # the experiment hashes the person: the anonymous visitor who logged in as ``user``
        assert reads_of(f"{similar}?visitor_id={user}") == (1, "popular")
        assert reads_of(f"{complements}&visitor_id={user}") == (int(logged), None)  # no experiment there
        # a store that is down: the list is served, its variant hashed from the request's visitor id, and
        # a list that should have been logged is counted as not logged
        visitors.down = True
        failed = failures("served")
        assert reads_of(f"{similar}?visitor_id={user}") == (1, "control")
        assert failures("served") == failed + int(logged)
