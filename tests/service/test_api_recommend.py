"""The API over the memory store and a real model trained on the simulated storefront."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from models.domain import STAGES, Channel, Event, EventType, Source
from models.recommender import Recommender
from models.request import Recommendations, VisitorContext
from service.api.deps import context_of
from service.store.base import VisitorState
from tests.service.api_fixtures import (
    H_ADMIN,
    H_INGEST,
    H_READ,
    SwitchableStore,
    event,
    make_app,
    memory_store,
)
from tests.storefront import product_id, storefront_catalog

Client = TestClient[Litestar]
KETTLE = product_id("Kettle")
LANTERN = product_id("Lantern")
TEAS = {product_id("Green tea"), product_id("Black tea")}
PRICE = {c.item_id: c.price for c in storefront_catalog()}
STAGE_NAMES = {s.value for s in STAGES}


def _ingest(client: Client, *events: dict[str, Any]) -> dict[str, Any]:
    body = events[0] if len(events) == 1 else {"events": list(events)}
    r = client.post("/v1/events", json=body, headers=H_INGEST)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _recs(client: Client, visitor: str, query: str = "") -> dict[str, Any]:
    r = client.get(f"/v1/visitors/{visitor}/recommendations?{query}", headers=H_READ)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _ids(items: list[dict[str, Any]]) -> list[str]:
    return [i["item_id"] for i in items]


def test_unknown_visitor_gets_a_cold_start_answer(client: Client, recommender: Recommender) -> None:
    body = _recs(client, "never-seen", "k=5&n_content=2")
    assert set(body) == {
        "visitor_id",
        "stage",
        "products",
        "content",
        "model_version",
        "fallback",
        "recommendation_id",
    }
    assert body["visitor_id"] == "never-seen"
    assert body["fallback"] is False
    assert body["model_version"] == recommender.version
    assert set(body["stage"]) == {"name", "confidence", "signals"}
    assert body["stage"]["name"] in STAGE_NAMES
    assert len(body["products"]) == 5
    assert all(i.startswith("p-") for i in _ids(body["products"]))
    assert 0 < len(body["content"]) <= 2
    assert all(i.startswith("c-") for i in _ids(body["content"]))
    for item in body["products"] + body["content"]:
        assert set(item) == {"item_id", "score", "source", "reason"}
        assert item["reason"]
    assert LANTERN not in _ids(body["products"])  # out of stock


def test_ingest_is_idempotent_and_visible_immediately(client: Client) -> None:
    ev = event("v-cart", KETTLE, "add_to_cart", event_id="e-1")
    assert _ingest(client, ev) == {"accepted": 1, "duplicates": 0, "unknown_items": 0, "impressions": 0}
    assert _ingest(client, ev) == {"accepted": 0, "duplicates": 1, "unknown_items": 0, "impressions": 0}
    body = _recs(client, "v-cart", "k=10")
    assert KETTLE not in _ids(body["products"])  # in the cart: not recommended again
    with_cart = _recs(client, "v-cart", "k=22&include_cart=true")
    assert KETTLE in _ids(with_cart["products"])
    journey = client.get("/v1/visitors/v-cart/journey", headers=H_READ).json()
    assert journey["cart"] == [KETTLE]
    assert len(journey["touchpoints"]) == 1


def test_purchased_items_are_excluded_unless_asked(client: Client) -> None:
    _ingest(client, event("v-buy", KETTLE, "purchase", event_id="b-1"))
    assert KETTLE not in _ids(_recs(client, "v-buy", "k=22")["products"])
    assert KETTLE in _ids(_recs(client, "v-buy", "k=22&include_purchased=true")["products"])


def test_filters(client: Client) -> None:
    garden = _recs(client, "v-f", "category=garden&k=10")["products"]
    assert garden
    assert all(i.startswith("p-garden-") for i in _ids(garden))
    cheap = _recs(client, "v-f", "max_price=10&k=20")["products"]
    assert cheap
    assert all((PRICE[i] or 0) <= 10 for i in _ids(cheap))
    outdoor_all = _recs(client, "v-f", "category=outdoor&k=10&in_stock_only=false")["products"]
    assert LANTERN in _ids(outdoor_all)
    excluded = _recs(client, "v-f", f"category=outdoor&k=10&exclude={product_id('Tent')}")["products"]
    assert product_id("Tent") not in _ids(excluded)


def test_stage_override(client: Client) -> None:
    body = _recs(client, "v-stage", "stage=decision")
    assert body["stage"]["name"] == "decision"
    assert body["stage"]["confidence"] == 1.0


def test_complements_and_similar(client: Client, recommender: Recommender) -> None:
    r = client.get(f"/v1/items/{KETTLE}/complements?k=5", headers=H_READ)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["item_ids"] == [KETTLE]
    assert body["model_version"] == recommender.version
    assert TEAS & set(_ids(body["items"])), body  # the simulated bundles: kettles sell with tea
    assert KETTLE not in _ids(body["items"])
    r = client.get(f"/v1/items/complements?item_id={KETTLE}&item_id=ghost&k=5", headers=H_READ)
    assert r.status_code == 200
    assert r.json()["unknown"] == ["ghost"]
    r = client.get(f"/v1/items/{product_id('Tent')}/similar?k=3", headers=H_READ)
    assert r.status_code == 200
    assert len(r.json()["items"]) == 3
    r = client.get(f"/v1/items/similar?item_id={KETTLE}&item_id={product_id('Teapot')}", headers=H_READ)
    assert r.status_code == 200
    assert r.json()["item_ids"] == [KETTLE, product_id("Teapot")]


def test_retargeting_and_campaign_dedup(client: Client) -> None:
    _ingest(
        client,
        event("v-rt", product_id("Toaster"), "product_view"),
        event("v-rt", KETTLE, "add_to_cart"),
    )
    r = client.get("/v1/visitors/v-rt/retargeting?k=5&campaign=spring", headers=H_READ)
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["campaign"] == "spring"
    assert first["items"][0]["item_id"] == KETTLE
    assert first["items"][0]["source"] == "abandoned_cart"
    # without mark_sent nothing is remembered; with it, the next call skips what was sent
    again = client.get("/v1/visitors/v-rt/retargeting?k=5&campaign=spring", headers=H_READ).json()
    assert again["items"] == first["items"]
    marked = client.get("/v1/visitors/v-rt/retargeting?k=5&campaign=spring&mark_sent=true", headers=H_INGEST)
    assert marked.status_code == 200, marked.text
    after = client.get("/v1/visitors/v-rt/retargeting?k=5&campaign=spring", headers=H_READ).json()
    assert not set(_ids(after["items"])) & set(_ids(first["items"]))
    other = client.get("/v1/visitors/v-rt/retargeting?k=5&campaign=autumn", headers=H_READ).json()
    assert KETTLE in _ids(other["items"])


def test_retargeting_export_streams_json_lines(client: Client) -> None:
    _ingest(client, event("v-x1", KETTLE, "add_to_cart"), event("v-x2", product_id("Tent"), "add_to_cart"))
    r = client.post(
        "/v1/retargeting/export",
        json={"visitor_ids": ["v-x1", "v-x2", "v-x1", "nobody"], "k": 3, "campaign": "mail-1"},
        headers=H_READ,
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(x) for x in r.text.splitlines()]
    assert [x["visitor_id"] for x in lines] == ["v-x1", "v-x2", "nobody"]
    assert lines[0]["items"][0]["item_id"] == KETTLE
    assert lines[1]["items"][0]["item_id"] == product_id("Tent")
    # mark_sent defaults to false: a second run repeats the items until a run records them as sent
    body = {"visitor_ids": ["v-x1"], "k": 3, "campaign": "mail-1"}
    r2 = client.post("/v1/retargeting/export", json=body, headers=H_READ)
    assert KETTLE in _ids(json.loads(r2.text.splitlines()[0])["items"])
    r3 = client.post("/v1/retargeting/export", json={**body, "mark_sent": True}, headers=H_INGEST)
    assert KETTLE in _ids(json.loads(r3.text.splitlines()[0])["items"])
    r4 = client.post("/v1/retargeting/export", json=body, headers=H_READ)
    assert KETTLE not in _ids(json.loads(r4.text.splitlines()[0])["items"])


def test_recording_sends_needs_the_ingest_scope(client: Client) -> None:
    _ingest(client, event("v-ro", KETTLE, "add_to_cart"))
    url = "/v1/visitors/v-ro/retargeting?k=3&campaign=c-ro"
    r = client.get(url + "&mark_sent=true", headers=H_READ)
    assert r.status_code == 403, r.text
    assert "mark_sent" in r.json()["detail"]
    assert "ingest scope" in r.json()["detail"]
    body = {"visitor_ids": ["v-ro"], "k": 3, "campaign": "c-ro", "mark_sent": True}
    r = client.post("/v1/retargeting/export", json=body, headers=H_READ)
    assert r.status_code == 403, r.text
    assert "ingest scope" in r.json()["detail"]
    # nothing was recorded: the cart item is still offered to that campaign
    assert KETTLE in _ids(client.get(url, headers=H_READ).json()["items"])
    # with the ingest scope it is recorded; without a campaign there is nothing to record it under
    assert client.get(url + "&mark_sent=true", headers=H_INGEST).status_code == 200
    assert KETTLE not in _ids(client.get(url, headers=H_READ).json()["items"])
    r = client.get("/v1/visitors/v-ro/retargeting?mark_sent=true", headers=H_INGEST)
    assert r.status_code == 400
    assert "needs a campaign" in r.json()["detail"]


def test_mark_sent_is_documented_on_both_operations(client: Client) -> None:
    paths = client.get("/schema/openapi.json").json()["paths"]
    for path, method in (
        ("/v1/visitors/{visitor_id}/retargeting", "get"),
        ("/v1/retargeting/export", "post"),
    ):
        description = paths[path][method]["description"]
        assert "mark_sent" in description, path
        assert "recorded as sent" in description, path
        assert "ingest" in description, path


def test_journey_and_erase(client: Client) -> None:
    _ingest(
        client,
        event("v-gdpr", "c-tea-101", "content_view", 1_700_000_000.0),
        event("v-gdpr", KETTLE, "product_view", 1_700_000_100.0),
        event("v-gdpr", KETTLE, "add_to_cart", 1_700_000_200.0),
    )
    j = client.get("/v1/visitors/v-gdpr/journey?limit=2", headers=H_READ).json()
    assert [t["event"] for t in j["touchpoints"]] == ["add_to_cart", "product_view"]  # newest first
    assert j["touchpoints"][0]["time"] == "2023-11-14T22:16:40+00:00"
    # the stage just after each: one view is not consideration yet; the cart is decision
    assert [t["stage"] for t in j["touchpoints"]] == ["decision", "awareness"]
    assert j["stage"]["name"] in STAGE_NAMES
    r = client.delete("/v1/visitors/v-gdpr", headers=H_ADMIN)
    assert r.status_code == 200
    assert r.json()["erased"] is True
    assert r.json()["records_removed"] >= 1
    j = client.get("/v1/visitors/v-gdpr/journey", headers=H_READ).json()
    assert j["touchpoints"] == []
    assert j["cart"] == []


def test_store_down_degrades_reads_and_refuses_writes(models_dir: Path, recommender: Recommender) -> None:
    store = SwitchableStore(memory_store())
    app = make_app(models_dir, recommender, store=store, retry_after=7)
    with TestClient(app, raise_server_exceptions=False) as c:
        c.post("/v1/events", json=event("v-down", KETTLE, "add_to_cart"), headers=H_INGEST)
        store.down = True
        r = c.get("/v1/visitors/v-down/recommendations?k=4", headers=H_READ)
        assert r.status_code == 200
        assert r.json()["fallback"] is True
        assert len(r.json()["products"]) == 4
        r = c.post("/v1/events", json=event("v-down", KETTLE, "purchase"), headers=H_INGEST)
        assert r.status_code == 503
        assert r.headers["Retry-After"] == "7"
        assert c.get("/v1/visitors/v-down/journey", headers=H_READ).status_code == 503
        assert c.get("/v1/visitors/v-down/retargeting", headers=H_READ).status_code == 503
        r = c.post("/v1/retargeting/export", json={"visitor_ids": ["v-down"]}, headers=H_READ)
        assert r.status_code == 503
        assert c.get("/health/ready").status_code == 503
        assert c.get("/health/live").status_code == 200
        store.down = False
        # nothing was reported as accepted while down: the purchase is not there
        j = c.get("/v1/visitors/v-down/journey", headers=H_READ).json()
        assert [t["event"] for t in j["touchpoints"]] == ["add_to_cart"]
        assert c.get("/health/ready").status_code == 200


def test_metrics_and_openapi(client: Client) -> None:
    _ingest(client, event("v-m", KETTLE, "product_view"))
    client.get("/v1/visitors/v-m/recommendations", headers=H_READ)
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'journeyrec_events_total{outcome="accepted"}' in text
    assert "journeyrec_http_requests_total" in text
    assert "v-m" not in text  # grouped by route template: no visitor ids in labels
    spec = client.get("/schema/openapi.json").json()
    for path in (
        "/v1/events",
        "/v1/visitors/{visitor_id}/recommendations",
        "/v1/items/{item_id}/complements",
        "/v1/items/complements",
        "/v1/visitors/{visitor_id}/retargeting",
        "/v1/retargeting/export",
        "/v1/visitors/{visitor_id}/journey",
        "/v1/visitors/{visitor_id}",
        "/v1/models",
        "/v1/models/reload",
        "/health/ready",
    ):
        assert path in spec["paths"], path
    assert "/metrics" not in spec["paths"]  # Prometheus text, not part of the JSON API
    assert "JOURNEYREC_MAX_K" in json.dumps(spec["paths"]["/v1/visitors/{visitor_id}/recommendations"])
    assert "RecommendationsOut" in json.dumps(spec)
    body = spec["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [x["$ref"].rsplit("/", 1)[1] for x in body["oneOf"]] == ["EventIn", "EventBatchIn"]
    event_in = spec["components"]["schemas"]["EventIn"]
    assert set(event_in["required"]) == {"visitor_id", "item_id", "event"}
    assert "X-API-Key" in json.dumps(spec["components"]["securitySchemes"])
    # every answer's item source is a closed vocabulary the schema lists
    schemas = spec["components"]["schemas"]
    assert schemas["ItemOut"]["properties"]["source"] == {"$ref": "#/components/schemas/Source"}
    assert schemas["Source"]["enum"] == [s.value for s in Source]
    assert len(Source) == 12


@pytest.mark.parametrize("visitor", ["a b", "ümlaut", "x:y{z}"])
def test_odd_visitor_ids_work(client: Client, visitor: str) -> None:
    assert _ingest(client, event(visitor, KETTLE, "product_view"))["accepted"] == 1
    r = client.get(f"/v1/visitors/{visitor}/journey", headers=H_READ)
    assert r.status_code == 200
    assert r.json()["visitor_id"] == visitor


def test_the_model_sees_the_stored_purchase_log() -> None:
    # buy-again reaches beyond the recent events only if the request's context carries the log
    bought = Event(visitor_id="v", item_id="p", event=EventType.PURCHASE, timestamp=1.0)
    state = VisitorState(visitor_id="v", events=[], cart={}, purchases={"p": 1.0}, purchase_log=[bought])
    assert context_of(state).purchase_log == [bought]


def test_referrer_sets_the_channel_when_none_is_given(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[Channel | None] = []
    real = Recommender.recommend

    def spy(self: Recommender, ctx: VisitorContext, *args: Any, **kwargs: Any) -> Recommendations:
        seen.append(ctx.channel)
        return real(self, ctx, *args, **kwargs)

    monkeypatch.setattr(Recommender, "recommend", spy)
    for query in (
        "referrer=https://www.google.com/search%3Fq%3Dkettle",
        "referrer=https://t.co/x",
        "referrer=https://blog.example.com/&channel=email",  # a channel given wins
        "referrer=",
        "",
    ):
        _recs(client, "newcomer", query)
    assert seen == [Channel.SEARCH, Channel.SOCIAL, Channel.EMAIL, Channel.DIRECT, None]
    r = client.get("/v1/visitors/v/recommendations?referrer=" + "x" * 2049, headers=H_READ)
    assert r.status_code == 400
    assert "referrer" in r.text
