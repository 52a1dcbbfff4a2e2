"""Journey analytics end to end over real HTTP: ``journeyrec serve`` (Granian, 2 workers) on a real Redis.
A known event sequence goes in through ``POST /v1/events``; ``GET /v1/analytics/journey`` and ``/metrics``
give the exact transition counts back, whichever worker handled each request; erase takes the visitor out.

Needs the test Redis (the ``redis_url`` fixture); the module uses its own key prefix and deletes its keys.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from service.analytics.periods import member_of
from tests.conftest import REDIS_URL
from tests.service import test_api_e2e_redis as e2e
from tests.service.api_fixtures import H_ADMIN, H_INGEST, H_READ
from tests.storefront import product_id

pytestmark = pytest.mark.redis
Server = e2e.Server
# the module-scoped Redis client and key prefix (its keys deleted afterwards) of the other end-to-end tests
redis_client = e2e.redis_client
prefix = e2e.prefix


@pytest.fixture(scope="module")
def http(models_dir: Path, prefix: str) -> Iterator[httpx.Client]:
    # a sweep five times a second: a change by time is counted within the test's patience
    server = Server(
        models_dir, REDIS_URL, prefix, workers=2, env_extra={"JOURNEYREC_JOURNEY_SWEEP_SECONDS": "0.2"}
    )
    try:
        client = server.wait_live()
        yield client
        client.close()
    finally:
        server.stop()


def _send(http: httpx.Client, events: list[dict[str, Any]]) -> None:
    r = http.post("/v1/events", json={"events": events}, headers=H_INGEST)
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == len(events)


def _analytics(http: httpx.Client, **params: str) -> dict[str, Any]:
    now = time.time()
    query = {"from": str(now - 2 * 86_400), "to": str(now + 3_600), "granularity": "day", **params}
    r = http.get("/v1/analytics/journey", params=query, headers=H_READ)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_a_known_sequence_reads_back_exact_counts(
    http: httpx.Client, redis_client: redis.Redis, prefix: str
) -> None:
    run = uuid.uuid4().hex[:6]
    v1, v2, v3 = (f"{name}-{run}" for name in ("buyer", "clicker", "browser"))
    kettle, teapot, toaster = product_id("Kettle"), product_id("Teapot"), product_id("Toaster")
    # each step is one request: a request's events move a visitor at most once (one stage per request)
    _send(
        http,
        [
            {"visitor_id": v1, "item_id": "c-tea-101", "event": "content_view", "channel": "email"},
            {"visitor_id": v2, "item_id": "c-tea-101", "event": "content_view"},
            {"visitor_id": v3, "item_id": "c-tea-101", "event": "content_view"},
        ],
    )
    _send(
        http,
        [
            {"visitor_id": v1, "item_id": item, "event": "product_view", "channel": "email"}
            for item in (kettle, teapot, toaster)
        ]
        + [
            {"visitor_id": v2, "item_id": item, "event": "product_view", "recommendation_id": f"r{run}"}
            for item in (kettle, teapot, toaster)
        ],
    )
    _send(http, [{"visitor_id": v1, "item_id": kettle, "event": "add_to_cart", "channel": "ad"}])
    _send(http, [{"visitor_id": v1, "item_id": kettle, "event": "purchase", "value": 39.0}])

    body = _analytics(http)
    got = {(t["from"], t["to"]): (t["count"], t["rate"]) for t in body["transitions"]}
    assert got == {
        ("awareness", "consideration"): (2, 1.0),
        ("consideration", "decision"): (1, 1.0),
        ("decision", "retention"): (1, 1.0),
    }
    assert body["matrix"]["awareness"]["consideration"] == 2
    assert body["first_sightings"] == 3
    assert [(f["stage"], f["visitors"]) for f in body["funnel"]] == [
        ("awareness", 3),
        ("consideration", 2),
        ("decision", 1),
        ("retention", 1),
        ("advocacy", 0),
    ]
    assert [f["drop_off"] for f in body["funnel"]][1:4] == pytest.approx([1 / 3, 0.5, 0.0])
    impact = body["recommendation_impact"]
    assert (impact["basis"], impact["causal"]) == ("descriptive", False)
    aware = impact["stages"][0]
    assert aware["clicked"] == {"visitors": 1, "advanced": 1, "advance_rate": 1.0}
    assert aware["not_clicked"] == {"visitors": 2, "advanced": 1, "advance_rate": 0.5}
    assert sum(p["visitors"]["retention"] for p in body["periods"]) == 1
    # by channel: the email transition only, and the visitors who came through email
    email = _analytics(http, channel="email")
    assert [(t["from"], t["to"], t["count"]) for t in email["transitions"]] == [
        ("awareness", "consideration", 1)
    ]
    assert [f["visitors"] for f in email["funnel"]] == [1, 1, 1, 1, 0]
    # the Prometheus counter adds up both workers
    text = ""
    for _ in range(20):  # the multiprocess files of both workers are read on each scrape
        text = http.get("/metrics").text
        if 'journeyrec_stage_transitions_total{from="awareness",to="consideration"} 2.0' in text:
            break
        time.sleep(0.1)
    assert 'journeyrec_stage_transitions_total{from="awareness",to="consideration"} 2.0' in text
    assert 'journeyrec_stage_transitions_total{from="decision",to="retention"} 1.0' in text

    # erase takes the visitor's pseudonym out of every rollup set; the counters stay
    member = member_of(v1).encode()
    sets = [
        k
        for k in redis_client.scan_iter(match=f"{prefix}:{{jr:*", count=1000)
        if redis_client.type(k) == b"set"
    ]
    assert any(redis_client.sismember(k, member) for k in sets)
    assert http.delete(f"/v1/visitors/{v1}", headers=H_ADMIN).status_code == 200
    assert not any(redis_client.sismember(k, member) for k in sets)
    after = _analytics(http)
    assert [f["visitors"] for f in after["funnel"]] == [2, 1, 0, 0, 0]
    assert after["transitions"] == body["transitions"]


def test_bad_queries_name_the_parameter(http: httpx.Client) -> None:
    cases = {
        "granularity": {"granularity": "week"},
        "'from'": {"from": "2026-11-30", "to": "2026-11-29"},
        "from' and 'to'": {"from": "2020-01-01", "to": "2026-01-01"},
        "'channel'": {"channel": "carrier-pigeon"},
    }
    for name, params in cases.items():
        r = http.get("/v1/analytics/journey", params=params, headers=H_READ)
        assert r.status_code == 400, (name, r.text)
        assert name in r.text, r.text


def test_an_abandoned_cart_is_counted_when_it_expires_without_a_return(http: httpx.Client) -> None:
    """The cart expires (``cart_ttl_hours`` after the add) seconds after the events are sent; no request
    about the visitor follows, and the sweep counts it as an abandoned cart, dated at the expiry."""
    visitor, item = f"sweep-{uuid.uuid4().hex[:8]}", product_id("Kettle")
    before = _analytics(http)["by_time"]["abandoned_carts"]
    added = time.time() - 72 * 3_600 + 4.0  # the demo model's cart_ttl_hours: 72
    _send(
        http,
        [
            {"visitor_id": visitor, "item_id": item, "event": "product_view", "timestamp": added - 60},
            {"visitor_id": visitor, "item_id": item, "event": "add_to_cart", "timestamp": added},
        ],
    )
    deadline = time.monotonic() + 30
    while (got := _analytics(http)["by_time"])["abandoned_carts"] == before:
        assert time.monotonic() < deadline, "the expired cart was never counted"
        time.sleep(0.2)
    assert got["abandoned_carts"] == before + 1
    assert {"from": "decision", "to": "awareness"}.items() <= got["transitions"][0].items()
    day = next(p for p in _analytics(http)["periods"] if p["abandoned_carts"])
    assert day["start"][:10] == time.strftime("%Y-%m-%d", time.gmtime(added + 72 * 3_600))
