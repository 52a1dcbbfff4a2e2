"""API keys with scopes, sent as the ``X-API-Key`` header.

Keys are configured as ``JOURNEYREC_API_KEYS="<key>:<scope>+<scope>;<key>:<scope>"`` (scopes: ``ingest``,
``read``, ``catalog``, ``admin``). Only the sha256 digest of each key is kept in memory and in the settings
handed to worker processes; a presented key is hashed and compared against every configured digest with
``hmac.compare_digest`` (constant time; every key is compared, so timing does not reveal which matched).

A key may be named after its scopes (``<key>:admin@merch-team``): the name is what logs and the rules
audit list record for the key's changes; an unnamed key is ``key<N>``, N its place in the list.

Scopes do not imply each other: an ``admin`` key may reload models and erase visitors but not ingest, so a
leaked storefront key (ingest+read) can never erase data or swap the model; a ``catalog`` key (a product
feed's) writes the live catalog (``/v1/items``) and nothing else. A read route that can also write on
request (retargeting with ``mark_sent=true`` records campaign sends) checks the extra scope with
``require_scope`` when asked to write.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from typing import Any

import msgspec
from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from models.errors import InvalidInputError

API_KEY_HEADER = "X-API-Key"
MIN_KEY_LENGTH = 16
SCOPE_OPT = "scopes"  # route handler ``opt`` key: the scopes any one of which grants access
KEY_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_KEY_NAME = re.compile(KEY_NAME_PATTERN)


class Scope(enum.Enum):
    INGEST = "ingest"
    READ = "read"
    CATALOG = "catalog"
    ADMIN = "admin"


class ApiKey(msgspec.Struct, frozen=True):
    """One configured key: a label for logs (never the key), its sha256 digest, and its scopes."""

    name: str
    digest: bytes
    scopes: frozenset[Scope]


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def parse_api_keys(spec: str, *, source: str = "JOURNEYREC_API_KEYS") -> tuple[ApiKey, ...]:
    """Parse ``"k1:ingest+read;k2:admin@ops"`` into keys. Raises InvalidInputError naming the bad entry."""
    keys: list[ApiKey] = []
    seen: set[bytes] = set()
    names: set[str] = set()
    for n, raw in enumerate((p.strip() for p in spec.split(";")), start=1):
        if not raw:
            continue
        key, sep, scope_part = raw.rpartition(":")
        scope_part, at, key_name = scope_part.partition("@")
        key_name = key_name.strip() if at else f"key{n}"
        if not _KEY_NAME.match(key_name):
            raise InvalidInputError(f"{source}: entry {n} has the name {key_name!r}; use {KEY_NAME_PATTERN}")
        key = key.strip()
        if not sep or not key:
            raise InvalidInputError(f"{source}: entry {n} must look like '<key>:<scope>+<scope>'")
        if len(key) < MIN_KEY_LENGTH:
            raise InvalidInputError(
                f"{source}: key of entry {n} has {len(key)} characters; use at least {MIN_KEY_LENGTH} "
                "(e.g. python -c 'import secrets; print(secrets.token_urlsafe(24))')"
            )
        scopes: set[Scope] = set()
        for name in scope_part.split("+"):
            try:
                scopes.add(Scope(name.strip().lower()))
            except ValueError:
                allowed = ", ".join(s.value for s in Scope)
                raise InvalidInputError(
                    f"{source}: entry {n} has unknown scope {name.strip()!r} (allowed: {allowed})"
                ) from None
        d = digest(key)
        if d in seen:
            raise InvalidInputError(f"{source}: entry {n} repeats a key given before")
        if key_name in names:
            raise InvalidInputError(f"{source}: entry {n} repeats the name {key_name!r}")
        seen.add(d)
        names.add(key_name)
        keys.append(ApiKey(name=key_name, digest=d, scopes=frozenset(scopes)))
    return tuple(keys)


def check_auth_configured(api_keys: tuple[ApiKey, ...], insecure_no_auth: bool) -> None:
    """The server refuses to start without keys unless auth was switched off explicitly."""
    if not api_keys and not insecure_no_auth:
        raise InvalidInputError(
            "no API keys configured: set JOURNEYREC_API_KEYS='<key>:ingest+read;<key>:admin' "
            "or pass --insecure-no-auth (local demo only)"
        )


def match_key(presented: str, api_keys: tuple[ApiKey, ...]) -> ApiKey | None:
    """The configured key equal to ``presented``, compared in constant time against all keys."""
    d = digest(presented)
    found: ApiKey | None = None
    for k in api_keys:
        # no early exit: every comparison runs so the time taken does not depend on which key matched
        if hmac.compare_digest(d, k.digest):
            found = k
    return found


class Authenticator:
    """A Litestar guard: checks ``X-API-Key`` against the route's scopes (``opt={"scopes": {...}}``)."""

    def __init__(self, api_keys: tuple[ApiKey, ...], *, enabled: bool) -> None:
        self.api_keys = api_keys
        self.enabled = enabled

    async def __call__(
        self, connection: ASGIConnection[Any, Any, Any, Any], handler: BaseRouteHandler
    ) -> None:
        # async on purpose: Litestar runs a synchronous guard in a worker thread, a hand-off per request
        required: frozenset[Scope] | None = handler.opt.get(SCOPE_OPT)
        if not self.enabled or required is None:
            return
        presented = connection.headers.get(API_KEY_HEADER)
        if not presented:
            raise NotAuthorizedException(
                f"missing {API_KEY_HEADER} header", headers={"WWW-Authenticate": API_KEY_HEADER}
            )
        key = match_key(presented, self.api_keys)
        if key is None:
            raise NotAuthorizedException("invalid API key", headers={"WWW-Authenticate": API_KEY_HEADER})
        if not key.scopes & required:
            need = " or ".join(sorted(s.value for s in required))
            raise PermissionDeniedException(f"this API key lacks the {need} scope")
        connection.state.api_key = key.name
        connection.state.api_scopes = key.scopes


def require_scope(connection: ASGIConnection[Any, Any, Any, Any], scope: Scope, what: str) -> None:
    """403 unless the request's key holds ``scope`` (``what`` says what needs it); nothing to check when
    API keys are off."""
    held: frozenset[Scope] | None = getattr(connection.state, "api_scopes", None)
    if held is not None and scope not in held:
        raise PermissionDeniedException(f"{what} needs the {scope.value} scope, which this API key lacks")


def scopes(*required: Scope) -> dict[str, Any]:
    """Route ``opt`` naming the scopes, any one of which grants access."""
    return {SCOPE_OPT: frozenset(required)}
