"""End to end over real HTTP and a real Redis: a visitor browses anonymously, fills a cart, logs in; the
pre-login cart and history carry over to the user, the stage follows, later events of the cookie reach the
user, and erasing the user leaves no key or value naming either id.

Needs the test Redis (the ``redis_url`` fixture, ``tests/conftest.py``). The run uses its own key prefix
and deletes its keys afterwards.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
import redis

from tests.service import test_api_e2e_redis as e2e
from tests.service.api_fixtures import H_ADMIN, H_INGEST, H_READ
from tests.storefront import product_id

pytestmark = pytest.mark.redis
DAY = 86_400.0


# the server of ``test_api_e2e_redis`` (one per module: this one runs its own, with its own key prefix)
redis_client, prefix, http = e2e.redis_client, e2e.prefix, e2e.http


def _ingest(http: httpx.Client, events: list[dict[str, Any]]) -> dict[str, Any]:
    r = http.post("/v1/events", json={"events": events}, headers=H_INGEST)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _journey(http: httpx.Client, visitor: str) -> dict[str, Any]:
    r = http.get(f"/v1/visitors/{visitor}/journey", headers=H_READ)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_login_carries_the_anonymous_visit_over_and_erase_cascades(
    http: httpx.Client, redis_client: redis.Redis, prefix: str
) -> None:
    run = uuid.uuid4().hex[:8]
    anon, user, bystander = f"cookie-{run}", f"user-{run}", f"other-{run}"
    kettle, teapot, toaster = product_id("Kettle"), product_id("Teapot"), product_id("Toaster")
    now = time.time()
    # the user bought a toaster a week ago (a customer to retain); the cookie browsed kettles and added one
    _ingest(
        http,
        [
            {"visitor_id": user, "item_id": toaster, "event": "purchase", "timestamp": now - 7 * DAY},
            {"visitor_id": anon, "item_id": "c-tea-101", "event": "content_view", "timestamp": now - 900},
            {"visitor_id": anon, "item_id": kettle, "event": "product_view", "timestamp": now - 600},
            {"visitor_id": anon, "item_id": teapot, "event": "product_view", "timestamp": now - 500},
            {"visitor_id": anon, "item_id": kettle, "event": "add_to_cart", "timestamp": now - 300},
            {"visitor_id": bystander, "item_id": kettle, "event": "product_view"},
        ],
    )
    assert _journey(http, user)["stage"]["name"] == "retention"
    assert _journey(http, anon)["stage"]["name"] == "decision"

    r = http.post("/v1/identities", json={"anonymous_id": anon, "user_id": user}, headers=H_INGEST)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["linked"] is True
    assert (body["events_carried"], body["cart_carried"]) == (4, [kettle])
    assert (body["stage_before"], body["stage"]["name"]) == ("retention", "decision")
    assert body["stage"]["signals"][0] == "cart carried over from the anonymous visit (1 item)"

    # the user's journey holds the pre-login history and cart, in time order (newest first)
    j = _journey(http, user)
    assert [(t["item_id"], t["event"]) for t in j["touchpoints"]] == [
        (kettle, "add_to_cart"),
        (teapot, "product_view"),
        (kettle, "product_view"),
        ("c-tea-101", "content_view"),
        (toaster, "purchase"),
    ]
    assert (j["cart"], j["purchases"]) == ([kettle], [toaster])
    # the cookie keeps working after the login: its events and reads are the user's
    out = _ingest(
        http, [{"visitor_id": anon, "item_id": teapot, "event": "add_to_cart", "event_id": f"{run}-1"}]
    )
    assert out == {"accepted": 1, "duplicates": 0, "unknown_items": 0, "impressions": 0, "redirected": 1}
    assert _journey(http, anon)["cart"] == _journey(http, user)["cart"] == [teapot, kettle]
    for visitor in (anon, user):
        recs = http.get(f"/v1/visitors/{visitor}/recommendations?k=8", headers=H_READ).json()
        assert recs["stage"]["name"] == "decision"
        assert not {kettle, teapot, toaster} & {p["item_id"] for p in recs["products"]}
    again = http.post("/v1/identities", json={"anonymous_id": anon, "user_id": user}, headers=H_INGEST).json()
    assert (again["linked"], again["events_carried"]) == (False, 0)

    def mentions(v: str) -> list[bytes]:
        needles = (v.encode(), v.encode().hex().encode())
        keys = list(redis_client.scan_iter(match=f"{prefix}:*", count=1000))
        return [k for k in keys if any(n in k or n in e2e._dump(redis_client, k) for n in needles)]

    assert mentions(anon)
    assert mentions(user)
    r = http.delete(f"/v1/visitors/{user}", headers=H_ADMIN)
    assert r.status_code == 200, r.text
    assert mentions(user) == []
    assert mentions(anon) == []
    assert mentions(bystander)
    assert _journey(http, anon)["touchpoints"] == []


def _identities(http: httpx.Client, visitor: str) -> dict[str, Any]:
    r = http.get(f"/v1/visitors/{visitor}/identities", headers=H_READ)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_linked_identities_over_redis(http: httpx.Client) -> None:
    run = uuid.uuid4().hex[:8]
    anons, user, other = [f"cookie-{run}-{i}" for i in (1, 2)], f"user-{run}", f"other-{run}"
    kettle = product_id("Kettle")
    _ingest(http, [{"visitor_id": a, "item_id": kettle, "event": "product_view"} for a in anons])
    assert _identities(http, anons[0]) == {"visitor_id": anons[0], "user_id": None, "anonymous_ids": []}
    for anon in anons:
        r = http.post("/v1/identities", json={"anonymous_id": anon, "user_id": user}, headers=H_INGEST)
        assert r.status_code == 200, r.text
    assert _identities(http, user) == {"visitor_id": user, "user_id": None, "anonymous_ids": anons}
    assert _identities(http, anons[1]) == {"visitor_id": anons[1], "user_id": user, "anonymous_ids": anons}
    moved = {"anonymous_id": anons[1], "user_id": other, "force": True}
    assert http.post("/v1/identities", json=moved, headers=H_INGEST).status_code == 200
    assert _identities(http, user)["anonymous_ids"] == anons[:1]
    assert _identities(http, anons[1]) == {
        "visitor_id": anons[1],
        "user_id": other,
        "anonymous_ids": anons[1:],
    }
    for gone in (other, user):
        assert http.delete(f"/v1/visitors/{gone}", headers=H_ADMIN).status_code == 200
    for visitor in (*anons, user, other):
        assert _identities(http, visitor) == {"visitor_id": visitor, "user_id": None, "anonymous_ids": []}
