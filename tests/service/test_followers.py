"""Supervised background tasks: a follower whose body raises is restarted, and says so."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY

from service.followers import Followers, every
from tests.service.api_fixtures import LogRecords


def _restarts(task: str) -> float:
    return REGISTRY.get_sample_value("journeyrec_background_restarts_total", {"task": task}) or 0.0


async def test_a_follower_whose_body_raises_is_restarted_with_backoff(service_log: LogRecords) -> None:
    followers = Followers(backoff_s=0.001, max_backoff_s=0.01)
    runs: list[int] = []
    done = asyncio.Event()

    async def body() -> None:
        runs.append(len(runs))
        if len(runs) <= 3:
            raise RuntimeError(f"boom {len(runs)}")
        done.set()
        await asyncio.Event().wait()  # healthy from now on

    before = _restarts("flaky")
    followers.start("flaky", body)
    await asyncio.wait_for(done.wait(), timeout=30)
    assert len(runs) == 4
    assert followers.restarts["flaky"] == 3
    assert followers.running("flaky")
    assert _restarts("flaky") == before + 3
    logged = [r for r in service_log.records if "flaky failed" in r.getMessage()]
    assert len(logged) == 3
    assert [r.exc_info[1].args[0] for r in logged if r.exc_info and r.exc_info[1]] == [
        "boom 1",
        "boom 2",
        "boom 3",
    ]
    assert "restart 3" in logged[-1].getMessage()
    await followers.stop()
    assert not followers.running("flaky")


async def test_a_periodic_follower_survives_a_failing_step() -> None:
    followers = Followers(backoff_s=0.001, max_backoff_s=0.01)
    steps: list[int] = []
    done = asyncio.Event()

    async def step() -> None:
        steps.append(1)
        if len(steps) == 2:
            raise OSError("models directory unreadable for a moment")
        if len(steps) >= 4:
            done.set()

    followers.start("poller", every(0.001, step))
    await asyncio.wait_for(done.wait(), timeout=30)
    assert followers.restarts["poller"] == 1
    await followers.stop()


async def test_a_finished_follower_is_not_restarted() -> None:
    followers = Followers(backoff_s=0.001, max_backoff_s=0.01)
    calls: list[int] = []

    async def once() -> None:
        calls.append(1)

    followers.start("once", once)
    for _ in range(100):
        if not followers.running("once"):
            break
        await asyncio.sleep(0.001)
    assert calls == [1]
    assert followers.restarts["once"] == 0
    await followers.stop()
