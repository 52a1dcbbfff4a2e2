"""A cheap JSON nesting-depth check that runs before msgspec decodes a request body.

On Python < 3.14 msgspec can overflow the C stack on deeply nested JSON (even inside a field it would
ignore), which kills the whole worker; its maintainers declined a limit. The body-size limit bounds the
work here; this check bounds the depth, in a few vectorised passes over the bytes.
"""

from __future__ import annotations

import numpy as np

from models.errors import ValidationError

_OPEN = frozenset(b"[{")


def json_depth(body: bytes) -> int:
    """Maximum nesting depth of arrays/objects in ``body``, ignoring brackets inside strings.

    Agrees with a JSON parser up to the first syntax error (a parser stops there, so what follows the
    error cannot hurt it): a quote is escaped iff an odd run of backslashes precedes it, exactly as inside
    a JSON string, and a backslash outside a string is itself a syntax error.
    """
    a = np.frombuffer(body, dtype=np.uint8)
    n = a.size
    if n == 0:
        return 0
    pos = np.arange(n, dtype=np.int64)
    is_bs = a == 0x5C
    # index of the last non-backslash at or before each position -> length of the backslash run ending there
    last_plain = np.maximum.accumulate(np.where(is_bs, -1, pos))
    run = pos - last_plain  # int64 [n]: backslashes ending at each position (0 if not a backslash)
    quotes = np.flatnonzero(a == 0x22)
    prev_run = np.where(quotes > 0, run[np.maximum(quotes - 1, 0)], 0)
    real_quotes = quotes[prev_run % 2 == 0]
    toggles = np.zeros(n, dtype=np.int8)
    toggles[real_quotes] = 1
    in_string = (np.cumsum(toggles, dtype=np.int64) % 2).astype(bool)  # quotes themselves count as inside
    step = np.zeros(n, dtype=np.int8)
    step[(a == 0x5B) | (a == 0x7B)] = 1
    step[(a == 0x5D) | (a == 0x7D)] = -1
    step[in_string] = 0
    return int(np.cumsum(step, dtype=np.int64).max(initial=0))


def check_json_depth(body: bytes, max_depth: int) -> None:
    """Raise ValidationError when ``body`` nests deeper than ``max_depth``."""
    # fast path: fewer opening brackets in total than the limit cannot nest beyond it
    if sum(body.count(bytes([c])) for c in _OPEN) <= max_depth:
        return
    depth = json_depth(body)
    if depth > max_depth:
        raise ValidationError(f"JSON nests {depth} levels deep; at most {max_depth} are allowed")
