"""``with_signal``: a signal from outside the event history joins the stage's signals."""

from __future__ import annotations

from models.domain import Event, EventType, Stage
from models.journey import infer_stage, with_signal

T0 = 1_735_689_600.0


def test_an_explaining_signal_goes_first_and_another_last() -> None:
    events = [Event(visitor_id="u", item_id="p", event=EventType.ADD_TO_CART, timestamp=T0)]
    result = infer_stage(events, T0 + 60)
    assert result.stage is Stage.DECISION
    first = with_signal(result, "cart carried over from the anonymous visit (1 item)", explains=True)
    assert first.signals == ["cart carried over from the anonymous visit (1 item)", *result.signals]
    last = with_signal(result, "history carried over", explains=False)
    assert last.signals == [*result.signals, "history carried over"]
    assert (
        (first.stage, first.confidence) == (last.stage, last.confidence) == (result.stage, result.confidence)
    )
