"""The one place that maps errors to HTTP responses: ``RULES``, a table from exception class to status.

Litestar picks the handler of the closest class in the exception's MRO; every entry has the same handler,
which looks the rule up the same way. Every error answer has the same body, ``{"status_code", "error",
"detail"}``, where ``detail`` is one line that names the offending field or parameter (and, for a closed
vocabulary, its valid values). Bad input is always a 4xx: msgspec and Litestar validation errors become
400, never 500. Anything unexpected is a 500 whose body reveals nothing internal (the traceback goes to the
log).
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import msgspec
import msgspec.inspect as mi
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import ExceptionHandlersMap

from models.errors import (
    ArtifactError,
    DataError,
    JourneyrecError,
    NotFoundError,
    StoreUnavailableError,
)

log = logging.getLogger("journeyrec.service")


class ConflictError(JourneyrecError):
    """The request conflicts with the stored state (a write to a retired catalog item): 409."""


class NotReadyError(JourneyrecError):
    """No model is loaded yet (the service answers 503 until one is)."""


class IncompleteBodyError(JourneyrecError):
    """The request body ended early: the client disconnected, or sent a malformed chunked body."""


class ErrorBody(msgspec.Struct, frozen=True):
    status_code: int
    error: str
    detail: str


_SLUGS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}

HeadersOf = Callable[[Request[Any, Any, Any]], Mapping[str, str]]


def _retry_after(request: Request[Any, Any, Any]) -> Mapping[str, str]:
    settings = getattr(request.app.state, "settings", None)
    return {"Retry-After": str(getattr(settings, "retry_after", 1))}


class Rule(NamedTuple):
    """How one class of errors answers: ``status`` (None: the exception's own, as Litestar's HTTPException
    carries it) and extra response headers."""

    status: int | None
    headers: HeadersOf | None = None


#: exception class -> answer; the closest class in an exception's MRO applies
RULES: dict[type[Exception], Rule] = {
    StoreUnavailableError: Rule(503, _retry_after),
    NotReadyError: Rule(503, _retry_after),
    NotFoundError: Rule(404),
    ConflictError: Rule(409),
    ArtifactError: Rule(
        422
    ),  # only reached from a reload: the new artifact is refused, the live model serves
    DataError: Rule(422),
    JourneyrecError: Rule(
        400
    ),  # InvalidInputError, IncompleteBodyError and any other problem the caller can fix
    ValidationException: Rule(400),  # Litestar's parameter and body validation
    HTTPException: Rule(None),  # Litestar's own (401, 403, 404, 405, 413, 429...)
    msgspec.MsgspecError: Rule(400),  # a decode error that escaped the body decoder; still the client's fault
    Exception: Rule(HTTP_500_INTERNAL_SERVER_ERROR),
}


def rule_for(exc: BaseException) -> Rule:
    for cls in type(exc).__mro__:
        rule = RULES.get(cls)
        if rule is not None:
            return rule
    return RULES[Exception]


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status, _SLUGS.get(status, "error"), detail),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def answer(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    """The response of any error, by ``RULES``."""
    rule = rule_for(exc)
    status = rule.status if rule.status is not None else getattr(exc, "status_code", 500)
    headers: dict[str, str] = {}
    if isinstance(exc, HTTPException) and exc.headers:
        headers.update(exc.headers)
    if rule.headers is not None:
        headers.update(rule.headers(request))
    if status >= HTTP_500_INTERNAL_SERVER_ERROR and status != 503:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(status, "internal error; see the server log", headers)
    if isinstance(exc, StoreUnavailableError):
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
    elif isinstance(exc, IncompleteBodyError):
        log.info("%s %s: %s", request.method, request.url.path, exc)
    return error_response(status, _detail(request, exc), headers)


EXCEPTION_HANDLERS: ExceptionHandlersMap = dict.fromkeys(RULES, answer)


def _detail(request: Request[Any, Any, Any], exc: Exception) -> str:
    if isinstance(exc, ValidationException):
        return _validation_detail(request, exc)
    if isinstance(exc, HTTPException):
        return str(exc.detail)
    if isinstance(exc, msgspec.MsgspecError):
        return decode_error_detail(exc)
    return str(exc)


# -- naming the field, and the valid values of a closed vocabulary -------------------------------------------

_PATH_PART = re.compile(r"\[(\d+|\.\.\.)\]|\.?([^.\[\]]+)")


def path_parts(path: str) -> list[str | int]:
    """``events[2].event`` (or ``$.events[2].event``) -> ``["events", 2, "event"]``."""
    parts: list[str | int] = []
    for index, name in _PATH_PART.findall(path.removeprefix("$")):
        if name:
            parts.append(name)
        elif index.isdigit():
            parts.append(int(index))
        else:
            parts.append(0)  # msgspec's "[...]": some element; they all have the same type
    return parts


def _unwrap(t: mi.Type) -> Iterable[mi.Type]:
    """The concrete types behind constraints and unions (None left out)."""
    if isinstance(t, mi.Metadata):
        yield from _unwrap(t.type)
    elif isinstance(t, mi.UnionType):
        for member in t.types:
            yield from _unwrap(member)
    elif not isinstance(t, mi.NoneType):
        yield t


_SEQUENCES = (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)


def _step(t: mi.Type, part: str | int) -> mi.Type | None:
    for u in _unwrap(t):
        if isinstance(part, int) and isinstance(
            u, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType
        ):
            return u.item_type
        if isinstance(part, str) and isinstance(u, mi.StructType | mi.DataclassType | mi.TypedDictType):
            for f in u.fields:
                if part in (f.name, f.encode_name):
                    return f.type
        if isinstance(part, str) and isinstance(u, mi.DictType):
            return u.value_type
    return None


def valid_values(tp: Any, path: Sequence[str | int] = ()) -> list[str] | None:
    """The values allowed at ``path`` inside type ``tp`` when it is an enum or a Literal, else None."""
    try:
        t: mi.Type | None = mi.type_info(tp)
    except (TypeError, ValueError):
        return None
    for part in path:
        if t is None:
            return None
        t = _step(t, part)
    if t is None:
        return None
    for u in _unwrap(t):
        if isinstance(u, mi.EnumType):
            return [str(m.value) if isinstance(m, enum.Enum) else str(m) for m in u.cls]
        if isinstance(u, mi.LiteralType):
            return [str(v) for v in u.values]
    return None


def _with_choices(message: str, choices: list[str] | None) -> str:
    if choices and message.startswith("Invalid enum value"):
        return f"{message}; expected one of: {', '.join(choices)}"
    return message


def decode_error_detail(exc: msgspec.MsgspecError, target: Any = None, *, where: str = "body") -> str:
    """msgspec's "Expected `str`, got `int` - at `$.events[2].visitor_id`" -> "body field 'events[2]...'";
    an invalid enum value also lists the valid ones (looked up in ``target``, the type decoded into)."""
    text = str(exc)
    head, sep, tail = text.partition(" - at `$")
    if not sep:  # about the whole document: malformed JSON, or a required field missing at the top
        valid_json = isinstance(exc, msgspec.ValidationError)
        return f"{where}: {text}" if valid_json else f"invalid JSON {where}: {text}"
    path = tail.rstrip("`").lstrip(".")
    if target is not None:
        head = _with_choices(head, valid_values(target, path_parts(path)))
    return f"{where} field {path!r}: {head}" if path else f"{where}: {head}"


def _param_type(request: Request[Any, Any, Any], name: str) -> Any:
    """The annotation of parameter ``name`` of the route (the handler's own, or one of its dependencies')."""
    try:
        handler = request.route_handler
        models = [handler.signature_model]
        models += [p.signature_model for p in handler.resolve_dependencies().values() if p.signature_model]
    except (AttributeError, KeyError, TypeError):
        return None
    for model in models:
        annotation = getattr(model, "__annotations__", {}).get(name)
        if annotation is not None:
            return annotation
    return None


def _describe(request: Request[Any, Any, Any], item: Mapping[str, Any]) -> str:
    message = str(item.get("message", "invalid value"))
    key = item.get("key")
    raw_source = item.get("source")
    source = str(getattr(raw_source, "value", raw_source))  # Litestar passes ParamType members
    if key is None:
        return message
    key = str(key)
    if source == "body":
        message = _with_choices(message, valid_values(_param_type(request, "data"), path_parts(key)))
        # "data" is the whole body (msgspec gave no path, e.g. an unknown field)
        return f"body: {message}" if key == "data" else f"body field {key!r}: {message}"
    message = _with_choices(message, valid_values(_param_type(request, key)))
    if source in ("query", "path", "header", "cookie"):
        return f"{source} parameter {key!r}: {message}"
    return f"{key!r}: {message}"


def _validation_detail(request: Request[Any, Any, Any], exc: ValidationException) -> str:
    """Litestar's parameter/body validation: one line naming every bad field."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts = [_describe(request, x) for x in extra if isinstance(x, Mapping)]
    return "; ".join(parts) if parts else str(exc.detail)
