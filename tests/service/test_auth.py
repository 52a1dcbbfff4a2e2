"""API keys: parsing, constant-time matching, and the start-up refusal without keys."""

from __future__ import annotations

import pytest

from models.errors import InvalidInputError
from service.auth import Scope, check_auth_configured, match_key, parse_api_keys

K1 = "k1-0123456789abcdef"
K2 = "k2-0123456789abcdef"


def test_parse_and_match() -> None:
    keys = parse_api_keys(f" {K1}:ingest+read ; {K2}:ADMIN ;")
    assert [k.name for k in keys] == ["key1", "key2"]
    assert match_key(K1, keys) is keys[0]
    assert match_key(K2, keys) is keys[1]
    assert keys[1].scopes == frozenset({Scope.ADMIN})
    assert match_key(K1 + "x", keys) is None
    assert match_key("", keys) is None


def test_key_may_contain_colons() -> None:
    keys = parse_api_keys("abc:def:ghi:jkl:mnop:read")
    assert match_key("abc:def:ghi:jkl:mnop", keys) is not None


def test_refuses_to_start_without_keys() -> None:
    with pytest.raises(InvalidInputError, match="no API keys configured"):
        check_auth_configured((), insecure_no_auth=False)
    check_auth_configured((), insecure_no_auth=True)
    check_auth_configured(parse_api_keys(f"{K1}:read"), insecure_no_auth=False)


def test_empty_scope_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="unknown scope ''"):
        parse_api_keys(f"{K1}:")


def test_a_key_may_be_named() -> None:
    keys = parse_api_keys(f"{K1}:read;{K2}:admin@merch-team")
    assert [k.name for k in keys] == ["key1", "merch-team"]
    assert match_key(K2, keys) is keys[1]
    assert keys[1].scopes == frozenset({Scope.ADMIN})
    with pytest.raises(InvalidInputError, match="entry 2 repeats the name 'key1'"):
        parse_api_keys(f"{K1}:read;{K2}:admin@key1")
    with pytest.raises(InvalidInputError, match="entry 1 has the name 'two words'"):
        parse_api_keys(f"{K1}:read@two words")
