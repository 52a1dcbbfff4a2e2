"""The one place that maps errors to HTTP responses.

Every error answer has the same body, ``{"status_code", "error", "detail"}``, where ``detail`` is one line
that names the offending field or parameter. Bad input is always a 4xx: msgspec and Litestar validation
errors become 400, never 500. Anything unexpected is a 500 whose body reveals nothing internal (the
traceback goes to the log).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import msgspec
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_404_NOT_FOUND,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_500_INTERNAL_SERVER_ERROR,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from litestar.types import ExceptionHandlersMap

from models.errors import (
    ArtifactError,
    DataError,
    JourneyrecError,
    NotFoundError,
    StoreUnavailableError,
    ValidationError,
)

log = logging.getLogger("journeyrec.service")


class NotReadyError(JourneyrecError):
    """No model is loaded yet (the service answers 503 until one is)."""


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
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "too_many_requests",
    500: "internal_error",
    503: "unavailable",
}


def error_response(status: int, detail: str, headers: Mapping[str, str] | None = None) -> Response[ErrorBody]:
    return Response(
        ErrorBody(status, _SLUGS.get(status, "error"), detail),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def _retry_headers(request: Request[Any, Any, Any]) -> dict[str, str]:
    settings = getattr(request.app.state, "settings", None)
    return {"Retry-After": str(getattr(settings, "retry_after", 1))}


def journeyrec_error(request: Request[Any, Any, Any], exc: JourneyrecError) -> Response[ErrorBody]:
    """models.errors -> status: bad input 400, bad data 422, unknown name 404, store/model down 503."""
    if isinstance(exc, StoreUnavailableError):
        log.warning("store unavailable on %s %s: %s", request.method, request.url.path, exc)
        return error_response(HTTP_503_SERVICE_UNAVAILABLE, str(exc), _retry_headers(request))
    if isinstance(exc, NotReadyError):
        return error_response(HTTP_503_SERVICE_UNAVAILABLE, str(exc), _retry_headers(request))
    if isinstance(exc, NotFoundError):
        return error_response(HTTP_404_NOT_FOUND, str(exc))
    if isinstance(exc, ArtifactError):
        # only reached from a reload: the new artifact is refused, the live model keeps serving
        return error_response(HTTP_422_UNPROCESSABLE_ENTITY, str(exc))
    if isinstance(exc, DataError):
        return error_response(HTTP_422_UNPROCESSABLE_ENTITY, str(exc))
    if isinstance(exc, ValidationError):
        return error_response(HTTP_400_BAD_REQUEST, str(exc))
    return error_response(HTTP_400_BAD_REQUEST, str(exc))


def _describe(item: Mapping[str, Any]) -> str:
    message = str(item.get("message", "invalid value"))
    key = item.get("key")
    raw_source = item.get("source")
    source = str(getattr(raw_source, "value", raw_source))  # Litestar passes ParamType members
    if key is None:
        return message
    if source == "body":
        # "data" is the whole body (msgspec gave no path, e.g. an unknown field)
        return f"body: {message}" if key == "data" else f"body field {key!r}: {message}"
    if source in ("query", "path", "header", "cookie"):
        return f"{source} parameter {key!r}: {message}"
    return f"{key!r}: {message}"


def validation_exception(_request: Request[Any, Any, Any], exc: ValidationException) -> Response[ErrorBody]:
    """Litestar's parameter/body validation: one line naming every bad field."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    parts = [_describe(x) for x in extra if isinstance(x, Mapping)]
    detail = "; ".join(parts) if parts else str(exc.detail)
    return error_response(HTTP_400_BAD_REQUEST, detail)


def http_exception(_request: Request[Any, Any, Any], exc: HTTPException) -> Response[ErrorBody]:
    return error_response(exc.status_code, str(exc.detail), exc.headers)


def msgspec_error(_request: Request[Any, Any, Any], exc: msgspec.MsgspecError) -> Response[ErrorBody]:
    # only reached if a decode error escaped a handler's own translation; still the client's fault
    return error_response(HTTP_400_BAD_REQUEST, f"invalid request body: {exc}")


def internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[ErrorBody]:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(HTTP_500_INTERNAL_SERVER_ERROR, "internal error; see the server log")


EXCEPTION_HANDLERS: ExceptionHandlersMap = {
    JourneyrecError: journeyrec_error,
    ValidationException: validation_exception,
    HTTPException: http_exception,
    msgspec.MsgspecError: msgspec_error,
    Exception: internal_error,
}


def decode_error_detail(exc: msgspec.MsgspecError, *, where: str = "body") -> str:
    """msgspec's "Expected `str`, got `int` - at `$.events[2].visitor_id`" -> "body field 'events[2]...'"."""
    text = str(exc)
    head, sep, tail = text.partition(" - at `$")
    if not sep:
        return f"invalid JSON {where}: {text}"
    path = tail.rstrip("`").lstrip(".")
    return f"{where} field {path!r}: {head}" if path else f"{where}: {head}"
