"""Recommendation ids: 26-character ULIDs (48-bit millisecond time + 80 random bits, Crockford base32).

Lexicographic order is time order. Within one process the ids are strictly increasing: an id made in the
same millisecond as the previous one (or with a clock that stepped back) takes the previous id's time and
random part plus one, as the ULID specification's monotonic mode does. Across processes two ids of one
millisecond are ordered by their random parts (80 bits: a collision is not a practical concern).
"""

from __future__ import annotations

import secrets
import threading

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford base32: no I, L, O, U
LENGTH = 26
_RANDOM_BITS = 80
_TIME_BITS = 48


class IdGenerator:
    """Strictly increasing ids (see the module docstring); one per process is the default."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = 0  # the last id made, as a 128-bit integer

    def new(self, now: float) -> str:
        """A new id for a list served at ``now`` (POSIX seconds); greater than every id made before."""
        ms = int(now * 1000) & ((1 << _TIME_BITS) - 1)
        value = (ms << _RANDOM_BITS) | secrets.randbits(_RANDOM_BITS)
        with self._lock:
            if value <= self._last:
                value = self._last + 1
            self._last = value
        return _encode(value)


def _encode(value: int) -> str:
    out = []
    for _ in range(LENGTH):
        out.append(ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


_PROCESS = IdGenerator()


def new_recommendation_id(now: float) -> str:
    """A new id for a list served at ``now`` (POSIX seconds); greater than every id this process made."""
    return _PROCESS.new(now)


def time_of(recommendation_id: str) -> float:
    """POSIX seconds (millisecond resolution) an id was made at; ValueError if it is not such an id."""
    if len(recommendation_id) != LENGTH:
        raise ValueError(f"not a recommendation id: {recommendation_id!r}")
    value = 0
    for ch in recommendation_id[:10].upper():
        digit = ALPHABET.find(ch)
        if digit < 0:
            raise ValueError(f"not a recommendation id: {recommendation_id!r}")
        value = value * 32 + digit
    return value / 1000.0  # the first 10 characters are 2 zero bits and the 48-bit time
