"""The nesting-depth check that runs before msgspec decodes a body."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.errors import InvalidInputError
from service.json_guard import check_json_depth, json_depth


def _depth(x: Any) -> int:
    if isinstance(x, dict):
        return 1 + max((_depth(v) for v in x.values()), default=0)
    if isinstance(x, list):
        return 1 + max((_depth(v) for v in x), default=0)
    return 0


# strings full of brackets, quotes and backslashes: the cases a naive bracket count gets wrong
_tricky = st.text(alphabet='[]{}"\\ab\n', max_size=12)
_json = st.recursive(
    st.none() | st.booleans() | st.integers() | _tricky,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(_tricky, kids, max_size=4),
    max_leaves=40,
)


@given(_json)
def test_depth_matches_the_parsed_structure(value: Any) -> None:
    body = json.dumps(value).encode()
    assert json_depth(body) == _depth(value)


def test_deep_nesting_is_refused_cheaply() -> None:
    body = b'{"events": ' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    with pytest.raises(InvalidInputError, match=r"nests 200001 levels deep; at most 32"):
        check_json_depth(body, 32)


def test_deep_nesting_inside_a_string_is_fine() -> None:
    check_json_depth(json.dumps({"a": "[" * 1000}).encode(), 32)


def test_unterminated_string_with_escaped_quotes_stays_linear() -> None:
    body = b'"' + b'\\"[' * 100_000
    assert json_depth(body) == 0
