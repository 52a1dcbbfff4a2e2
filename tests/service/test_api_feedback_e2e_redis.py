"""The feedback loop end to end: ``journeyrec serve`` (Granian, 2 workers) over a real Redis.

A known set of lists and events over real HTTP gives back the same counts (``feedback_scenario``); the
feedback keys keep to their slots. Needs the test Redis (the ``redis_url`` fixture); its own key prefix,
deleted afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from tests.service import feedback_scenario
from tests.service.api_fixtures import unique_prefix
from tests.service.test_api_e2e_redis import Server

pytestmark = pytest.mark.redis


@pytest.fixture(scope="module")
def prefix(redis_url: str) -> Iterator[str]:
    yield from unique_prefix(redis_url)


@pytest.fixture(scope="module")
def http(models_dir: Path, prefix: str) -> Iterator[httpx.Client]:
    server = Server(models_dir, REDIS_URL, prefix, workers=2)  # lists served by one, events to the other
    try:
        yield server.wait_live()  # its connections close with the server
    finally:
        server.stop()


def test_known_events_give_known_counts_over_redis(http: httpx.Client, prefix: str, redis_url: str) -> None:
    feedback_scenario.run(http)
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        keys = [k.decode() for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
    finally:
        client.close()
    served = [k for k in keys if k.endswith(":served")]
    assert served  # the second visitor's lists (the first was erased)
    assert all(":{v:" in k for k in served)
    counters = [k for k in keys if k.endswith(":c")]
    assert counters
    assert all(":{fb:" in k for k in counters)


def test_a_visitor_who_logs_in_is_one_person_over_redis(http: httpx.Client) -> None:
    feedback_scenario.run_login(http)
