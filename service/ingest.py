"""Decoding an ingest body (one event or ``{"events": [...]}``) into domain Events, with clear errors.

The body is size-limited by Litestar before it reaches here; ``service.json_guard`` decodes it (depth
checked first, every decoder error a 400 naming the field); the batch length is checked before the events
are validated one by one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from models.domain import Event
from models.errors import InvalidInputError
from service.json_guard import convert, decode_json
from service.schemas import EventBatchIn, EventIn, to_event

_SHAPE = 'send one event object {"visitor_id", "item_id", "event", ...} or {"events": [...]}'


def decode_events(body: bytes, *, now: float, max_batch: int, max_depth: int) -> list[Event]:
    """Validated events of one ingest body (POSIX-second timestamps; absent ones set to ``now``).

    Raises InvalidInputError naming the field (e.g. ``body field 'events[3].event': Invalid enum value``).
    """
    if not body.strip():
        raise InvalidInputError(f"empty body: {_SHAPE}")
    # the schema only names the field of a number out of range: a guess by the "events" key is enough
    raw: Any = decode_json(body, max_depth, EventBatchIn if b'"events"' in body else EventIn)
    if not isinstance(raw, dict):
        raise InvalidInputError(f"body is a JSON {type(raw).__name__}, not an object: {_SHAPE}")
    if "events" in raw:
        n = len(raw["events"]) if isinstance(raw["events"], list) else 0
        if n > max_batch:
            raise InvalidInputError(f"body field 'events': {n} events; at most {max_batch} per request")
        batch = convert(raw, EventBatchIn)
        return [to_event(e, now, f"events[{i}].timestamp") for i, e in enumerate(batch.events)]
    return [to_event(convert(raw, EventIn), now)]


def count_unknown(events: list[Event], knows: Callable[[str], bool]) -> int:
    """How many of ``events`` are about an item ``knows`` does not know (each distinct id asked once)."""
    known = {item_id: knows(item_id) for item_id in {e.item_id for e in events}}
    return sum(1 for e in events if not known[e.item_id])
