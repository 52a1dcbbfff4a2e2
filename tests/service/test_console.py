"""The console's files over HTTP (no browser): every answer carries the strict CSP, every asset the page
references is served with a type the browser will run, nothing outside ``service/console`` is reachable,
and the page's scripts build the DOM without HTML strings. The browser walk is
``test_console_browser.py``."""

from __future__ import annotations

import fnmatch
import hashlib
import posixpath
import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path

import pytest
from litestar.testing import TestClient

from models.recommender import Recommender
from service.api.console import CONSOLE_DIR, CSP, console_files
from tests.service.api_fixtures import make_app

PAGES = ("journey", "visitor", "experiments", "catalog", "models")


class _Refs(HTMLParser):
    """The URLs of the page's scripts, style sheets and icons, and whether it has inline script or style."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if "style" in a:
            self.inline.append(f"style attribute on <{tag}>")
        if any(k.startswith("on") for k in a):
            self.inline.append(f"event handler attribute on <{tag}>")
        if tag == "script":
            self._in_script = True
            if a.get("src"):
                self.refs.append(str(a["src"]))
        elif tag == "link" and a.get("href") and not str(a["href"]).startswith("data:"):
            self.refs.append(str(a["href"]))
        elif tag == "style":
            self.inline.append("<style> element")

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline.append("inline <script>")


@pytest.fixture
def client(models_dir: Path, recommender: Recommender) -> TestClient:  # type: ignore[type-arg]
    with TestClient(make_app(models_dir, recommender)) as c:
        yield c


def _module_imports(source: str) -> list[str]:
    return re.findall(r"""^\s*import\s[^'"]*from\s+["']([^"']+)["']""", source, flags=re.MULTILINE)


def test_the_page_and_every_asset_it_references_are_served_with_the_csp(client: TestClient) -> None:  # type: ignore[type-arg]
    r = client.get("/console")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert r.headers["content-security-policy"] == CSP
    assert r.headers["x-content-type-options"] == "nosniff"
    refs = _Refs()
    refs.feed(r.text)
    assert refs.inline == []
    assert "/console/vendor/chart.js/chart.umd.min.js" in refs.refs
    # the page's own references, then every module they import, transitively
    todo, seen = list(refs.refs), set()
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        a = client.get(url)
        assert a.status_code == 200, url
        assert a.headers["content-security-policy"] == CSP, url
        assert a.headers["x-content-type-options"] == "nosniff", url
        kind = a.headers["content-type"]
        if url.endswith(".js"):
            assert kind.startswith("text/javascript"), (url, kind)  # nosniff: anything else is not run
            base = url.rsplit("/", 1)[0]
            for imported in _module_imports(a.text):
                assert imported.startswith(("./", "../")), imported
                todo.append(posixpath.normpath(posixpath.join(base, imported)))
        elif url.endswith(".css"):
            assert kind.startswith("text/css")
    pages = {u for u in seen if "/pages/" in u}
    assert pages == {f"/console/js/pages/{p}.js" for p in PAGES}
    # every file of the console the page does not load is documentation
    unused = {f"/console/{name}" for name in console_files()} - seen - {"/console/index.html"}
    assert unused == {"/console/vendor/chart.js/README.md", "/console/vendor/chart.js/LICENSE.md"}


def test_console_routes_need_no_key_and_reach_nothing_else(client: TestClient) -> None:  # type: ignore[type-arg]
    assert client.get("/console/").status_code == 200
    assert client.get("/console/index.html").headers["content-security-policy"] == CSP
    for path in (
        "/console/nope.js",
        "/console/../app.py",
        "/console/%2e%2e/app.py",
        "/console/js/../../app.py",
        "/console/vendor/chart.js/",
        "/console/.gitignore",
    ):
        r = client.get(path)
        assert r.status_code == 404, path
        if path.startswith("/console/") and ".." not in path and "%2e" not in path:
            assert r.headers["content-security-policy"] == CSP, path  # an error page is one too
    # the data is not: /v1 still asks for a key
    assert client.get("/v1/models").status_code == 401


def test_the_scripts_never_write_html() -> None:
    """Data reaches the DOM as text: no innerHTML/outerHTML/insertAdjacentHTML/document.write, no eval."""
    forbidden = re.compile(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function")
    scripts = [p for p in CONSOLE_DIR.rglob("*.js") if "vendor" not in p.parts]
    assert len(scripts) >= 9
    for p in scripts:
        assert not forbidden.search(p.read_text()), p


def test_the_package_ships_every_console_file() -> None:
    """pyproject.toml's package data covers every file the console serves (a new folder needs a line)."""
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["service"]
    service_dir = CONSOLE_DIR.parent
    for name in console_files():
        relative = (CONSOLE_DIR / name).relative_to(service_dir).as_posix()
        assert any(fnmatch.fnmatch(relative, p) and "/" not in relative[len(p) - 1 :] for p in patterns), (
            relative
        )


def test_the_vendored_chart_library_is_the_pinned_build() -> None:
    vendor = CONSOLE_DIR / "vendor" / "chart.js"
    head = (vendor / "chart.umd.min.js").read_text()[:200]
    readme = (vendor / "README.md").read_text()
    version = re.search(r"Chart\.js v(\d+\.\d+\.\d+)", head)
    assert version is not None
    assert f"`chart.js` {version.group(1)}" in readme
    digest = hashlib.sha256((vendor / "chart.umd.min.js").read_bytes()).hexdigest()
    assert f"`{digest}`" in readme  # the README names the file's sum: update both together
    assert (vendor / "LICENSE.md").read_text().startswith("The MIT License")
    assert all(p.stat().st_size < 1_000_000 for p in CONSOLE_DIR.rglob("*"))
