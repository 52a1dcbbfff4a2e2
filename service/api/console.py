"""The operator console: a static single-page app at ``/console`` (files in ``service/console``).

The console is a client of the public ``/v1`` API like any other: its pages and scripts need no key, and
every piece of data it shows comes from ``/v1`` with the operator's ``X-API-Key`` (entered once, kept in the
browser's ``sessionStorage``). Every answer of these routes carries a strict Content-Security-Policy
(``CSP``: same-origin scripts, styles and connections only, no inline script or style, no framing) and
``X-Content-Type-Options: nosniff``. The files served are those under ``service/console``, read once into a
table at the first request (no path from a request reaches the file system); the chart library is vendored
there (``vendor/chart.js/README.md``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated

from litestar import Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.params import Parameter

CONSOLE_PATH = "/console"
CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # small files that change with the package: the browser revalidates instead of keeping stale copies
    "Cache-Control": "no-cache",
}
#: the media type of each kind of file the console serves (anything else is not served); Litestar adds
#: "; charset=utf-8" to the text types
MEDIA_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".md": "text/plain",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@functools.cache
def console_files() -> dict[str, tuple[bytes, str]]:
    """Every file of the console by its path under ``/console/`` ("vendor/chart.js/chart.umd.min.js"):
    its bytes and media type. Read once."""
    files: dict[str, tuple[bytes, str]] = {}
    for path in sorted(CONSOLE_DIR.rglob("*")):
        media = MEDIA_TYPES.get(path.suffix)
        if path.is_file() and media is not None:
            files[path.relative_to(CONSOLE_DIR).as_posix()] = (path.read_bytes(), media)
    return files


def _answer(name: str) -> Response[bytes]:
    found = console_files().get(name)
    if found is None:
        raise NotFoundException(f"no console file {name!r}", headers=HEADERS)
    body, media = found
    return Response(body, media_type=media, headers=HEADERS)


@get(CONSOLE_PATH, include_in_schema=False, name="console", sync_to_thread=False)
def console_page() -> Response[bytes]:
    """The console's single page (its routes are URL fragments: ``/console#visitor``)."""
    return _answer("index.html")


@get(f"{CONSOLE_PATH}/{{asset:path}}", include_in_schema=False, name="console-assets", sync_to_thread=False)
def console_asset(asset: Annotated[Path, Parameter(description="file under /console/")]) -> Response[bytes]:
    name = str(asset).lstrip("/")
    return _answer(name or "index.html")


def console_router() -> Router:
    """The console's routes (no API key, not in the API schema)."""
    return Router(path="/", route_handlers=[console_page, console_asset])
