"""The API reference: a Swagger UI page at ``/schema`` that needs no internet, and the API-key scope of
every route, read from the route's own declaration (``opt=scopes(...)``, which ``service.auth`` enforces).

The page's JavaScript, CSS and icon are vendored under ``service/static/swagger-ui`` (version and source
in its README) and served at ``/schema/assets``; the JSON document stays at ``/schema/openapi.json``.
``route_docs`` lists every route with its scope for the README generator (``scripts/readme.py``), and
``document_scopes`` writes the same statement into each operation's description, so the README, the OpenAPI
document and the guard cannot disagree.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from pathlib import Path

import msgspec
from litestar import Litestar, Router
from litestar.handlers import HTTPRouteHandler
from litestar.openapi.plugins import OpenAPIRenderPlugin, SwaggerRenderPlugin
from litestar.routes import HTTPRoute
from litestar.static_files import create_static_files_router

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


def reference_assets() -> Router:
    """The static files route serving the vendored Swagger UI (no API key, not in the schema)."""
    return create_static_files_router(path=ASSETS_PATH, directories=[ASSETS_DIR], name="schema-assets")
