"""``journeyrec simulate-traffic`` against the real server (Granian, Redis) serving a model trained on the
simulator's own catalog: the server's state and counters reflect the traffic the command reports.

Needs the test Redis (the ``redis_url`` fixture); every run uses its own key prefix and deletes its keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.service.api_fixtures import H_READ, INGEST_KEY
from tests.service.test_api_e2e_redis import Server, simulate_traffic
from training.loaders import read_events
from training.pipeline import config_for, train_and_publish
from training.simulate import SimulationConfig, write_simulation

pytestmark = pytest.mark.redis
SHOP = SimulationConfig(visitors=800, items=200, days=60, seed=5)
VISITORS = 300


@pytest.fixture(scope="module")
def sim_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained on ``journeyrec simulate --items 200 --seed 5``: the catalog the traffic knows."""
    data, models = tmp_path_factory.mktemp("sim"), tmp_path_factory.mktemp("sim-models")
    write_simulation(SHOP, data)
    log, _ = read_events([str(data / "events.csv")], catalog=str(data / "catalog.csv"))
    cfg = config_for(None, seed=5, threads=1)
    factors = msgspec.structs.replace(cfg.factors, no_components=8, epochs=3, warm_epochs=1)
    train_and_publish(log, models, msgspec.structs.replace(cfg, factors=factors))
    return models


@pytest.fixture(scope="module")
def served(
    sim_models: Path, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, dict[str, Any]]]:
    """The server, after simulate-traffic ran against it; and the command's JSON summary."""
    prefix = f"jrtest-{uuid.uuid4().hex[:10]}"
    server = Server(sim_models, REDIS_URL, prefix)
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        server.wait_live().close()
        out = tmp_path_factory.mktemp("traffic") / "summary.json"
        stdout, summary = simulate_traffic(
            server.base,
            INGEST_KEY,
            out,
            visitors=VISITORS,
            concurrency=8,
            seed=3,
            items=SHOP.items,
            shop_seed=SHOP.seed,
        )
        assert "requests/s" in stdout
        yield server, summary
    finally:
        server.stop()
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)
        client.close()


def _metric(server: Server, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    text = httpx.get(f"{server.base}/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_the_command_reports_every_visitor_and_no_error(served: tuple[Server, dict[str, Any]]) -> None:
    _, s = served
    assert s["visitors"] == VISITORS
    assert s["sessions"] >= VISITORS
    assert s["lists"] == s["sessions"] == s["requests"]["recommendations"]
    assert s["errors"] == {}
    assert s["unknown_items_shown"] == 0  # the served model knows the simulator's catalog
    assert s["events_duplicate"] == 0
    # a server with feedback counters counts impressions apart from the events it stores
    assert s["events_accepted"] + s["impressions_counted"] == sum(s["events"].values())
    clicks = sum(o["clicks"] + o["content_clicks"] for o in s["outcomes"])
    assert clicks > 0
    assert s["events"]["purchase"] > 0
    if s["lists_without_recommendation_id"] == 0:  # a server with list ids: one impression per shown item
        assert s["events"]["impression"] == sum(o["impressions"] for o in s["outcomes"]) > 0
    else:
        assert "impression" not in s["events"]
    assert s["logins"] + s["logins_unsupported"] > 0
    if s["logins_unsupported"] == 0:  # a server with /v1/identities: the visitors logged in
        assert s["logins"] > 0


def test_metrics_count_what_was_sent(served: tuple[Server, dict[str, Any]]) -> None:
    server, s = served
    assert _metric(server, "journeyrec_events_total", outcome="accepted") == s["events_accepted"]
    assert _metric(server, "journeyrec_recommendations_total", endpoint="recommendations") == s["lists"]


def test_the_visitors_exist_on_the_server(served: tuple[Server, dict[str, Any]]) -> None:
    server, s = served
    prefix = s["id_prefix"]
    with httpx.Client(base_url=server.base, headers=H_READ, timeout=10) as http:
        found = 0
        for i in range(30):
            touchpoints = 0
            for vid in (f"{prefix}-a{i}", f"{prefix}-u{i}"):  # anonymous, or the user it logged in as
                r = http.get(f"/v1/visitors/{vid}/journey", params={"limit": 500})
                assert r.status_code == 200
                touchpoints += len(r.json()["touchpoints"])
            found += touchpoints > 0
    assert found == 30  # every visitor has at least one session, so at least one event


def test_the_feedback_counters_count_what_the_visitors_did(served: tuple[Server, dict[str, Any]]) -> None:
    """Where the server counts feedback (``GET /v1/feedback/summary``): the lists, impressions, product
    clicks and carts it credited to lists are exactly what the simulator sent with list ids; purchases at
    least those (a purchase without an id may be credited by last touch)."""
    server, s = served
    r = httpx.get(f"{server.base}/v1/feedback/summary", headers=H_READ, timeout=10)
    if r.status_code == 404:
        pytest.skip("this server has no feedback counters")
    assert r.status_code == 200
    totals = r.json()["totals"]
    got = {m: sum(row[m] for row in totals) for m in ("lists", "impressions", "clicks", "carts", "purchases")}
    sent = {
        m: sum(o[m] for o in s["outcomes"]) for m in ("lists", "impressions", "clicks", "carts", "purchases")
    }
    assert got["lists"] == s["lists"] == sent["lists"]
    assert got["impressions"] == sent["impressions"] == s["events"]["impression"]
    assert got["clicks"] == sent["clicks"]
    assert got["carts"] == sent["carts"]
    assert got["purchases"] >= sent["purchases"]
