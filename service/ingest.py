"""Decoding an ingest body (one event or ``{"events": [...]}``) into domain Events, with clear errors.

The body is size-limited by Litestar before it reaches here; the nesting depth is checked before msgspec
sees the bytes; the batch length is checked before the events are validated one by one.
"""

from __future__ import annotations

from typing import Any

import msgspec

from models.domain import Event
from models.errors import ValidationError
from service.errors import decode_error_detail
from service.json_guard import check_json_depth
from service.schemas import EventBatchIn, EventIn, to_event

_SHAPE = 'send one event object {"visitor_id", "item_id", "event", ...} or {"events": [...]}'


def decode_events(body: bytes, *, now: float, max_batch: int, max_depth: int) -> list[Event]:
    """Validated events of one ingest body (POSIX-second timestamps; absent ones set to ``now``).

    Raises ValidationError naming the field (e.g. ``body field 'events[3].event': Invalid enum value``).
    """
    if not body.strip():
        raise ValidationError(f"empty body: {_SHAPE}")
    check_json_depth(body, max_depth)
    try:
        raw: Any = msgspec.json.decode(body)
    except msgspec.DecodeError as e:
        raise ValidationError(f"body is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValidationError(f"body is a JSON {type(raw).__name__}, not an object: {_SHAPE}")
    try:
        if "events" in raw:
            n = len(raw["events"]) if isinstance(raw["events"], list) else 0
            if n > max_batch:
                raise ValidationError(f"body field 'events': {n} events; at most {max_batch} per request")
            batch = msgspec.convert(raw, EventBatchIn)
            return [to_event(e, now, f"events[{i}].timestamp") for i, e in enumerate(batch.events)]
        return [to_event(msgspec.convert(raw, EventIn), now)]
    except msgspec.ValidationError as e:
        raise ValidationError(decode_error_detail(e)) from None
