"""End to end over real HTTP: an experiment started through one worker of ``journeyrec serve --workers 2``
on a real Redis is served by both within a second, every answer names the variant ``assign`` gives, and a
restarted server (the same Redis) assigns everyone the same way.

Needs the test Redis (the ``redis_url`` fixture, ``tests/conftest.py``). The run uses its own key prefix
and deletes its keys afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from models.experiments import assign
from tests.conftest import REDIS_URL
from tests.service.api_fixtures import H_ADMIN, H_READ, unique_prefix
from tests.service.test_api_e2e_redis import Server

pytestmark = pytest.mark.redis
ARMS = [("aware", 1.0), ("agnostic", 1.0), ("popular", 2.0)]
DOC = {
    "placements": ["home"],
    "salt": "e2e",
    "variants": [
        {"name": "aware", "control": True},
        {"name": "agnostic", "blend": "stage_agnostic"},
        {"name": "popular", "strategy": "popular", "weight": 2},
    ],
}


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    yield from unique_prefix(redis_url)


def _start(models_dir: Path, prefix: str) -> Server:
    s = Server(models_dir, REDIS_URL, prefix, workers=2, env_extra={"JOURNEYREC_MODEL_POLL_SECONDS": "0"})
    s.wait_live().close()
    return s


def _variant(server: Server, visitor: str) -> str | None:
    """The variant one answer names, on a new connection (a kept-alive one always reaches one worker)."""
    r = httpx.get(f"{server.base}/v1/visitors/{visitor}/recommendations", headers=H_READ, timeout=10)
    assert r.status_code == 200, r.text
    return r.json().get("variant")


def test_both_workers_serve_the_same_assignment_and_a_restart_keeps_it(models_dir: Path, prefix: str) -> None:
    people = [f"e2e-visitor-{i}" for i in range(60)]
    server = _start(models_dir, prefix)
    try:
        r = httpx.put(f"{server.base}/v1/experiments/e2e", json=DOC, headers=H_ADMIN, timeout=30)
        assert r.status_code == 200, r.text
        httpx.post(f"{server.base}/v1/experiments/e2e/start", headers=H_ADMIN, timeout=10).raise_for_status()
        started = time.monotonic()
        # both workers: from some moment on, 30 consecutive answers on new connections name the experiment
        streak, since = 0, 0.0
        while streak < 30:
            assert time.monotonic() - started < 30, "the experiment did not reach every worker"
            asked = time.monotonic()
            if _variant(server, people[streak % len(people)]) is None:
                streak = 0
            else:
                since = asked if streak == 0 else since
                streak += 1
        print(f"every worker served the experiment from {since - started:.2f} s after the start answered")
        first = {p: _variant(server, p) for p in people}
        assert first == {p: assign("e2e", "e2e", p, ARMS, 1.0, 0.0) for p in people}
        assert set(first.values()) == {"aware", "agnostic", "popular"}
    finally:
        server.stop()
    restarted = _start(models_dir, prefix)
    try:
        deadline = time.monotonic() + 30
        while _variant(restarted, people[0]) is None:
            assert time.monotonic() < deadline
        assert {p: _variant(restarted, p) for p in people} == first
        httpx.post(
            f"{restarted.base}/v1/experiments/e2e/stop", headers=H_ADMIN, timeout=10
        ).raise_for_status()
        deadline = time.monotonic() + 30
        streak = 0
        while streak < 20:
            assert time.monotonic() < deadline, "a worker kept serving a stopped experiment"
            streak = streak + 1 if _variant(restarted, people[streak]) is None else 0
    finally:
        restarted.stop()
