"""service.feedback.serve: stamping list answers, logging them, and losing nothing silently."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import REGISTRY

from models.attribution import ServedList, Windows
from models.errors import StoreUnavailableError
from service.feedback.memory import MemoryFeedbackStore
from service.feedback.serve import Feedback
from service.feedback.store_base import Deltas

WINDOWS = Windows(click=3600.0, impression=600.0)


def failures(what: str) -> float:
    return REGISTRY.get_sample_value("journeyrec_feedback_write_failures_total", {"what": what}) or 0.0


class FailingStore(MemoryFeedbackStore):
    def __init__(self, *, keep: bool, count: bool) -> None:
        super().__init__(windows=WINDOWS, cap=10, visitor_ttl=3600)
        self.keep_fails, self.count_fails = keep, count

    async def log_served(self, visitor_id: str, served: ServedList) -> None:
        if self.keep_fails:
            raise StoreUnavailableError("down")
        await super().log_served(visitor_id, served)

    async def count_served(self, lists: Sequence[tuple[str, ServedList]]) -> Deltas:
        if self.count_fails:
            raise StoreUnavailableError("down")
        return await super().count_served(lists)


async def test_a_list_is_kept_then_counted_and_tagged_with_its_experiment() -> None:
    fb = Feedback(MemoryFeedbackStore(windows=WINDOWS, cap=10, visitor_ttl=3600), log_lists=True)
    tag = await fb.served(
        "v", stage="decision", placement="cart", items=["a", "b"], experiment="e", variant="B"
    )
    assert (tag.experiment, tag.variant) == ("e", "B")
    kept = await fb.store.served("v")
    assert [(s.recommendation_id, s.experiment, s.variant, s.placement) for s in kept] == [
        (tag.recommendation_id, "e", "B", "cart")
    ]
    await fb.drain()
    stats, _days = await fb.store.experiment_stats("e")
    assert {(s.variant, s.stage, s.visitors, s.sums["lists"]) for s in stats} == {
        ("B", "decision", 1, 1.0),
        ("B", "all", 1, 1.0),
    }
    await fb.close()


async def test_without_a_visitor_or_with_logging_off_a_list_is_only_stamped() -> None:
    store = MemoryFeedbackStore(windows=WINDOWS, cap=10, visitor_ttl=3600)
    off = Feedback(store, log_lists=False)
    first = await off.served("v", stage="awareness", placement="home", items=["a"])
    second = await Feedback(store, log_lists=True).served(None, stage="", placement="similar", items=())
    assert first.recommendation_id < second.recommendation_id
    assert first.experiment is None
    assert await store.served("v") == []


async def test_failed_writes_are_counted_and_the_answer_still_goes_out() -> None:
    before_served, before_count = failures("served"), failures("count")
    fb = Feedback(FailingStore(keep=True, count=False), log_lists=True)
    tag = await fb.served("v", stage="awareness", placement="home", items=["a"])
    assert len(tag.recommendation_id) == 26
    assert failures("served") == before_served + 1
    fb = Feedback(FailingStore(keep=False, count=True), log_lists=True)
    await fb.served("v", stage="awareness", placement="home", items=["a"])
    await fb.drain()
    assert failures("count") == before_count + 1
    await fb.close()
