"""Recommendation ids, impressions and attribution over HTTP (Litestar TestClient, memory stores)."""

from __future__ import annotations

import json
import time
import uuid

from litestar import Litestar
from litestar.testing import TestClient

from tests.service import feedback_scenario
from tests.service.api_fixtures import H_ADMIN, H_INGEST, H_READ, event
from tests.storefront import product_id

Client = TestClient[Litestar]


def test_known_events_give_known_counts(client: Client) -> None:
    feedback_scenario.run(client)


def test_every_list_answer_carries_a_recommendation_id(client: Client) -> None:
    kettle = product_id("Kettle")
    answers = [
        client.get("/v1/visitors/v/recommendations?k=3", headers=H_READ).json(),
        client.get("/v1/visitors/v/recommendations?k=3", headers=H_READ).json(),
        client.get(f"/v1/items/{kettle}/similar?k=3", headers=H_READ).json(),
        client.get(f"/v1/items/complements?item_id={kettle}&k=3", headers=H_READ).json(),
        client.get("/v1/visitors/v/retargeting?k=3", headers=H_READ).json(),
    ]
    r = client.post("/v1/retargeting/export", json={"visitor_ids": ["a", "b"], "k": 2}, headers=H_READ)
    answers += [json.loads(line) for line in r.text.splitlines()]
    rids = [a["recommendation_id"] for a in answers]
    assert all(len(rid) == 26 for rid in rids)
    assert rids == sorted(rids)
    assert len(set(rids)) == len(rids)
    # no experiment applied: experiment and variant are left out
    assert all("experiment" not in a and "variant" not in a for a in answers)


def test_an_impression_needs_a_recommendation_id(client: Client) -> None:
    one = {"visitor_id": "v", "item_id": "x", "event": "impression"}
    r = client.post("/v1/events", json=one, headers=H_INGEST)
    assert r.status_code == 400
    assert "'recommendation_id'" in r.text
    ok = {**one, "recommendation_id": "r"}
    r = client.post("/v1/events", json={"events": [ok, one]}, headers=H_INGEST)
    assert r.status_code == 400
    assert "events[1].recommendation_id" in r.text


def test_attribution_is_counted_in_prometheus(client: Client) -> None:
    feedback_scenario.run(client)
    text = client.get("/metrics").text
    assert 'journeyrec_attributed_events_total{event="purchase",method="last_touch"}' in text
    assert 'journeyrec_attributed_events_total{event="product_view",method="unattributed"}' in text


def test_summary_checks_its_days(client: Client) -> None:
    r = client.get("/v1/feedback/summary?from=2025-01-02&to=2025-01-01", headers=H_READ)
    assert r.status_code == 400
    assert "after" in r.text
    r = client.get("/v1/feedback/summary?from=2025-02-30", headers=H_READ)
    assert r.status_code == 400
    assert "'from'" in r.text
    r = client.get("/v1/feedback/summary?from=2025-01-01&to=2025-01-31", headers=H_READ)
    assert r.json() == {"first_day": "2025-01-01", "last_day": "2025-01-31", "rows": [], "totals": []}


def test_a_visitor_who_logs_in_is_one_person_in_the_results(client: Client) -> None:
    feedback_scenario.run_login(client)


def test_a_preview_is_stamped_but_neither_logged_nor_counted(client: Client) -> None:
    before = feedback_scenario.totals(client)
    url = "/v1/visitors/pv/recommendations?k=3&n_content=0&stage=awareness"
    preview = client.get(f"{url}&preview=true", headers=H_READ).json()
    assert len(preview["recommendation_id"]) == 26
    shown = client.get(url, headers=H_READ).json()
    feedback_scenario.wait_for_lists(client, before, {"awareness": 1})  # the list shown only
    click = {"visitor_id": "pv", "item_id": preview["products"][0]["item_id"], "event": "product_view"}
    answer = feedback_scenario.ingest(client, [{**click, "recommendation_id": preview["recommendation_id"]}])
    assert answer["accepted"] == 1
    assert shown["recommendation_id"] != preview["recommendation_id"]
    assert feedback_scenario.change(before, feedback_scenario.totals(client))["awareness"]["clicks"] == 0


def test_an_item_list_asked_for_a_visitor_is_logged_under_their_stage(client: Client) -> None:
    """Similar items and complements asked with a ``visitor_id`` are kept like a page's list, under the
    visitor's stage at that moment, so a click carrying their id is credited; without a visitor they are
    stamped only."""
    kettle = product_id("Kettle")
    visitor = f"il-{uuid.uuid4().hex[:8]}"
    feedback_scenario.ingest(client, [event(visitor, kettle, "add_to_cart")])
    stage = client.get(f"/v1/visitors/{visitor}/recommendations?preview=true", headers=H_READ).json()[
        "stage"
    ]["name"]
    before = feedback_scenario.totals(client)
    similar = client.get(f"/v1/items/{kettle}/similar?k=3&visitor_id={visitor}", headers=H_READ).json()
    url = f"/v1/items/complements?item_id={kettle}&k=3&visitor_id={visitor}"
    complements = client.get(url, headers=H_READ).json()
    anonymous = client.get(f"/v1/items/{kettle}/similar?k=3", headers=H_READ).json()
    feedback_scenario.wait_for_lists(client, before, {stage: 2})
    clicks = [
        event(
            visitor,
            answer["items"][0]["item_id"],
            "product_view",
            recommendation_id=answer["recommendation_id"],
        )
        for answer in (similar, complements, anonymous)
    ]
    assert feedback_scenario.ingest(client, clicks)["accepted"] == 3
    counted = feedback_scenario.change(before, feedback_scenario.totals(client))
    # the anonymous list was never kept: its click is unattributed
    assert {s: (c["lists"], c["clicks"]) for s, c in counted.items()} == {stage: (2, 2)}


def test_a_deleted_experiment_takes_its_results_and_its_id_stays_retired(client: Client) -> None:
    """Recreating a deleted experiment under its id would count its lists' late clicks as the new one's."""
    doc = {"placements": ["home"], "variants": [{"name": "control", "control": True}, {"name": "b"}]}
    tag = uuid.uuid4().hex[:8]
    ran, draft = f"ran{tag}", f"draft{tag}"
    for experiment in (ran, draft):
        assert client.put(f"/v1/experiments/{experiment}", json=doc, headers=H_ADMIN).status_code == 200
    assert client.post(f"/v1/experiments/{ran}/start", headers=H_ADMIN).status_code == 200
    rid, items = feedback_scenario._list_of(client, f"v-{tag}", ran)
    feedback_scenario._wait_results(client, ran, {"lists": 1})
    r = client.delete(f"/v1/experiments/{ran}", headers=H_ADMIN)
    assert r.status_code == 409
    assert "running: stop it first" in r.text
    assert client.post(f"/v1/experiments/{ran}/stop", headers=H_ADMIN).status_code == 200
    r = client.delete(f"/v1/experiments/{ran}", headers=H_ADMIN)
    assert r.status_code == 200, r.text
    free_at = r.json()["id_free_at"]
    assert free_at > time.time() + 6 * 86_400  # the 7-day click window
    assert client.get(f"/v1/experiments/{ran}/results", headers=H_READ).status_code == 404
    r = client.put(f"/v1/experiments/{ran}", json=doc, headers=H_ADMIN)
    assert r.status_code == 409
    assert f"experiment '{ran}' was deleted after it ran" in r.text
    assert "choose another id" in r.text
    # a late click on its list is still the list's, and counted in the summary only
    before = feedback_scenario.totals(client)
    click = event(f"v-{tag}", items[0], "product_view", recommendation_id=rid)
    assert feedback_scenario.ingest(client, [click])["accepted"] == 1
    assert feedback_scenario.change(before, feedback_scenario.totals(client))["awareness"]["clicks"] == 1
    # a draft never served a list: its id is free at once
    r = client.delete(f"/v1/experiments/{draft}", headers=H_ADMIN)
    assert r.json() == {"id": draft, "deleted": True, "id_free_at": None}
    assert client.put(f"/v1/experiments/{draft}", json=doc, headers=H_ADMIN).status_code == 200
