"""Every JSON request body is decoded here (``decode_json``), and converted to its type here (``convert``).

Whatever the decoder raises on client bytes becomes one InvalidInputError (400) naming the field:
msgspec.DecodeError (malformed JSON), msgspec.ValidationError (a number out of range, a wrong type, an
invalid enum value, which also lists the valid ones), UnicodeDecodeError (invalid UTF-8 inside a string;
msgspec raises it as is) and RecursionError (nesting beyond msgspec's own limit).

Before decoding, a cheap nesting-depth check: on Python < 3.14 msgspec can overflow the C stack on deeply
nested JSON (even inside a field it would ignore), which kills the whole worker; its maintainers declined
a limit. The body-size limit bounds the work here; this check bounds the depth, in a few vectorised passes
over the bytes.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec
import numpy as np

from models.errors import InvalidInputError
from service.errors import decode_error_detail

T = TypeVar("T")

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
    """Raise InvalidInputError when ``body`` nests deeper than ``max_depth``."""
    # fast path: fewer opening brackets in total than the limit cannot nest beyond it
    if sum(body.count(bytes([c])) for c in _OPEN) <= max_depth:
        return
    depth = json_depth(body)
    if depth > max_depth:
        raise InvalidInputError(f"JSON nests {depth} levels deep; at most {max_depth} are allowed")


def decode_json(body: bytes, max_depth: int, schema: Any = None) -> Any:
    """``body`` as Python objects (dict, list, str, int, float, bool, None). Raises InvalidInputError.

    ``schema``, the type the body is meant to have, only serves to name the field of a number out of range
    (decoding without a type, msgspec cannot name object keys: ``$[...][0][...]``)."""
    check_json_depth(body, max_depth)
    try:
        return msgspec.json.decode(body)
    except UnicodeDecodeError:
        raise InvalidInputError(_bad_utf8(body)) from None
    except msgspec.ValidationError as e:  # a number out of range (JSON has no other type errors)
        raise InvalidInputError(decode_error_detail(_located(e, body, schema), schema)) from None
    except msgspec.DecodeError as e:
        raise InvalidInputError(f"body is not valid JSON: {e}") from None
    except RecursionError:
        raise InvalidInputError(f"JSON nests too deeply; at most {max_depth} levels are allowed") from None


def convert(raw: Any, target: type[T], *, where: str = "body") -> T:
    """``raw`` (from ``decode_json``) validated as ``target``. Raises InvalidInputError naming the field."""
    try:
        return msgspec.convert(raw, target)
    except msgspec.ValidationError as e:
        raise InvalidInputError(decode_error_detail(e, target, where=where)) from None


def _located(exc: msgspec.ValidationError, body: bytes, schema: Any) -> msgspec.ValidationError:
    """The same error found by decoding into ``schema``, whose message names the field, when it does."""
    if schema is None or "[...]" not in str(exc):
        return exc
    try:
        msgspec.json.decode(body, type=schema)
    except msgspec.ValidationError as typed:
        return typed
    except (msgspec.DecodeError, TypeError, UnicodeDecodeError, RecursionError):
        return exc
    return exc


def _bad_utf8(body: bytes) -> str:
    """Where the first invalid UTF-8 byte of ``body`` is: the field whose string holds it, and its offset."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        where = f"byte 0x{body[e.start]:02x} at offset {e.start}"
    else:  # msgspec raised for bytes Python accepts (surrogates): no offset to name
        where = "a surrogate code point"
    try:
        tree = msgspec.json.decode(body.decode("utf-8", errors="replace"))
    except (msgspec.DecodeError, RecursionError):
        tree = None
    path = _path_of(tree, "\ufffd") if tree is not None else None
    if path is None:
        return f"body: a string is not valid UTF-8 ({where})"
    return f"body field {path!r}: not valid UTF-8 ({where})"


def _path_of(tree: Any, marker: str, prefix: str = "") -> str | None:
    """The path (``events[2].visitor_id``) of the first string in ``tree`` holding ``marker`` (in document
    order; a key holding it names that key), else None."""
    if isinstance(tree, str):
        return prefix if marker in tree else None
    if isinstance(tree, list):
        for i, value in enumerate(tree):
            found = _path_of(value, marker, f"{prefix}[{i}]")
            if found is not None:
                return found
    elif isinstance(tree, dict):
        for key, value in tree.items():
            here = f"{prefix}.{key}" if prefix else key
            if marker in key:
                return here
            found = _path_of(value, marker, here)
            if found is not None:
                return found
    return None
