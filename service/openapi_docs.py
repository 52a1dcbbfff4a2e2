"""The API reference: a Swagger UI page at ``/schema`` that needs no internet, and the API-key scope of
every route, read from the route's own declaration (``opt=scopes(...)``, which ``service.auth`` enforces).

The page's JavaScript, CSS and icon are vendored under ``service/static/swagger-ui`` (version and source
in its README) and served at ``/schema/assets``; the JSON document stays at ``/schema/openapi.json``. The
largest file, Swagger UI's bundle, is kept gzip-compressed (``NAME.gz``): it is sent as it is to clients
that accept gzip, and decompressed once for any other.
``route_docs`` lists every route with its scope for the README generator (``scripts/readme.py``), and
``document_scopes`` writes the same statement into each operation's description, so the README, the OpenAPI
document and the guard cannot disagree.
"""

from __future__ import annotations

import enum
import functools
import gzip
import mimetypes
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import msgspec
from litestar import Litestar, Request, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import OpenAPIRenderPlugin, SwaggerRenderPlugin
from litestar.params import Parameter
from litestar.routes import HTTPRoute

from service.auth import API_KEY_HEADER, SCOPE_OPT, Scope

SCHEMA_PATH = "/schema"
OPENAPI_JSON_PATH = f"{SCHEMA_PATH}/openapi.json"
ASSETS_PATH = f"{SCHEMA_PATH}/assets"
ASSETS_DIR = Path(__file__).parent / "static" / "swagger-ui"

# routes the OpenAPI document leaves out on purpose, with what they are (every other route is in it)
UNDOCUMENTED: dict[str, str] = {
    SCHEMA_PATH: "API reference page (Swagger UI, served from the package)",
    OPENAPI_JSON_PATH: "the OpenAPI document (JSON)",
    "/metrics": "Prometheus text format",
    "/console": "operator console (a static page served from the package; its data comes from /v1)",
    "/console/{asset}": "the console's scripts, styles and vendored chart library",
}
_SKIPPED_METHODS = frozenset({"HEAD", "OPTIONS"})  # Litestar answers OPTIONS itself on every path


class RouteDoc(msgspec.Struct, frozen=True):
    """One method of one route: ``path`` as the OpenAPI document writes it (``{visitor_id}``)."""

    method: str
    path: str
    summary: str
    scopes: tuple[Scope, ...]  # any one of them grants access; empty: no key needed

    @property
    def scope_text(self) -> str:
        return " or ".join(f"`{s.value}`" for s in self.scopes) if self.scopes else "none"


def scope_statement(required: Sequence[Scope]) -> str:
    """The sentence every operation's description carries."""
    if not required:
        return "API key: none needed."
    names = " or ".join(f"`{s.value}`" for s in required)
    return f"API key: the `{API_KEY_HEADER}` header with a key holding the {names} scope."


def _scopes_of(handler: HTTPRouteHandler) -> tuple[Scope, ...]:
    required: frozenset[Scope] | None = handler.opt.get(SCOPE_OPT)
    order = list(Scope)
    return tuple(sorted(required or (), key=order.index))


def _in_schema(handler: HTTPRouteHandler) -> bool:
    return bool(handler.resolve_include_in_schema())


def route_docs(app: Litestar) -> list[RouteDoc]:
    """Every route the app answers (the OpenAPI document's operations and ``UNDOCUMENTED``), sorted by
    path then method."""
    rows: list[RouteDoc] = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for method, (handler, _kwargs) in route.route_handler_map.items():
            documented = _in_schema(handler)
            if method in _SKIPPED_METHODS or not (documented or route.path_format in UNDOCUMENTED):
                continue
            summary = (handler.summary or "") if documented else UNDOCUMENTED[route.path_format]
            rows.append(RouteDoc(str(method), route.path_format, summary, _scopes_of(handler)))
    rank = {"GET": 0, "POST": 1, "PUT": 2, "PATCH": 3, "DELETE": 4}
    return sorted(rows, key=lambda r: (r.path, rank.get(r.method, 9)))


def undocumented_routes(app: Litestar) -> list[str]:
    """Paths the app answers that neither the OpenAPI document nor ``UNDOCUMENTED`` nor the reference
    page's own routes (under ``/schema/``) account for; a test keeps this empty."""
    missing: list[str] = []
    for route in app.routes:
        if route.path_format in UNDOCUMENTED or route.path_format.startswith(SCHEMA_PATH + "/"):
            continue
        if isinstance(route, HTTPRoute):
            handlers = [h for m, (h, _k) in route.route_handler_map.items() if m not in _SKIPPED_METHODS]
            if any(_in_schema(h) for h in handlers):
                continue
        missing.append(route.path_format)
    return missing


def document_scopes(app: Litestar) -> None:
    """Append each operation's scope statement to its description in the app's (cached) OpenAPI
    document. Call once, after every route is registered."""
    spec = app.openapi_schema
    for route in app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        item = (spec.paths or {}).get(route.path_format)
        if item is None:
            continue
        for method, (handler, _kwargs) in route.route_handler_map.items():
            operation = getattr(item, str(method).lower(), None)
            if operation is None or not _in_schema(handler):
                continue
            statement = scope_statement(_scopes_of(handler))
            text = operation.description or ""
            if statement not in text:
                operation.description = f"{text}\n\n{statement}" if text else statement


class _Asset(enum.Enum):
    JS = "swagger-ui-bundle.js"
    PRESET_JS = "swagger-ui-standalone-preset.js"
    CSS = "swagger-ui.css"
    ICON = "favicon-32x32.png"

    @property
    def url(self) -> str:
        return f"{ASSETS_PATH}/{self.value}"


def reference_page() -> list[OpenAPIRenderPlugin]:
    """The render plugin for ``OpenAPIConfig.render_plugins``: Swagger UI at ``/schema`` (and
    ``/schema/swagger``) loading only same-origin assets."""
    return [
        SwaggerRenderPlugin(
            js_url=_Asset.JS.url,
            css_url=_Asset.CSS.url,
            standalone_preset_js_url=_Asset.PRESET_JS.url,
            favicon=f"<link rel='icon' type='image/png' href='{_Asset.ICON.url}'>",
        )
    ]


@functools.cache
def _asset(name: str) -> tuple[bytes, bool] | None:
    """(the file's bytes, whether they are gzip-compressed) of a vendored asset, or None when there is none
    of that name: ``name`` itself, else ``name.gz``."""
    if "/" in name or name.startswith("."):
        return None
    for candidate, compressed in ((ASSETS_DIR / name, False), (ASSETS_DIR / f"{name}.gz", True)):
        if candidate.is_file():
            return candidate.read_bytes(), compressed
    return None


@functools.cache
def _decompressed(name: str) -> bytes:
    found = _asset(name)
    assert found is not None
    return gzip.decompress(found[0])


@get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, name="schema-assets", sync_to_thread=False)
def _serve_asset(
    name: Annotated[str, Parameter(max_length=128)], request: Request[Any, Any, Any]
) -> Response[bytes]:
    found = _asset(name)
    if found is None:
        raise NotFoundException(f"no asset {name!r}")
    body, compressed = found
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    headers = {"Cache-Control": "public, max-age=86400"}
    if compressed:
        headers["Vary"] = "Accept-Encoding"
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
        else:
            body = _decompressed(name)
    return Response(body, media_type=media_type, headers=headers)


def reference_assets() -> Router:
    """The route serving the vendored Swagger UI (no API key, not in the schema)."""
    return Router(path="/", route_handlers=[_serve_asset])
