"""``GET /v1/analytics/journey`` in process (the embedded stores): scope, defaults, periods, errors, erase,
ingest with journey analytics switched off, and a store outage."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from litestar.testing import TestClient

from models.domain import Event, EventType
from models.journey import DEFAULT_RULES
from models.recommender import Recommender
from service.analytics.factory import retention_of
from service.analytics.memory_store import MemoryAnalyticsStore
from service.analytics.store_base import Snapshot
from service.analytics.tracker import JourneyTracker
from service.store.base import StoreDownError, StoreFailure
from tests.service.api_fixtures import (
    H_ADMIN,
    H_INGEST,
    H_READ,
    api_settings,
    event,
    make_app,
    memory_store,
)


def _walk(client: TestClient, visitor: str) -> None:
    for batch in (
        [event(visitor, "c-1", "content_view")],
        [event(visitor, f"p{i}", "product_view") for i in range(3)],
    ):
        r = client.post("/v1/events", json={"events": batch}, headers=H_INGEST)
        assert r.status_code == 200, r.text


def test_the_route_needs_the_read_scope(client: TestClient) -> None:
    assert client.get("/v1/analytics/journey").status_code == 401
    assert client.get("/v1/analytics/journey", headers=H_READ).status_code == 200


def test_hourly_periods_cover_the_default_day_and_count_the_transition(client: TestClient) -> None:
    _walk(client, "v1")
    body = client.get("/v1/analytics/journey?granularity=hour", headers=H_READ).json()
    assert body["granularity"] == "hour"
    assert len(body["periods"]) in (24, 25)  # the hours overlapping the last 24 hours
    assert sum(p["transitions"] for p in body["periods"]) == 1
    assert body["transitions"] == [{"from": "awareness", "to": "consideration", "count": 1, "rate": 1.0}]
    assert [t["left"] for t in body["time_in_stage"]] == [1, 0, 0, 0, 0]
    assert body["time_in_stage"][0]["median_bucket_low"] == 0.0  # left awareness within a minute
    assert any("bucketed" in n for n in body["notes"])


def test_a_login_that_carries_a_cart_over_is_a_transition(client: TestClient) -> None:
    r = client.post("/v1/events", json={"events": [event("user-l", "p1", "product_view")]}, headers=H_INGEST)
    assert r.status_code == 200, r.text
    r = client.post("/v1/events", json={"events": [event("anon-l", "p2", "add_to_cart")]}, headers=H_INGEST)
    assert r.status_code == 200, r.text
    link = {"anonymous_id": "anon-l", "user_id": "user-l"}
    r = client.post("/v1/identities", json=link, headers=H_INGEST)
    assert r.status_code == 200, r.text
    assert r.json()["stage"]["name"] == "decision"
    body = client.get("/v1/analytics/journey", headers=H_READ).json()
    # the anonymous visitor's own first sighting in decision, then the user's move at the login
    assert body["matrix"]["awareness"]["decision"] == 1
    assert body["first_sightings"] == 2


def test_bad_parameters_are_named(client: TestClient) -> None:
    for query, name in [
        ("granularity=minute", "'granularity'"),
        ("from=yesterday", "'from'"),
        ("from=2026-11-30T10:00Z&to=2026-11-30T09:00Z", "'from'"),
        ("granularity=hour&from=2026-01-01&to=2026-03-01", "'from' and 'to'"),
        ("channel=fax", "'channel'"),
    ]:
        r = client.get(f"/v1/analytics/journey?{query}", headers=H_READ)
        assert r.status_code == 400, (query, r.text)
        assert name in r.json()["detail"], r.text


def test_erase_counts_the_journey_record_and_set_memberships(client: TestClient) -> None:
    _walk(client, "gone")
    r = client.delete("/v1/visitors/gone", headers=H_ADMIN)
    assert r.status_code == 200
    assert r.json()["records_removed"] > 0
    body = client.get("/v1/analytics/journey", headers=H_READ).json()
    assert [f["visitors"] for f in body["funnel"]] == [0, 0, 0, 0, 0]
    assert body["transitions"][0]["count"] == 1  # counters hold no visitor data


def test_switched_off_ingest_counts_nothing(models_dir: Path, recommender: Recommender) -> None:
    app = make_app(models_dir, recommender, journey_analytics=False)
    with TestClient(app) as client:
        _walk(client, "v1")
        body = client.get("/v1/analytics/journey", headers=H_READ).json()
    assert body["transitions"] == []
    assert body["first_sightings"] == 0


async def test_a_store_outage_skips_the_analytics_not_the_ingest() -> None:
    class Down(MemoryAnalyticsStore):
        async def snapshot(self, visitor_ids: Sequence[str]) -> Snapshot:
            raise StoreDownError("the journey analytics store is unavailable", StoreFailure.CONNECTION)

    visitors = memory_store()
    tracker = JourneyTracker(Down(visitors, retention_of(api_settings()), visitor_ttl=60))
    events = [Event(visitor_id="v", item_id="i", event=EventType.PAGE_VIEW, timestamp=1.0)]
    assert await tracker.observe(events, DEFAULT_RULES) == 0
