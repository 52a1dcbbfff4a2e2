"""The packed journey trail of a visitor: what the stage engine reads of each stored event, 10 bytes each.

The Redis store keeps, beside the visitor's ``events`` list (msgspec JSON, for the request path), a string
``trail`` holding one row per event of that list, in the same order: the timestamp (little-endian
float64), the event's ``EventType.code`` (uint8) and its channel (uint8: 0 for none, else 1 + the position
in ``Channel``). Journey analytics reads the trails of hundreds of visitors per ingest request and turns
them into arrays with one ``numpy.frombuffer`` call, where decoding the JSON of the same events cost more
than the rest of its work.
"""

from __future__ import annotations

import struct

import numpy as np

from models.domain import Channel, Event

ROW = struct.Struct("<dBB")
ROW_BYTES = ROW.size  # 10
DTYPE = np.dtype([("ts", "<f8"), ("code", "u1"), ("channel", "u1")])
CHANNELS: tuple[Channel, ...] = tuple(Channel)
_CHANNEL_CODE = {c: i + 1 for i, c in enumerate(CHANNELS)}


def channel_code(channel: Channel | None) -> int:
    """0 for no channel, else 1 + the channel's position in ``Channel``."""
    return 0 if channel is None else _CHANNEL_CODE[channel]


def row(e: Event) -> bytes:
    """The trail row of one event."""
    return ROW.pack(float(e.timestamp), e.event.code, channel_code(e.channel))


def rows(buffer: bytes) -> np.ndarray:
    """The rows of a trail (or of several trails joined) as a structured array of ``DTYPE``."""
    if len(buffer) % ROW_BYTES:
        raise ValueError(f"a trail of {len(buffer)} bytes is not a whole number of {ROW_BYTES}-byte rows")
    return np.frombuffer(buffer, dtype=DTYPE)


def channel_of(code: int) -> Channel | None:
    """The channel a row's channel code stands for."""
    return None if code == 0 else CHANNELS[code - 1]
