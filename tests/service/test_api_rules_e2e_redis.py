"""End to end over real HTTP: a rule change reaches both workers of ``journeyrec serve --workers 2`` on a
real Redis, and the audit list shows it.

Needs the test Redis (the ``redis_url`` fixture, ``tests/conftest.py``). The run uses its own key prefix
and deletes its keys afterwards. Workers are told apart by the ``pid`` label of the per-worker gauge
``journeyrec_rules_version`` on ``/metrics``.
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.service.api_fixtures import H_ADMIN, H_INGEST, H_READ
from tests.service.test_api_e2e_redis import Server
from tests.storefront import product_id

pytestmark = pytest.mark.redis
_GAUGE = re.compile(r'^journeyrec_rules_version\{pid="(\d+)"\} ([0-9.e+]+)$', re.MULTILINE)
GARDEN_UP_IN_DECISION = {
    "id": "garden-week",
    "stages": ["decision"],
    "condition": {"categories": ["garden"]},
    "action": {"type": "boost", "factor": 10},
}


@pytest.fixture
def server(models_dir: Path, redis_url: str) -> Iterator[Server]:
    prefix = f"jrtest-{uuid.uuid4().hex[:10]}"
    s = Server(models_dir, REDIS_URL, prefix, workers=2, env_extra={"JOURNEYREC_MODEL_POLL_SECONDS": "0"})
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        s.wait_live().close()
        yield s
    finally:
        s.stop()
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
        client.close()


def _fresh(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a new connection (a kept-alive connection would always reach the same worker)."""
    return httpx.request(method, server.base + path, timeout=10, **kw)


def _served_by_worker(server: Server) -> dict[str, float]:
    """pid -> the rules version that worker's live model serves."""
    text = _fresh(server, "GET", "/metrics").text
    return {pid: float(v) for pid, v in _GAUGE.findall(text)}


def test_both_workers_follow_a_rule_change_and_the_audit_shows_it(server: Server) -> None:
    kettle, teapot = product_id("Kettle"), product_id("Teapot")
    walks = {
        "e2e-decider": [(kettle, "product_view"), (teapot, "product_view"), (kettle, "add_to_cart")],
        "e2e-looker": [
            (kettle, "product_view"),
            (teapot, "product_view"),
            (product_id("Mug set"), "product_view"),
        ],
    }
    events = [{"visitor_id": v, "item_id": i, "event": e} for v, walk in walks.items() for i, e in walk]
    assert _fresh(server, "POST", "/v1/events", json={"events": events}, headers=H_INGEST).status_code == 200
    # both workers up with a model (/health/ready on each) before the change
    deadline = time.monotonic() + 60
    while len(_served_by_worker(server)) < 2 and time.monotonic() < deadline:
        _fresh(server, "GET", "/v1/visitors/e2e-decider/recommendations?k=5", headers=H_READ)
        time.sleep(0.05)
    assert set(_served_by_worker(server).values()) == {0.0}

    r = _fresh(
        server, "PUT", "/v1/rules", json={"rules": [GARDEN_UP_IN_DECISION], "version": 0}, headers=H_ADMIN
    )
    assert r.status_code == 200, r.text
    put_at = time.monotonic()
    version = r.json()["change"]["version"]
    assert version == 1

    served: dict[str, float] = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        served = _served_by_worker(server)
        if len(served) == 2 and set(served.values()) == {float(version)}:
            break
        time.sleep(0.02)
    followed_s = time.monotonic() - put_at
    assert len(served) == 2, served
    assert set(served.values()) == {float(version)}, served
    print(f"both workers served rules version {version} {followed_s:.3f} s after the PUT answered")

    # every worker serves it: every answer, whichever worker gives it, carries it and its effect
    for _ in range(10):
        decider = _fresh(server, "GET", "/v1/visitors/e2e-decider/recommendations?k=5", headers=H_READ).json()
        assert decider["stage"]["name"] == "decision"
        assert decider["rules_version"] == version
        boosted = [
            p
            for p in decider["products"]
            if {"rule": "garden-week", "effect": "boosted"} in p.get("rules", [])
        ]
        assert boosted
        assert all(p["item_id"].startswith("p-garden-") for p in boosted)
        looker = _fresh(server, "GET", "/v1/visitors/e2e-looker/recommendations?k=5", headers=H_READ).json()
        assert looker["stage"]["name"] == "consideration"
        assert looker["rules_version"] == version
        assert not any(p.get("rules") for p in looker["products"])  # the rule is scoped to decision

    audit = _fresh(server, "GET", "/v1/rules/audit", headers=H_ADMIN).json()["entries"]
    assert [(e["version"], e["who"], e["added"]) for e in audit] == [(1, "key3", ["garden-week"])]
