"""Every invalid input is a 4xx with a one-line message naming the field: never a 500, never a crash."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from models.recommender import Recommender
from tests.service.api_fixtures import H_INGEST, H_READ, event, make_app
from tests.storefront import product_id

Client = TestClient[Litestar]


def _error(r: Any, status: int, *needles: str) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status_code"] == status
    assert set(body) == {"status_code", "error", "detail"}
    detail: str = body["detail"]
    assert "\n" not in detail
    for n in needles:
        assert n in detail, detail
    return detail


def _post_events(client: Client, body: bytes | str) -> Any:
    data = body.encode() if isinstance(body, str) else body
    return client.post("/v1/events", content=data, headers={**H_INGEST, "Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ('{"visitor_id": "v", "item_id": ', ("not valid JSON",)),
        ("", ("empty body",)),
        ("[1, 2]", ("JSON list, not an object",)),
        ('"hello"', ("JSON str, not an object",)),
        ('{"visitor_id": 5, "item_id": "i", "event": "page_view"}', ("'visitor_id'", "Expected `str`")),
        ('{"item_id": "i", "event": "page_view"}', ("body: Object missing required field `visitor_id`",)),
        (
            '{"visitor_id": "v", "item_id": "i", "event": "add-to-cart"}',
            ("'event'", "Invalid enum value 'add-to-cart'", "expected one of: page_view,", "add_to_cart"),
        ),
        ('{"visitor_id": "v", "item_id": "i", "event": "page_view", "colour": 1}', ("unknown field",)),
        ('{"visitor_id": "", "item_id": "i", "event": "page_view"}', ("'visitor_id'", "length >= 1")),
        (
            '{"visitor_id": "v", "item_id": "i", "event": "page_view", "timestamp": true}',
            ("'timestamp'", "Expected `float | str | null`"),
        ),
        (
            '{"visitor_id": "v", "item_id": "i", "event": "page_view", "timestamp": "yesterday"}',
            ("'timestamp'", "not an ISO-8601 timestamp"),
        ),
        (
            '{"visitor_id": "v", "item_id": "i", "event": "page_view", "timestamp": "2025-01-01T10:00:00"}',
            ("'timestamp'", "no UTC offset"),
        ),
        (
            '{"visitor_id": "v", "item_id": "i", "event": "page_view", "timestamp": 99999999999}',
            ("'timestamp'", "in the future"),
        ),
        (
            '{"visitor_id": "v", "item_id": "i", "event": "page_view", "timestamp": -5}',
            ("'timestamp'", "not a valid time"),
        ),
        (
            '{"visitor_id": "v", "item_id": "i", "event": "purchase", "quantity": -1}',
            ("'quantity'", ">= 0"),
        ),
        ('{"visitor_id": "v", "item_id": "i", "event": "page_view", "channel": "tv"}', ("'channel'",)),
        ('{"events": []}', ("'events'", "length >= 1")),
        ('{"events": {"a": 1}}', ("'events'", "Expected `array`")),
        (
            (
                '{"events": [{"visitor_id": "v", "item_id": "i", "event": "page_view"},'
                ' {"visitor_id": "v", "item_id": "i", "event": "jump"}]}'
            ),
            ("'events[1].event'", "Invalid enum value 'jump'", "expected one of: page_view,"),
        ),
        (
            '{"visitor_id": "v", "item_id": "i", "event": "page_view", "timestamp": 1e400}',
            ("body field 'timestamp'", "Number out of range"),
        ),
        (
            '{"events": [{"visitor_id": "v", "item_id": "i", "event": "page_view", "value": 1'
            + "0" * 5000
            + "}]}",
            ("body field 'events[0].value'", "out of range"),
        ),
        (
            '{"events": [{"visitor_id": "v", "item_id": "i", "event": "page_view", "timestamp": "x"}]}',
            ("'events[0].timestamp'",),
        ),
    ],
)
def test_bad_event_bodies_are_400(client: Client, body: str, needles: tuple[str, ...]) -> None:
    _error(_post_events(client, body), 400, *needles)


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (
            b'{"visitor_id": "a\xff\xfeb", "item_id": "i", "event": "page_view"}',
            ("'visitor_id'", "byte 0xff"),
        ),
        (
            (
                b'{"events": [{"visitor_id": "v", "item_id": "i", "event": "page_view"},'
                b' {"visitor_id": "v", "item_id": "cut\xc3", "event": "page_view"}]}'
            ),
            ("'events[1].item_id'", "not valid UTF-8", "byte 0xc3"),
        ),
        (
            b'{"visitor_id": "v", "item_id": "i", "event": "page_view", "k\xed\xa0\x80": 1}',
            ("not valid UTF-8",),
        ),
    ],
)
def test_invalid_utf8_inside_a_string_is_400_naming_the_field(
    client: Client, body: bytes, needles: tuple[str, ...]
) -> None:
    _error(_post_events(client, body), 400, *needles)


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        (b'{"visitor_ids": ["ok", "a\xffb"], "k": 3}', ("body field 'visitor_ids[1]'", "not valid UTF-8")),
        (b'{"visitor_ids": ["a"], "k": 1e400}', ("body field 'k'", "out of range")),
        (b'{"visitor_ids": ["a"], "campaign": "spr\xe9"}', ("body field 'campaign'", "not valid UTF-8")),
    ],
)
def test_export_bodies_the_decoder_refuses_are_400(
    client: Client, body: bytes, needles: tuple[str, ...]
) -> None:
    r = client.post(
        "/v1/retargeting/export", content=body, headers={**H_READ, "Content-Type": "application/json"}
    )
    _error(r, 400, *needles)


def test_deeply_nested_json_is_refused_before_decoding(client: Client) -> None:
    depth = 50_000  # far beyond what msgspec's recursive decoder survives on a default C stack
    body = '{"visitor_id": "v", "item_id": "i", "event": "page_view", "x": ' + "[" * depth + "]" * depth + "}"
    _error(_post_events(client, body), 400, f"nests {depth + 1} levels deep")
    # the same attack on a body Litestar decodes itself (the export request)
    nested = '{"visitor_ids": ["v"], "x": ' + "[" * depth + "]" * depth + "}"
    r = client.post("/v1/retargeting/export", content=nested.encode(), headers=H_READ)
    _error(r, 400, "levels deep")
    assert client.get("/health/live").status_code == 200  # still alive


def test_oversized_batch_and_body(models_dir: Path, recommender: Recommender) -> None:
    app = make_app(models_dir, recommender, max_batch=3, max_body_bytes=4096)
    with TestClient(app, raise_server_exceptions=False) as c:
        batch = {"events": [event("v", "i", "page_view") for _ in range(4)]}
        _error(_post_events(c, json.dumps(batch)), 400, "'events'", "4 events; at most 3")
        big = {"events": [event("v" * 200, "i" * 200, "page_view")] * 3}
        r = _post_events(c, json.dumps(big) + " " * 4096)
        assert r.status_code == 413
        # other endpoints keep the small default limit
        r = c.post("/v1/retargeting/export", content=b" " * (70 * 1024), headers=H_READ)
        assert r.status_code == 413


@pytest.mark.parametrize(
    ("query", "needles"),
    [
        ("k=0", ("'k'", "out of range")),
        ("k=101", ("'k'", "1..100")),
        ("k=ten", ("query parameter 'k'",)),
        ("n_content=-1", ("query parameter 'n_content'",)),
        ("n_content=51", ("query parameter 'n_content'",)),
        ("min_price=50&max_price=10", ("min_price 50.0 is above max_price 10.0",)),
        ("min_price=-3", ("query parameter 'min_price'",)),
        ("channel=telepathy", ("query parameter 'channel'", "expected one of: email, ad, search,")),
        ("stage=nirvana", ("query parameter 'stage'", "expected one of: awareness, consideration,")),
        ("kind=service", ("query parameter 'kind'", "expected one of: product, content")),
        ("referrer=http://[::1", ("referrer 'http://[::1' is not a valid URL",)),
        ("referrer=https://a]b/", ("referrer 'https://a]b/' is not a valid URL",)),
        ("k=1e400", ("query parameter 'k'",)),
        ("placement=Home%20Page", ("query parameter 'placement'",)),
        ("in_stock_only=perhaps", ("query parameter 'in_stock_only'",)),
        ("country=x", ("query parameter 'country'",)),
    ],
)
def test_bad_recommendation_queries_are_400(client: Client, query: str, needles: tuple[str, ...]) -> None:
    r = client.get(f"/v1/visitors/v1/recommendations?{query}", headers=H_READ)
    _error(r, 400, *needles)


def test_overlong_visitor_id_is_400(client: Client) -> None:
    r = client.get(f"/v1/visitors/{'v' * 300}/recommendations", headers=H_READ)
    _error(r, 400, "visitor_id")


def test_item_endpoints_validate(client: Client) -> None:
    _error(client.get("/v1/items/no-such-item/similar", headers=H_READ), 404, "unknown item 'no-such-item'")
    _error(client.get("/v1/items/complements?item_id=x&item_id=y", headers=H_READ), 404, "unknown items")
    _error(client.get("/v1/items/complements", headers=H_READ), 400, "item_id")
    kettle = product_id("Kettle")
    _error(client.get(f"/v1/items/{kettle}/similar?k=0", headers=H_READ), 400, "'k'")


def test_export_validates(models_dir: Path, recommender: Recommender) -> None:
    app = make_app(models_dir, recommender, max_export_visitors=2)
    with TestClient(app, raise_server_exceptions=False) as c:
        post = c.post
        _error(post("/v1/retargeting/export", json={"visitor_ids": []}, headers=H_READ), 400, "visitor_ids")
        r = post("/v1/retargeting/export", json={"visitor_ids": ["a", "b", "c"]}, headers=H_READ)
        _error(r, 400, "3 visitors; at most 2")
        r = post("/v1/retargeting/export", json={"visitor_ids": ["a"], "k": 0}, headers=H_READ)
        _error(r, 400, "'k'")
        r = post("/v1/retargeting/export", json={"visitor_ids": ["a"], "colour": 1}, headers=H_READ)
        _error(r, 400, "unknown field")
        r = post("/v1/retargeting/export", content=b"{nope", headers=H_READ)
        assert r.status_code == 400


def test_unknown_route_and_method(client: Client) -> None:
    _error(client.get("/v1/nothing-here", headers=H_READ), 404)
    _error(client.put("/v1/events", json={}, headers=H_INGEST), 405)


def test_ingest_accepts_iso_and_posix_and_missing_timestamps(client: Client) -> None:
    now = time.time()
    batch = {
        "events": [
            event("iso", "i1", "page_view", "2025-01-01T10:00:00Z"),
            event("iso", "i2", "page_view", "2025-01-01T12:00:00+02:00"),
            event("iso", "i3", "page_view", now - 5),
            event("iso", "i4", "page_view"),
        ]
    }
    r = _post_events(client, json.dumps(batch))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "accepted": 4,
        "duplicates": 0,
        "unknown_items": 4,
        "impressions": 0,
    }  # i1..i4: no such items
    j = client.get("/v1/visitors/iso/journey", headers=H_READ).json()
    stamps = {t["item_id"]: t["timestamp"] for t in j["touchpoints"]}
    assert stamps["i1"] == 1_735_725_600.0
    assert stamps["i2"] == 1_735_725_600.0
    assert stamps["i3"] == pytest.approx(now - 5)
    assert stamps["i4"] >= now - 1
