"""A known set of lists and events sent over HTTP, and the summary counts they must produce.

Shared by the in-process test (Litestar TestClient, memory store) and the end-to-end test (``journeyrec
serve`` over Redis). Lists are counted off the request path, so the scenario waits until the summary shows
them before it sends the events that answer them.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Protocol

from tests.service.api_fixtures import H_ADMIN, H_INGEST, H_READ


class Http(Protocol):
    def get(self, url: str, **kw: Any) -> Any: ...
    def post(self, url: str, **kw: Any) -> Any: ...
    def delete(self, url: str, **kw: Any) -> Any: ...


COUNTS = ("lists", "impressions", "clicks", "carts", "purchases", "revenue")


def totals(http: Http) -> dict[str, dict[str, float]]:
    r = http.get("/v1/feedback/summary", headers=H_READ)
    assert r.status_code == 200, r.text
    return {row["stage"]: {k: row[k] for k in COUNTS} for row in r.json()["totals"]}


def change(
    before: dict[str, dict[str, float]], after: dict[str, dict[str, float]]
) -> dict[str, dict[str, float]]:
    out = {}
    for stage, counts in after.items():
        old = before.get(stage, dict.fromkeys(COUNTS, 0))
        diff = {k: round(counts[k] - old[k], 6) for k in COUNTS}
        if any(diff.values()):
            out[stage] = diff
    return out


def wait_for_lists(http: Http, before: dict[str, dict[str, float]], expected: dict[str, int]) -> None:
    for _ in range(500):
        now = change(before, totals(http))
        if {s: int(c["lists"]) for s, c in now.items() if c["lists"]} == expected:
            return
        time.sleep(0.02)
    raise AssertionError(f"lists were not counted: {change(before, totals(http))}, expected {expected}")


def ingest(http: Http, events: list[dict[str, Any]]) -> dict[str, Any]:
    r = http.post("/v1/events", json={"events": events}, headers=H_INGEST)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def run(http: Http) -> None:
    """Two visitors, two lists, a known set of events: the summary changes by exactly what was sent."""
    tag = uuid.uuid4().hex[:8]
    v1, v2 = f"fb1-{tag}", f"fb2-{tag}"
    before = totals(http)
    lists = {}
    for visitor, stage in ((v1, "awareness"), (v2, "decision")):
        r = http.get(f"/v1/visitors/{visitor}/recommendations?k=3&n_content=0&stage={stage}", headers=H_READ)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body["recommendation_id"]) == 26
        lists[visitor] = (body["recommendation_id"], [p["item_id"] for p in body["products"]])
    (rid1, items1), (rid2, items2) = lists[v1], lists[v2]
    assert rid1 < rid2  # time-ordered
    wait_for_lists(http, before, {"awareness": 1, "decision": 1})

    impressions = [
        {
            "visitor_id": v,
            "item_id": i,
            "event": "impression",
            "recommendation_id": rid,
            "event_id": f"{v}-i-{i}",
        }
        for v, (rid, items) in lists.items()
        for i in items
    ]
    answer = ingest(http, impressions)
    assert answer == {"accepted": 0, "duplicates": 0, "unknown_items": 0, "impressions": 6}
    click = {
        "visitor_id": v1,
        "item_id": items1[0],
        "event": "product_view",
        "recommendation_id": rid1,
        "event_id": f"{v1}-click",
    }
    answer = ingest(
        http,
        [
            click,
            {"visitor_id": v1, "item_id": items1[0], "event": "add_to_cart", "recommendation_id": rid1},
            # no recommendation_id: credited by last touch (the click above)
            {"visitor_id": v1, "item_id": items1[0], "event": "purchase", "value": 10.0},
            {
                "visitor_id": v2,
                "item_id": items2[1],
                "event": "purchase",
                "value": 4.0,
                "recommendation_id": rid2,
            },
            # an id no list has: unattributed, not an error
            {
                "visitor_id": v2,
                "item_id": items2[0],
                "event": "product_view",
                "recommendation_id": "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            },
        ],
    )
    assert answer["accepted"] == 5
    assert answer["impressions"] == 0
    again = ingest(http, [click, *impressions[:2]])  # retries count nothing twice
    assert again == {"accepted": 0, "duplicates": 3, "unknown_items": 0, "impressions": 0}
    assert change(before, totals(http)) == {
        "awareness": {"lists": 1, "impressions": 3, "clicks": 1, "carts": 1, "purchases": 1, "revenue": 10.0},
        "decision": {"lists": 1, "impressions": 3, "clicks": 0, "carts": 0, "purchases": 1, "revenue": 4.0},
    }
    r = http.get("/v1/feedback/summary", headers=H_READ)
    awareness = next(row for row in r.json()["totals"] if row["stage"] == "awareness")
    assert awareness["ctr"] > 0

    # impressions are not journey history
    journey = http.get(f"/v1/visitors/{v1}/journey?limit=50", headers=H_READ).json()
    assert {t["event"] for t in journey["touchpoints"]} == {"product_view", "add_to_cart", "purchase"}

    # erase forgets the served lists: a later click on the erased visitor's list is not credited
    assert http.delete(f"/v1/visitors/{v1}", headers=H_ADMIN).status_code == 200
    mid = totals(http)
    ingest(http, [{**click, "event_id": f"{v1}-click-after-erase"}])
    assert change(mid, totals(http)) == {}


def _results_all(http: Http, experiment: str) -> dict[str, dict[str, float]]:
    """variant -> the experiment's ``all``-stage counts (visitors, lists, impressions, clicks)."""
    r = http.get(f"/v1/experiments/{experiment}/results", headers=H_READ)
    assert r.status_code == 200, r.text
    keys = ("visitors", "lists", "impressions", "clicks")
    return {c["variant"]: {k: c[k] for k in keys} for c in r.json()["cells"] if c["stage"] == "all"}


def _list_of(http: Http, visitor: str, experiment: str) -> tuple[str, list[str]]:
    """A home list of ``visitor`` that names ``experiment`` (waiting for every worker to run it)."""
    for _ in range(500):
        url = f"/v1/visitors/{visitor}/recommendations?k=3&n_content=0&stage=awareness"
        r = http.get(url, headers=H_READ)
        assert r.status_code == 200, r.text
        body = r.json()
        if body.get("experiment") == experiment:
            return body["recommendation_id"], [p["item_id"] for p in body["products"]]
        time.sleep(0.02)
    raise AssertionError(f"no worker served experiment {experiment}")


def _wait_results(http: Http, experiment: str, expected: dict[str, float]) -> dict[str, dict[str, float]]:
    for _ in range(500):
        now = _results_all(http, experiment)
        if [{k: c[k] for k in expected} for c in now.values()] == [expected]:
            return now
        time.sleep(0.02)
    raise AssertionError(f"results {_results_all(http, experiment)}, expected one variant with {expected}")


def run_login(http: Http) -> None:
    """A visitor served a list, logged in, served another, shown and clicking both (as the anonymous id
    and as the user): one person in the experiment's results, every impression and click credited; the
    user's erase forgets both lists."""
    tag = uuid.uuid4().hex[:8]
    experiment, anon, user = f"login{tag}", f"anon-{tag}", f"user-{tag}"
    doc = {
        "placements": ["home"],
        "variants": [{"name": "control", "control": True}, {"name": "same", "weight": 1e-6}],
    }
    assert http.put(f"/v1/experiments/{experiment}", json=doc, headers=H_ADMIN).status_code == 200
    assert http.post(f"/v1/experiments/{experiment}/start", headers=H_ADMIN).status_code == 200
    try:
        rid1, items1 = _list_of(http, anon, experiment)
        _wait_results(http, experiment, {"visitors": 1, "lists": 1})
        ingest(http, [{"visitor_id": anon, "item_id": items1[0], "event": "product_view"}])
        r = http.post("/v1/identities", json={"anonymous_id": anon, "user_id": user}, headers=H_INGEST)
        assert r.status_code == 200, r.text
        rid2, items2 = _list_of(http, user, experiment)
        _wait_results(http, experiment, {"visitors": 1, "lists": 2})

        def shown(visitor: str, rid: str, items: list[str]) -> list[dict[str, Any]]:
            return [
                {"visitor_id": visitor, "item_id": i, "event": "impression", "recommendation_id": rid}
                for i in items
            ]

        # impressions alone (never stored): the user's list as the user, the first list as the anonymous id
        assert ingest(http, shown(user, rid2, items2))["impressions"] == 3
        assert ingest(http, shown(anon, rid1, items1))["impressions"] == 3
        click = {"visitor_id": user, "item_id": items2[1], "event": "product_view", "recommendation_id": rid2}
        ingest(http, [click])
        after = _wait_results(http, experiment, {"visitors": 1, "lists": 2, "impressions": 6, "clicks": 1})
        assert len(after) == 1

        assert http.delete(f"/v1/visitors/{user}", headers=H_ADMIN).status_code == 200
        ingest(http, [{**click, "item_id": items2[2]}])  # the list is gone: not credited
        assert _results_all(http, experiment) == after
    finally:
        http.post(f"/v1/experiments/{experiment}/stop", headers=H_ADMIN)
