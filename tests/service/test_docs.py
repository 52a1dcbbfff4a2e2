"""The API reference page works with no internet, and every route documents the scope it needs."""

from __future__ import annotations

import fnmatch
import gzip
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from service.app import create_app
from service.auth import SCOPE_OPT, Scope
from service.openapi_docs import ASSETS_DIR, route_docs, scope_statement, undocumented_routes
from service.settings import load_settings

KEY = "docs-test-key-0123456789"
ROOT = Path(__file__).resolve().parents[2]
_CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


@pytest.fixture
def docs_app() -> Litestar:
    """The app with API keys on and no model: the documentation needs neither a key nor a model."""
    return create_app(load_settings({"api_keys": f"{KEY}:read"}, environ={}))


@pytest.fixture
def docs_client(docs_app: Litestar) -> Iterator[TestClient[Litestar]]:
    with TestClient(docs_app) as c:
        yield c


def _vendored_file(name: str) -> Path:
    """The file behind an asset: ``name``, or ``name.gz`` for the ones kept compressed."""
    plain = ASSETS_DIR / name
    return plain if plain.is_file() else ASSETS_DIR / f"{name}.gz"


def _vendored(name: str) -> bytes:
    path = _vendored_file(name)
    return gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()


def _references(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


@pytest.mark.parametrize("page", ["/schema", "/schema/swagger"])
def test_reference_page_loads_only_same_origin_assets(docs_client: TestClient[Litestar], page: str) -> None:
    r = docs_client.get(page)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    refs = _references(r.text)
    assert len(refs) >= 3  # script, stylesheet, icon
    for url in refs:
        assert re.match(r"^/[^/]", url), f"{page} loads {url} from elsewhere"
    assert "cdn" not in r.text.lower()
    for url in refs:
        asset = docs_client.get(url)
        assert asset.status_code == 200, url
        want = _CONTENT_TYPES[Path(url).suffix]
        assert asset.headers["content-type"].startswith(want), (url, asset.headers["content-type"])
        assert asset.content == _vendored(Path(url).name)


def test_referenced_assets_are_package_data(docs_client: TestClient[Litestar]) -> None:
    """An installed (non-editable) package carries every file the page loads."""
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    patterns = data["service"]
    for url in _references(docs_client.get("/schema").text):
        rel = _vendored_file(Path(url).name).relative_to(ROOT / "service").as_posix()
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), f"{rel} is not in service's package-data"
    for name in ("LICENSE", "NOTICE", "README.md"):
        assert (ASSETS_DIR / name).is_file()


def test_openapi_json_stays_at_its_path(docs_client: TestClient[Litestar]) -> None:
    r = docs_client.get("/schema/openapi.json")
    assert r.status_code == 200
    assert "/v1/events" in r.json()["paths"]


def test_unknown_asset_is_404(docs_client: TestClient[Litestar]) -> None:
    assert docs_client.get("/schema/assets/no-such-file.js").status_code == 404
    assert docs_client.get("/schema/assets/..README.md").status_code == 404


def test_a_compressed_asset_is_sent_as_gzip_or_decompressed(docs_client: TestClient[Litestar]) -> None:
    """Swagger UI's bundle is kept as ``.gz`` (the vendored files stay under 1 MB each): a client that
    accepts gzip gets those bytes as they are, any other the plain script."""
    url = "/schema/assets/swagger-ui-bundle.js"
    stored = (ASSETS_DIR / "swagger-ui-bundle.js.gz").read_bytes()
    with docs_client.stream("GET", url, headers={"Accept-Encoding": "gzip"}) as r:
        assert r.headers["content-encoding"] == "gzip"
        assert r.headers["content-type"].startswith("text/javascript")
        assert b"".join(r.iter_raw()) == stored
    plain = docs_client.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    assert plain.content == gzip.decompress(stored)
    assert all(f.stat().st_size < 1_000_000 for f in ASSETS_DIR.iterdir())


def test_every_operation_states_the_scope_its_route_declares(
    docs_app: Litestar, docs_client: TestClient[Litestar]
) -> None:
    paths = docs_client.get("/schema/openapi.json").json()["paths"]
    operations = [(p, m, op) for p, item in paths.items() for m, op in item.items()]
    assert len(operations) >= 14
    for path, method, op in operations:
        handler = next(
            h
            for r in docs_app.routes
            if r.path_format == path
            for meth, (h, _kw) in r.route_handler_map.items()  # type: ignore[attr-defined]
            if meth.lower() == method
        )
        required = sorted(handler.opt.get(SCOPE_OPT) or (), key=list(Scope).index)
        if path.startswith("/v1/"):
            assert required, f"{method.upper()} {path} declares no scope"
        assert scope_statement(required) in op.get("description", ""), (method, path)


def test_route_table_covers_every_route(docs_app: Litestar) -> None:
    assert undocumented_routes(docs_app) == []
    rows = {(r.method, r.path): r for r in route_docs(docs_app)}
    assert rows[("POST", "/v1/events")].scopes == (Scope.INGEST,)
    assert rows[("DELETE", "/v1/visitors/{visitor_id}")].scopes == (Scope.ADMIN,)
    assert rows[("GET", "/schema/openapi.json")].scopes == ()
    assert all(r.scopes for r in rows.values() if r.path.startswith("/v1/"))
