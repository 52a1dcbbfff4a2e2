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


async def test_a_follower_that_turns_its_cancellation_into_an_error_is_not_restarted() -> None:
    """A step interrupted by ``stop`` may raise an error instead of CancelledError (a client library's
    timeout racing the cancellation): the follower has stopped all the same."""
    followers = Followers(backoff_s=0.001, max_backoff_s=0.01)
    started = asyncio.Event()

    async def step() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise TimeoutError("the reply timed out") from None

    followers.start("swallower", step)
    await asyncio.wait_for(started.wait(), timeout=30)
    await asyncio.wait_for(followers.stop(), timeout=30)
    assert followers.restarts["swallower"] == 0
    assert not followers.running("swallower")


async def test_stop_goes_on_without_a_follower_that_will_not_stop(service_log: LogRecords) -> None:
    followers = Followers(backoff_s=0.001, max_backoff_s=0.01, stop_timeout_s=0.05)
    started = asyncio.Event()
    release = asyncio.Event()

    async def stubborn() -> None:
        started.set()
        while not release.is_set():
            try:
                await release.wait()
            except asyncio.CancelledError:
                continue  # ignores every cancellation

    followers.start("stubborn", stubborn)
    await asyncio.wait_for(started.wait(), timeout=30)
    await asyncio.wait_for(followers.stop(), timeout=30)
    warned = [r.getMessage() for r in service_log.records if "did not stop" in r.getMessage()]
    assert warned == ["background task journeyrec-stubborn did not stop within 0.05 s; going on without it"]
    release.set()  # let it end, so that the loop closes cleanly
    await asyncio.sleep(0)
