"""The live catalog end to end: ``journeyrec serve`` with two worker processes against a real Redis.

A write reaches one worker; both must serve it: each test waits (bounded, generous deadline) until both
workers report the write's catalog version in ``GET /v1/models`` (workers told apart by when each loaded
its model), then checks the answers of several requests on new connections (so both workers answer).
Needs the test Redis (the ``redis_url`` fixture, ``tests/conftest.py``); the run uses its own key prefix
and deletes its keys afterwards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REDIS_URL
from tests.service.api_fixtures import H_CATALOG, H_INGEST, H_READ, delete_prefix
from tests.service.test_api_e2e_redis import Server
from tests.storefront import product_id

pytestmark = pytest.mark.redis
KETTLE, TEAPOT, TOASTER = product_id("Kettle"), product_id("Teapot"), product_id("Toaster")
REQUESTS = 8  # requests on new connections per check: both workers answer some of them


@pytest.fixture(scope="module")
def server(models_dir: Path, redis_url: str) -> Iterator[Server]:
    prefix = f"jrtest-{uuid.uuid4().hex[:10]}"
    env = {"JOURNEYREC_CATALOG_POLL_SECONDS": "0.2", "JOURNEYREC_MODEL_POLL_SECONDS": "0"}
    s = Server(models_dir, REDIS_URL, prefix, workers=2, env_extra=env)
    try:
        s.wait_live().close()
        _until_both_workers_serve(s, 0)
        yield s
    finally:
        s.stop()
        delete_prefix(redis_url, prefix)


def _get(server: Server, path: str, **params: Any) -> Any:
    """One GET on a new connection (a kept-alive connection would always reach the same worker)."""
    r = httpx.get(server.base + path, params=params, headers=H_READ, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def _write(server: Server, method: str, path: str, body: Any = None, **params: Any) -> dict[str, Any]:
    r = httpx.request(method, server.base + path, json=body, params=params, headers=H_CATALOG, timeout=10)
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def _until_both_workers_serve(server: Server, version: int) -> float:
    """Seconds until two workers reported serving catalog ``version`` (or later); fails after 60 s."""
    start = time.monotonic()
    seen: set[float] = set()
    while time.monotonic() - start < 60:
        body = _get(server, "/v1/models")
        if body["live"] is not None and body["catalog_version"] >= version:
            seen.add(body["live"]["loaded_at"])
        if len(seen) >= 2:
            return time.monotonic() - start
        time.sleep(0.02)
    raise AssertionError(f"not both workers serve catalog version {version}: {seen}")


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["item_id"] for i in items]


def _everywhere(server: Server, visitor: str, **filters: Any) -> dict[str, list[str]]:
    """The item ids of every endpoint for one visitor and the kitchen anchors, from ``REQUESTS`` requests
    each (merged: an item any worker served is in)."""
    out: dict[str, set[str]] = {"similar": set(), "complements": set(), "recommendations": set()}
    for _ in range(REQUESTS):
        out["similar"] |= set(_ids(_get(server, f"/v1/items/{TEAPOT}/similar", k=20, **filters)["items"]))
        complements = _get(server, "/v1/items/complements", item_id=[TEAPOT, TOASTER], k=20, **filters)
        out["complements"] |= set(_ids(complements["items"]))
        recs = _get(server, f"/v1/visitors/{visitor}/recommendations", k=20, **filters)
        out["recommendations"] |= set(_ids(recs["products"]))
    return {k: sorted(v) for k, v in out.items()}


def _browser(server: Server) -> str:
    """A visitor browsing the kitchen category."""
    visitor = f"kitchen-{uuid.uuid4().hex[:8]}"
    events = [
        {"visitor_id": visitor, "item_id": item, "event": "product_view", "timestamp": time.time() - 600 + n}
        for n, item in enumerate([TEAPOT, TOASTER, TEAPOT, product_id("Mug set")])
    ]
    r = httpx.post(server.base + "/v1/events", json={"events": events}, headers=H_INGEST, timeout=10)
    assert r.status_code == 200, r.text
    return visitor


def test_a_sold_out_item_leaves_every_endpoint_of_every_worker(server: Server) -> None:
    visitor = _browser(server)
    before = _everywhere(server, visitor)
    assert KETTLE in before["similar"]  # the same category's best match: a test that can fail
    answer = _write(server, "PATCH", f"/v1/items/{KETTLE}", {"in_stock": False})
    assert answer["items"] == [{"item_id": KETTLE, "outcome": "stored"}]
    took = _until_both_workers_serve(server, answer["catalog_version"])
    print(f"in_stock=false served by both workers after {took:.3f} s")
    after = _everywhere(server, visitor)
    assert all(KETTLE not in ids for ids in after.values()), after
    # asked to include sold-out items, the item is there again: it is in stock that changed, nothing else
    assert KETTLE in _everywhere(server, visitor, in_stock_only="false")["similar"]
    # back in stock
    answer = _write(server, "PATCH", f"/v1/items/{KETTLE}", {"in_stock": True})
    _until_both_workers_serve(server, answer["catalog_version"])
    assert KETTLE in _everywhere(server, visitor)["similar"]


def test_a_price_change_moves_an_item_in_and_out_of_price_filters(server: Server) -> None:
    visitor = _browser(server)
    answer = _write(server, "PATCH", f"/v1/items/{TOASTER}", {"price": 1000.0})
    _until_both_workers_serve(server, answer["catalog_version"])
    assert TOASTER in _everywhere(server, visitor, min_price=500)["similar"]
    expensive = _get(server, f"/v1/items/{KETTLE}/similar", k=20, min_price=500)
    assert _ids(expensive["items"]) == [TOASTER]  # the only item at 500 or more
    assert TOASTER not in _get(server, f"/v1/items/{KETTLE}/similar", k=20, max_price=100)["items"]
    answer = _write(server, "PATCH", f"/v1/items/{TOASTER}", {"price": 45.0})
    _until_both_workers_serve(server, answer["catalog_version"])
    for _ in range(REQUESTS):
        assert _get(server, f"/v1/items/{KETTLE}/similar", k=20, min_price=500)["items"] == []
        cheap = _get(server, f"/v1/items/{KETTLE}/similar", k=20, max_price=100)
        assert TOASTER in _ids(cheap["items"])


def test_an_older_update_is_ignored_and_delete_retires(server: Server) -> None:
    visitor = _browser(server)
    before = _everywhere(server, visitor)
    # two items the endpoints serve now, other than the ones the other tests change
    sold, retired = [i for i in before["similar"] if i not in (KETTLE, TOASTER, TEAPOT)][:2]
    now = time.time()
    answer = _write(server, "PATCH", f"/v1/items/{sold}", {"in_stock": False, "updated_at": now})
    version = answer["catalog_version"]
    late = _write(server, "PATCH", f"/v1/items/{sold}", {"in_stock": True, "updated_at": now - 60})
    assert late == {"catalog_version": version, "items": [{"item_id": sold, "outcome": "ignored_older"}]}
    _until_both_workers_serve(server, version)
    assert all(sold not in ids for ids in _everywhere(server, visitor).values())
    assert _get(server, f"/v1/items/{sold}")["served"]["in_stock"] is False

    answer = _write(server, "DELETE", f"/v1/items/{retired}")
    assert answer["items"] == [{"item_id": retired, "outcome": "stored"}]
    _until_both_workers_serve(server, answer["catalog_version"])
    for ids in _everywhere(server, visitor, in_stock_only="false").values():
        assert retired not in ids
    view = _get(server, f"/v1/items/{retired}")
    assert (view["live"]["retired"], view["servable"], view["represented"]) == (True, False, "trained")
    r = httpx.put(server.base + f"/v1/items/{retired}", json={}, headers=H_CATALOG, timeout=10)
    assert r.status_code == 409, r.text
    assert f"item {retired!r} is retired" in r.json()["detail"]


def test_a_new_item_is_served_from_its_features(server: Server) -> None:
    """A product the model never saw, PUT once, is served by every worker: similar for a same-category
    item, recommended ("new in kitchen") to a visitor who browses its category, and its own similar items
    come from its features."""
    visitor = _browser(server)
    new = f"p-kitchen-new-{uuid.uuid4().hex[:6]}"
    answer = _write(
        server, "PUT", f"/v1/items/{new}", {"title": "Kettle 3", "category": "kitchen", "price": 42.0}
    )
    assert answer["items"] == [{"item_id": new, "outcome": "stored"}]
    took = _until_both_workers_serve(server, answer["catalog_version"])
    print(f"new item served by both workers after {took:.3f} s")
    view = _get(server, f"/v1/items/{new}")
    assert (view["represented"], view["servable"], view["model"]) == ("features", True, None)
    for _ in range(REQUESTS):
        assert new in _ids(_get(server, f"/v1/items/{KETTLE}/similar", k=10)["items"])
        recs = _get(server, f"/v1/visitors/{visitor}/recommendations", k=5, category="kitchen")["products"]
        shown = [r for r in recs if r["item_id"] == new]
        assert [(r["source"], r["reason"]) for r in shown] == [("new", "new in kitchen")], recs
        own = _get(server, f"/v1/items/{new}/similar", k=3)["items"]
        assert all(i["item_id"].startswith("p-kitchen-") for i in own), own
