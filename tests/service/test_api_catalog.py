"""The live catalog API in process: scopes, validation (4xx naming the field), per-item answers, and the
unknown-item count of ingest. The store is the embedded one; the follower and the served model are
tested in ``test_catalog_follower.py`` and end to end in ``test_api_catalog_e2e_redis.py``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from models.domain import CatalogItem
from models.overlay import LiveItem
from models.recommender import Recommender
from service.api import catalog as catalog_api
from service.store.catalog_base import PutAnswer
from service.store.memory_catalog import MemoryCatalog
from tests.service.api_fixtures import H_ADMIN, H_CATALOG, H_INGEST, H_READ, event, make_app
from tests.storefront import product_id

Client = TestClient[Litestar]
KETTLE = product_id("Kettle")
T0 = 1_735_689_600.0


def _error(r: Any, status: int, *needles: str) -> str:
    assert r.status_code == status, r.text
    detail: str = r.json()["detail"]
    for n in needles:
        assert n in detail, detail
    return detail


def _put(client: Client, item_id: str, **body: Any) -> Any:
    return client.put(f"/v1/items/{item_id}", json=body, headers=H_CATALOG)


def _patch(client: Client, item_id: str, **body: Any) -> Any:
    return client.patch(f"/v1/items/{item_id}", json=body, headers=H_CATALOG)


def _outcomes(r: Any) -> list[str]:
    assert r.status_code == 200, r.text
    return [x["outcome"] for x in r.json()["items"]]


def _show(client: Client, item_id: str) -> dict[str, Any]:
    r = client.get(f"/v1/items/{item_id}", headers=H_READ)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.mark.parametrize(
    ("method", "headers", "status"),
    [
        ("PUT", {}, 401),
        ("PUT", H_READ, 403),
        ("PUT", H_INGEST, 403),
        ("PUT", H_ADMIN, 403),
        ("PATCH", H_READ, 403),
        ("DELETE", H_INGEST, 403),
        ("POST", H_READ, 403),
    ],
)
def test_writes_need_the_catalog_scope(
    client: Client, method: str, headers: dict[str, str], status: int
) -> None:
    path = "/v1/items" if method == "POST" else f"/v1/items/{KETTLE}"
    body = {"items": [{"item_id": "x"}]} if method == "POST" else {}
    r = client.request(method, path, json=body if method != "DELETE" else None, headers=headers)
    _error(r, status, *(["catalog scope"] if status == 403 else []))


def test_a_new_item_is_stored_and_shown_as_represented_from_features(client: Client) -> None:
    r = _put(
        client, "p-new-kettle", title=" Kettle 3 ", category="kitchen", price=49.5, tags=["steel", "steel"]
    )
    assert r.json() == {"catalog_version": 1, "items": [{"item_id": "p-new-kettle", "outcome": "stored"}]}
    view = _show(client, "p-new-kettle")
    assert view["represented"] == "features"
    assert view["servable"] is True
    assert view["model"] is None
    assert view["served"]["title"] == "Kettle 3"  # stripped, as the catalog CSV loader strips
    assert view["served"]["tags"] == ["steel"]
    assert view["live"]["updated_at"] == pytest.approx(time.time(), abs=60)
    # the catalog key may read it too; an unknown item is a 404
    assert client.get("/v1/items/p-new-kettle", headers=H_CATALOG).status_code == 200
    _error(client.get("/v1/items/p-nothing", headers=H_READ), 404, "'p-nothing'")


def test_an_older_update_is_ignored_and_reported(client: Client) -> None:
    assert _outcomes(_put(client, "p-x", price=10.0, updated_at=T0 + 10)) == ["stored"]
    r = _put(client, "p-x", price=99.0, updated_at="2025-01-01T00:00:05Z")
    assert r.json() == {"catalog_version": 1, "items": [{"item_id": "p-x", "outcome": "ignored_older"}]}
    assert _show(client, "p-x")["served"]["price"] == 10.0
    assert _outcomes(_patch(client, "p-x", in_stock=False, updated_at=T0 + 1)) == ["ignored_older"]
    assert _show(client, "p-x")["served"]["in_stock"] is True


def test_patch_merges_onto_the_trained_item_then_onto_the_live_entry(client: Client) -> None:
    assert _outcomes(_patch(client, KETTLE, in_stock=False)) == ["stored"]
    view = _show(client, KETTLE)
    assert view["represented"] == "trained"
    assert view["model"]["in_stock"] is True
    assert view["served"] == {**view["model"], "in_stock": False}
    assert _outcomes(_patch(client, KETTLE, price=35.0, hidden=True)) == ["stored"]
    view = _show(client, KETTLE)
    assert (view["served"]["price"], view["served"]["in_stock"], view["live"]["hidden"]) == (
        35.0,
        False,
        True,
    )
    assert view["servable"] is False
    assert _outcomes(_patch(client, KETTLE, price=None, hidden=False)) == ["stored"]
    view = _show(client, KETTLE)
    assert (view["served"]["price"], view["servable"]) == (None, True)
    _error(_patch(client, "p-nothing", in_stock=False), 404, "'p-nothing'", "PUT it first")


def test_schedule_decides_whether_an_item_is_servable(client: Client) -> None:
    now = time.time()
    _put(client, "p-later", available_from=now + 3600)
    assert _show(client, "p-later")["servable"] is False
    _put(client, "p-gone", available_from="2025-01-01T00:00:00Z", expires_at=now - 1)
    assert _show(client, "p-gone")["servable"] is False
    _put(client, "p-now", available_from=now - 10, expires_at=now + 3600)
    assert _show(client, "p-now")["servable"] is True


def test_delete_retires_and_every_later_write_is_refused(client: Client) -> None:
    r = client.delete(f"/v1/items/{KETTLE}", headers=H_CATALOG)
    assert _outcomes(r) == ["stored"]
    view = _show(client, KETTLE)
    assert view["live"]["retired"] is True
    assert view["servable"] is False
    assert view["served"]["title"] == "Kettle"  # the trained fields, kept
    _error(_put(client, KETTLE, title="Kettle"), 409, f"item {KETTLE!r} is retired")
    _error(_patch(client, KETTLE, in_stock=True), 409, f"item {KETTLE!r} is retired")
    _error(client.delete(f"/v1/items/{KETTLE}", headers=H_CATALOG), 409, "retired")
    # a batch reports it per item and stores the rest
    r = client.post("/v1/items", json={"items": [{"item_id": KETTLE}, {"item_id": "p-b"}]}, headers=H_CATALOG)
    assert _outcomes(r) == ["refused", "stored"]
    _error(client.delete("/v1/items/p-nothing", headers=H_CATALOG), 404, "'p-nothing'")


def test_delete_takes_the_time_of_the_retirement(client: Client) -> None:
    _put(client, "p-x", updated_at=T0 + 10)
    r = client.delete("/v1/items/p-x", params={"updated_at": T0 + 5}, headers=H_CATALOG)
    assert _outcomes(r) == ["ignored_older"]
    assert _show(client, "p-x")["live"]["retired"] is False


def test_a_batch_is_applied_in_order_within_the_limit(models_dir: Path, recommender: Recommender) -> None:
    app = make_app(models_dir, recommender, max_catalog_batch=3)
    with TestClient(app, raise_server_exceptions=False) as client:
        items = [
            {"item_id": "a", "price": 1.0, "updated_at": T0 + 2},
            {"item_id": "a", "price": 2.0, "updated_at": T0 + 1},
            {"item_id": "b", "stages": ["decision"]},
        ]
        r = client.post("/v1/items", json={"items": items}, headers=H_CATALOG)
        assert r.json() == {
            "catalog_version": 2,
            "items": [
                {"item_id": "a", "outcome": "stored"},
                {"item_id": "a", "outcome": "ignored_older"},
                {"item_id": "b", "outcome": "stored"},
            ],
        }
        r = client.post("/v1/items", json={"items": [*items, {"item_id": "c"}]}, headers=H_CATALOG)
        _error(r, 400, "body field 'items'", "4 items; at most 3")
        assert _show(client, "a")["served"]["price"] == 1.0


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ({"price": -1}, ("'price'", ">= 0")),
        (
            {"stages": ["awareness", "buying"]},
            ("'stages[1]'", "Invalid enum value 'buying'", "consideration"),
        ),
        ({"kind": "service"}, ("'kind'", "product, content")),
        ({"colour": "red"}, ("unknown field", "colour")),
        ({"tags": ["a|b"]}, ("'tags[0]'",)),
        ({"title": 5}, ("'title'", "Expected `str`")),
        ({"updated_at": "tomorrow"}, ("'updated_at'", "not an ISO-8601")),
        ({"updated_at": time.time() + 3 * 86_400}, ("'updated_at'", "more than a day in the future")),
        ({"available_from": T0 + 10, "expires_at": T0}, ("'expires_at'", "not after available_from")),
        ({"expires_at": "2025-01-01T00:00:00"}, ("'expires_at'", "no UTC offset")),
    ],
)
def test_bad_items_are_400_naming_the_field(
    client: Client, body: dict[str, Any], needles: tuple[str, ...]
) -> None:
    _error(_put(client, "p-bad", **body), 400, *needles)
    _error(_patch(client, KETTLE, **body), 400, *needles)
    batch = {"items": [{"item_id": "ok"}, {"item_id": "p-bad", **body}]}
    detail = _error(client.post("/v1/items", json=batch, headers=H_CATALOG), 400)
    assert "items[1]" in detail, detail
    assert client.get("/v1/items/p-bad", headers=H_READ).status_code == 404  # nothing was written


def test_a_batch_entry_needs_an_id(client: Client) -> None:
    r = client.post("/v1/items", json={"items": [{"title": "x"}]}, headers=H_CATALOG)
    _error(r, 400, "item_id")
    _error(client.post("/v1/items", json={"items": []}, headers=H_CATALOG), 400, "'items'")


def _until_served(client: Client, item_id: str, version: int) -> None:
    """Wait (bounded) until the worker serves catalog ``version`` (its follower polls every 0.2 s)."""
    deadline = time.monotonic() + 30
    while _show(client, item_id)["catalog_version"] < version:
        assert time.monotonic() < deadline, "the worker did not follow the catalog"
        time.sleep(0.02)


class MovingCatalog(MemoryCatalog):
    """A catalog where another writer changes the item between the merge's read and its write, the first
    ``moves`` times."""

    def __init__(self, moves: int) -> None:
        super().__init__()
        self.moves = moves

    async def put(self, items: Any, *, based_on: Any = None) -> PutAnswer:
        if based_on is not None and self.moves > 0:
            self.moves -= 1
            stored = await self.get(items[0].item.item_id)
            base = stored.item if stored else CatalogItem(item_id=items[0].item.item_id)
            other = LiveItem(item=CatalogItem(**{**_fields(base), "price": 7.0}), updated_at=time.time() - 1)
            await super().put([other])
        return await super().put(items, based_on=based_on)


def _fields(item: CatalogItem) -> dict[str, Any]:
    return {f: getattr(item, f) for f in item.__struct_fields__}


def test_a_patch_merges_again_when_another_write_landed(models_dir: Path, recommender: Recommender) -> None:
    """Two feeds patch the same item (stock, price): neither undoes the other's field."""
    catalog = MovingCatalog(moves=2)
    app = make_app(models_dir, recommender, catalog=catalog)
    with TestClient(app, raise_server_exceptions=False) as client:
        assert _outcomes(_patch(client, KETTLE, in_stock=False)) == ["stored"]
        served = _show(client, KETTLE)["served"]
        assert (served["in_stock"], served["price"]) == (False, 7.0)
    catalog = MovingCatalog(moves=catalog_api.MERGE_ATTEMPTS)
    app = make_app(models_dir, recommender, catalog=catalog)
    with TestClient(app, raise_server_exceptions=False) as client:
        _error(_patch(client, KETTLE, in_stock=False), 409, "changed 8 times")


def test_ingest_counts_events_for_unknown_items(client: Client) -> None:
    def counted() -> float:
        text = client.get("/metrics").text
        line = next(x for x in text.splitlines() if x.startswith("journeyrec_unknown_item_events_total "))
        return float(line.split()[1])

    before = counted()
    _put(client, "p-brand-new")
    _until_served(client, "p-brand-new", 1)
    events = [
        event("v1", KETTLE, "product_view"),
        event("v1", "p-brand-new", "product_view"),  # in the live catalog
        event("v1", "p-nobody-knows", "product_view"),
        event("v2", "p-nobody-knows", "add_to_cart"),
    ]
    r = client.post("/v1/events", json={"events": events}, headers=H_INGEST)
    assert r.json() == {"accepted": 4, "duplicates": 0, "unknown_items": 2, "impressions": 0}
    assert counted() == before + 2
    j = client.get("/v1/visitors/v2/journey", headers=H_READ).json()
    assert [t["item_id"] for t in j["touchpoints"]] == ["p-nobody-knows"]  # stored, not dropped


def test_exploration_keeps_slots_for_new_items(models_dir: Path, recommender: Recommender) -> None:
    """JOURNEYREC_EXPLORATION: a share of a stage's slots goes to new items, flagged in the answer."""
    app = make_app(models_dir, None, exploration="awareness=0.5")
    with TestClient(app, raise_server_exceptions=False) as client:
        _put(client, "p-fresh", category="garden", price=12.0)
        _until_served(client, "p-fresh", 1)
        # k=2: the new item is not among the model's best two, so a slot is kept for it
        body = client.get("/v1/visitors/newcomer/recommendations?k=2", headers=H_READ).json()
        flagged = [p for p in body["products"] if p.get("exploration")]
        assert body["stage"]["name"] == "awareness"
        assert [p["item_id"] for p in flagged] == ["p-fresh"]
        # a stage without a share keeps every slot for the model's ranking
        body = client.get("/v1/visitors/newcomer/recommendations?k=2&stage=decision", headers=H_READ).json()
        assert not any(p.get("exploration") for p in body["products"])
        assert "p-fresh" not in [p["item_id"] for p in body["products"]]
