"""``POST /v1/identities`` over the memory store and the storefront model: the answer, the errors, and
what reads and ingest of a linked anonymous id do (the same over Redis: ``test_api_identity_e2e_redis``)."""

from __future__ import annotations

import time
from typing import Any

from litestar import Litestar
from litestar.testing import TestClient

from tests.service.api_fixtures import H_ADMIN, H_INGEST, H_READ, event
from tests.storefront import product_id

Client = TestClient[Litestar]
KETTLE, TEAPOT = product_id("Kettle"), product_id("Teapot")


def _link(client: Client, anonymous_id: str, user_id: str, **extra: Any) -> Any:
    return client.post(
        "/v1/identities", json={"anonymous_id": anonymous_id, "user_id": user_id, **extra}, headers=H_INGEST
    )


def _ingest(client: Client, *events: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/events", json={"events": list(events)}, headers=H_INGEST)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_login_carries_the_cart_over_and_the_stage_follows(client: Client) -> None:
    now = time.time()
    _ingest(
        client,
        event("anon-1", KETTLE, "product_view", now - 600, event_id="a-1"),
        event("anon-1", KETTLE, "add_to_cart", now - 300, event_id="a-2"),
        event("user-1", TEAPOT, "content_view", now - 900),
    )
    r = _link(client, "anon-1", "user-1")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["linked"] is True
    assert (body["events_carried"], body["cart_carried"]) == (2, [KETTLE])
    assert (body["stage_before"], body["stage"]["name"]) == ("awareness", "decision")
    assert body["stage"]["signals"][0] == "cart carried over from the anonymous visit (1 item)"
    assert "previous_user_id" not in body
    # linking again changes nothing
    again = _link(client, "anon-1", "user-1").json()
    assert (again["linked"], again["events_carried"], again["cart_carried"]) == (False, 0, [])
    assert again["stage"]["name"] == "decision"
    # later events of the anonymous id are the user's; the answer says where they went
    assert _ingest(client, event("anon-1", TEAPOT, "add_to_cart", now - 60)) == {
        "accepted": 1,
        "duplicates": 0,
        "unknown_items": 0,
        "impressions": 0,
        "redirected": 1,
    }
    # reads of either id serve the user's state
    for visitor in ("anon-1", "user-1"):
        j = client.get(f"/v1/visitors/{visitor}/journey", headers=H_READ).json()
        assert j["visitor_id"] == visitor
        assert j["stage"]["name"] == "decision"
        assert [t["event"] for t in j["touchpoints"]] == [
            "add_to_cart",
            "add_to_cart",
            "product_view",
            "content_view",
        ]
        assert j["cart"] == [TEAPOT, KETTLE]
        recs = client.get(f"/v1/visitors/{visitor}/recommendations?k=10", headers=H_READ).json()
        assert recs["stage"]["name"] == "decision"
        assert KETTLE not in [p["item_id"] for p in recs["products"]]  # in the user's cart
    # erase of the user takes the anonymous id with it
    assert client.delete("/v1/visitors/user-1", headers=H_ADMIN).json()["erased"] is True
    for visitor in ("anon-1", "user-1"):
        assert client.get(f"/v1/visitors/{visitor}/journey", headers=H_READ).json()["touchpoints"] == []


def test_a_carried_history_that_changes_the_stage_says_so(client: Client) -> None:
    now = time.time()
    views = [
        event("anon-h", p, "product_view", now - 100 * i) for i, p in enumerate([KETTLE, TEAPOT, KETTLE])
    ]
    _ingest(client, *views)
    body = _link(client, "anon-h", "user-h").json()
    assert (body["stage_before"], body["stage"]["name"]) == ("awareness", "consideration")
    assert body["stage"]["signals"][0] == "history carried over from the anonymous visit (3 events)"


def test_refused_links_answer_409_or_400(client: Client) -> None:
    _ingest(client, event("anon-r", KETTLE, "product_view"))
    assert _link(client, "anon-r", "user-r").status_code == 200
    r = _link(client, "anon-r", "user-s")
    assert r.status_code == 409
    assert "linked to another user ('user-r'); send force=true" in r.json()["detail"]
    r = _link(client, "anon-r", "user-s", force=True)
    assert r.status_code == 200, r.text
    assert r.json()["previous_user_id"] == "user-r"
    assert _link(client, "user-s", "user-t").status_code == 409  # user-s has linked ids
    r = _link(client, "same", "same")
    assert r.status_code == 400
    assert "user_id" in r.json()["detail"]
    r = client.post("/v1/identities", json={"anonymous_id": "a"}, headers=H_INGEST)
    assert r.status_code == 400
    assert "user_id" in r.json()["detail"]
    r = client.post("/v1/identities", json={"anonymous_id": "a", "user_id": "b"}, headers=H_READ)
    assert r.status_code == 403


def _identities(client: Client, visitor: str, headers: dict[str, str] = H_READ) -> Any:
    r = client.get(f"/v1/visitors/{visitor}/identities", headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


def test_linked_identities_read_from_either_side(client: Client) -> None:
    # nothing linked yet: a stranger and a visitor with history alike
    _ingest(client, event("anon-i1", KETTLE, "product_view"), event("anon-i2", TEAPOT, "product_view"))
    assert _identities(client, "anon-i1") == {"visitor_id": "anon-i1", "user_id": None, "anonymous_ids": []}
    assert _identities(client, "nobody")["anonymous_ids"] == []
    for anon in ("anon-i2", "anon-i1"):
        assert _link(client, anon, "user-i").status_code == 200
    both = ["anon-i1", "anon-i2"]
    assert _identities(client, "user-i") == {"visitor_id": "user-i", "user_id": None, "anonymous_ids": both}
    assert _identities(client, "anon-i2") == {
        "visitor_id": "anon-i2",
        "user_id": "user-i",
        "anonymous_ids": both,
    }
    # a forced move takes the id to the other user, from both sides
    assert _link(client, "anon-i2", "user-j", force=True).status_code == 200
    assert _identities(client, "user-i")["anonymous_ids"] == ["anon-i1"]
    assert _identities(client, "anon-i2") == {
        "visitor_id": "anon-i2",
        "user_id": "user-j",
        "anonymous_ids": ["anon-i2"],
    }
    # the erase of a linked anonymous id removes its link; the user's erase removes the rest
    assert client.delete("/v1/visitors/anon-i2", headers=H_ADMIN).status_code == 200
    assert _identities(client, "user-j")["anonymous_ids"] == []
    assert _identities(client, "anon-i2")["user_id"] is None
    assert client.delete("/v1/visitors/user-i", headers=H_ADMIN).status_code == 200
    assert _identities(client, "anon-i1") == {"visitor_id": "anon-i1", "user_id": None, "anonymous_ids": []}


def test_linked_identities_need_the_read_scope(client: Client) -> None:
    assert client.get("/v1/visitors/a/identities", headers=H_ADMIN).status_code == 403
    assert client.get("/v1/visitors/a/identities").status_code == 401
    assert _identities(client, "a", H_INGEST)["visitor_id"] == "a"  # ingest+read
