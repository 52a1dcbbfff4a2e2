"""The operator console in a real headless browser: Debian's ``/usr/bin/chromium`` driven by Playwright
(never ``playwright install``), against ``journeyrec serve`` (two workers) over Redis after
``simulate-traffic`` fed it.

The tests walk every page in order with one browser tab: no data before a key, a refused key, the
journey charts, a visitor looked up and previewed at another stage, an experiment's results and stop, an
item and a rule change previewed then saved, a roll back to an older model, and a read-only key failing
an admin action with a message. Any browser console error or Content-Security-Policy violation fails the
test it happened in (the refused calls the tests provoke are the only ones allowed). A screenshot per
page goes to ``reports/console/`` (``make console-shots``).

Skipped when ``/usr/bin/chromium`` or Playwright is missing, unless JOURNEYREC_TEST_BROWSER=required
(``.ci/run`` sets it, after installing Debian's chromium), when that fails instead. Needs the test Redis
(the ``redis_url`` fixture); the run uses its own key prefix and deletes its keys.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import redis

from models.artifact import resolve_latest
from tests.conftest import REDIS_URL
from tests.service.api_fixtures import ADMIN_KEY, INGEST_KEY, KEYS_SPEC, READ_KEY
from tests.service.test_api_e2e_redis import ROOT, Server, simulate_traffic
from training.loaders import read_events
from training.pipeline import config_for, train_and_publish
from training.simulate import SimulationConfig, write_simulation

pytestmark = pytest.mark.redis

CHROMIUM = Path("/usr/bin/chromium")
BROWSER_VARIABLE = "JOURNEYREC_TEST_BROWSER"
SHOTS = ROOT / "reports" / "console"
OPERATOR_KEY = "operator-read-admin-0123456789"  # what an operator holds: read and admin
SHOP = SimulationConfig(visitors=800, items=200, days=60, seed=5)
VISITORS = 200
EXPERIMENT = "console-blend"
TIMEOUT_MS = 20_000


def _need_browser() -> Any:
    """Playwright's sync API, or a skip (a failure when JOURNEYREC_TEST_BROWSER=required)."""
    required = os.environ.get(BROWSER_VARIABLE) == "required"
    why = None
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} is missing (apt-get install chromium)"
    else:
        try:
            from playwright import sync_api
        except ImportError:
            why = "the playwright package is missing (pip install -e '.[dev]')"
    if why is not None:
        if required:
            pytest.fail(f"{BROWSER_VARIABLE}=required: {why}")
        pytest.skip(why)
    return sync_api


@pytest.fixture(scope="module")
def playwright_api() -> Any:
    return _need_browser()


@pytest.fixture(scope="module")
def two_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """Two versions trained on ``journeyrec simulate --items 200 --seed 5`` (the catalog the traffic knows):
    the older one and the newer one ``latest`` points at."""
    data, models = tmp_path_factory.mktemp("sim"), tmp_path_factory.mktemp("sim-models")
    write_simulation(SHOP, data)
    log, _ = read_events([str(data / "events.csv")], catalog=str(data / "catalog.csv"))
    versions = []
    for seed in (5, 6):
        cfg = config_for(None, seed=seed, threads=1)
        factors = msgspec.structs.replace(cfg.factors, no_components=8, epochs=3, warm_epochs=1)
        versions.append(train_and_publish(log, models, msgspec.structs.replace(cfg, factors=factors)).name)
    assert resolve_latest(models).name == versions[1]
    return models, versions[0], versions[1]


class Served:
    def __init__(self, server: Server, summary: dict[str, Any], visitor: str, item: str) -> None:
        self.server = server
        self.summary = summary
        self.visitor = visitor
        self.item = item

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = httpx.request(
            method, self.server.base + path, headers={"X-API-Key": OPERATOR_KEY}, timeout=30, **kw
        )
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def served(
    two_models: tuple[Path, str, str], redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """The server with a running experiment and a stored rule, after simulate-traffic ran against it."""
    models, _old, _new = two_models
    prefix = f"jrtest-{uuid.uuid4().hex[:10]}"
    keys = f"{KEYS_SPEC};{OPERATOR_KEY}:read+admin"
    # two workers: a roll back the console asks one of them for reaches the other through `latest`
    env = {"JOURNEYREC_API_KEYS": keys, "JOURNEYREC_MODEL_POLL_SECONDS": "0.2"}
    server = Server(models, REDIS_URL, prefix, workers=2, env_extra=env)
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    try:
        server.wait_live().close()
        s = Served(server, {}, "", "")
        s.call(
            "PUT",
            f"/v1/experiments/{EXPERIMENT}",
            json={
                "placements": ["home"],
                "variants": [
                    {"name": "control", "control": True},
                    {"name": "agnostic", "blend": "stage_agnostic"},
                ],
            },
        )
        s.call("POST", f"/v1/experiments/{EXPERIMENT}/start")
        _, s.summary = simulate_traffic(
            server.base,
            INGEST_KEY,
            tmp_path_factory.mktemp("traffic") / "summary.json",
            visitors=VISITORS,
            concurrency=4,
            seed=3,
            items=SHOP.items,
            shop_seed=SHOP.seed,
        )
        # a visitor with a history worth showing, and an item they were shown
        prefix_ids = s.summary["id_prefix"]
        for vid in (f"{prefix_ids}-u{i}" for i in range(VISITORS)):  # users: erase reaches their ids
            j = s.call("GET", f"/v1/visitors/{vid}/journey")
            if len(j["touchpoints"]) >= 5:
                s.visitor, s.item = vid, j["touchpoints"][0]["item_id"]
                break
        assert s.visitor, "no visitor with five touchpoints"
        category = s.call("GET", f"/v1/items/{s.item}")["served"]["category"]
        rule = {
            "id": "boost-first",
            "action": {"type": "boost", "factor": 2.0},
            "condition": {"categories": [category]},
        }
        s.call("PUT", "/v1/rules", json={"rules": [rule]})
        yield s
    finally:
        server.stop()
        for key in client.scan_iter(match=f"*{prefix}*", count=1000):
            client.delete(key)
        client.close()


class Tab:
    """One browser tab on the console; it records console errors, page errors and CSP violations."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.base = base
        self.errors: list[str] = []
        page.on(
            "console",
            lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.add_init_script(
            "document.addEventListener('securitypolicyviolation', e => "
            "console.error('CSP violation: ' + e.violatedDirective + ' ' + e.blockedURI));"
        )

    def take_errors(self, allowed: re.Pattern[str] | None = None) -> list[str]:
        """The errors so far that ``allowed`` does not match (a refused call the test provoked); clears."""
        found = [e for e in self.errors if allowed is None or not allowed.search(e)]
        self.errors.clear()
        return found

    def goto(self, page: str) -> None:
        self.page.goto(f"{self.base}/console#{page}")
        self.page.wait_for_selector(f'.tabs a[data-page="{page}"][aria-current="page"]')

    def shot(self, name: str) -> None:
        """Save the page's screenshot, once every form control on it has a label."""
        unlabelled = self.page.evaluate(
            "[...document.querySelectorAll('input, select, textarea')]"
            ".filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.outerHTML)"
        )
        assert unlabelled == []
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    def use_key(self, key: str) -> None:
        self.page.get_by_label("API key", exact=True).fill(key)
        self.page.get_by_label("API key", exact=True).press("Enter")  # the keyboard submits the form


@pytest.fixture(scope="module")
def tab(playwright_api: Any, served: Served) -> Iterator[Tab]:
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1366, "height": 768})
            context.set_default_timeout(TIMEOUT_MS)
            yield Tab(context.new_page(), served.server.base)
        finally:
            browser.close()


@pytest.fixture(autouse=True)
def no_browser_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "tab" in request.fixturenames:
        t: Tab = request.getfixturevalue("tab")
        assert t.take_errors() == []


REFUSED = re.compile(r"Failed to load resource: the server responded with a status of (401|403)")


def test_no_data_without_a_key(tab: Tab) -> None:
    calls: list[str] = []
    tab.page.on("request", lambda r: calls.append(r.url) if "/v1/" in r.url else None)
    tab.goto("journey")
    tab.page.get_by_text("No data without an API key").wait_for()
    assert calls == []


def test_a_refused_key_says_so(tab: Tab) -> None:
    tab.use_key("not-a-key-of-this-service")
    alert = tab.page.get_by_role("alert")
    alert.wait_for()
    assert "API key was refused (401" in alert.inner_text()
    assert len(tab.take_errors()) == 1  # the 401 itself, and nothing else
    tab.page.get_by_role("button", name="Forget key").click()
    tab.page.get_by_text("No data without an API key").wait_for()


def test_journey_page(tab: Tab, served: Served) -> None:
    # a cart added 80 hours ago, expired (72 hours) 8 hours ago: an abandoned cart
    added = time.time() - 80 * 3_600
    cart = [("product_view", added - 60), ("add_to_cart", added)]
    events = [
        {"visitor_id": "abandoner", "item_id": served.item, "event": kind, "timestamp": t} for kind, t in cart
    ]
    r = httpx.post(
        f"{served.server.base}/v1/events",
        json={"events": events},
        headers={"X-API-Key": INGEST_KEY},
        timeout=30,
    )
    assert r.status_code == 200, r.text
    tab.use_key(OPERATOR_KEY)
    tab.page.get_by_text("key set (…6789)").wait_for()
    # kept for this tab only
    assert tab.page.evaluate("sessionStorage.getItem('journeyrec.apiKey')") == OPERATOR_KEY
    assert tab.page.evaluate("localStorage.length") == 0
    funnel = tab.page.locator("table:has(caption:text('Funnel'))")
    funnel.wait_for()
    first = funnel.locator("tbody tr").first.locator("td").first.inner_text()
    assert int(first.replace(",", "")) > 0  # awareness visitors from the traffic
    assert tab.page.locator("canvas").count() == 3
    assert tab.page.locator("table:has(caption:text('Transitions')) tbody tr").count() >= 1
    by_time = tab.page.locator("table:has(caption:text('Changes by time in the period')) tbody tr")
    abandoned = by_time.first.locator("td").first.inner_text()
    assert int(abandoned.replace(",", "")) >= 1
    # the page says when its data is on screen (scripts/bench_console.py times pages by it)
    tab.page.locator('main[aria-busy="false"] .page[data-page="journey"]').wait_for()
    yesterday = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).date().isoformat()
    tab.page.get_by_label("From (UTC, inclusive)").fill(yesterday)  # the traffic came in the last minutes
    tab.page.get_by_label("Granularity").select_option("hour")
    tab.page.get_by_role("button", name="Show").click()
    tab.page.get_by_text("by hour").wait_for()
    tab.shot("journey")


def test_visitor_page(tab: Tab, served: Served) -> None:
    # a login links a fresh cookie to the visitor (a user id): the page lists it
    anon = f"{served.visitor}-cookie-{uuid.uuid4().hex[:6]}"
    link = {"anonymous_id": anon, "user_id": served.visitor}
    r = httpx.post(f"{served.server.base}/v1/identities", json=link, headers={"X-API-Key": INGEST_KEY})
    assert r.status_code == 200, r.text
    tab.goto("visitor")
    tab.page.get_by_label("Visitor id").fill(served.visitor)
    tab.page.get_by_role("button", name="Look up").click()
    touchpoints = tab.page.locator("table:has(caption:text('Touchpoints')) tbody tr")
    touchpoints.first.wait_for()
    assert touchpoints.count() >= 5
    # each touchpoint with the stage just after it, as the API answers it
    answer = served.call("GET", f"/v1/visitors/{served.visitor}/journey?limit=50")["touchpoints"]
    shown = touchpoints.locator("td:last-child").all_inner_texts()
    assert shown == [t["stage"] for t in answer]
    products = tab.page.locator("table:has(caption:text('Products')) tbody tr")
    products.first.wait_for()
    assert products.count() == 10
    recs = tab.page.locator("section:has(h3:text-is('Recommendations')) dl.facts")
    assert "(inferred)" in recs.inner_text()
    identities = tab.page.locator("section:has(h3:text-is('Linked identities'))")
    identities.get_by_role("link", name=anon, exact=True).wait_for()
    linked = served.call("GET", f"/v1/visitors/{served.visitor}/identities")["anonymous_ids"]
    assert anon in linked
    assert identities.locator("ul li").count() == len(linked)
    # what the visitor would get at another stage
    tab.page.get_by_label("Stage (preview)").select_option("decision")
    tab.page.get_by_role("button", name="Look up").click()
    tab.page.get_by_text("decision (chosen above)").wait_for()
    tab.shot("visitor")
    # the cookie's own page: an alias of the user, which links back
    identities.get_by_role("link", name=anon, exact=True).click()
    identities.get_by_text(f"{anon} (this id)").wait_for()
    assert tab.page.evaluate("location.hash") == f"#visitor/{anon}"
    identities.get_by_role("link", name=served.visitor, exact=True).click()
    identities.get_by_role("link", name=anon, exact=True).wait_for()
    assert tab.page.evaluate("location.hash") == f"#visitor/{served.visitor}"


def test_what_is_typed_and_answered_stays_text(tab: Tab) -> None:
    hostile = '<img src=x onerror="window.__owned=1">'
    tab.goto("visitor")
    tab.page.get_by_label("Visitor id").fill(hostile)
    tab.page.get_by_role("button", name="Look up").click()
    # the API echoes the id: shown as the characters typed, never parsed as HTML
    tab.page.locator("dl.facts dd", has_text=hostile).first.wait_for()
    tab.page.get_by_text("no touchpoint stored for this visitor").wait_for()
    assert tab.page.locator("main img").count() == 0
    assert tab.page.evaluate("window.__owned") is None


def test_the_keyboard_reaches_every_page(tab: Tab) -> None:
    tab.goto("journey")
    tab.page.reload()  # the focus starts at the top of the document
    tab.page.wait_for_selector('.tabs a[data-page="journey"][aria-current="page"]')
    for _ in range(10):  # the skip link, then the page tabs
        tab.page.keyboard.press("Tab")
        if tab.page.evaluate("document.activeElement.dataset.page") == "models":
            break
    outline = tab.page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")  # the focus is visible
    tab.page.keyboard.press("Enter")
    tab.page.wait_for_selector('.tabs a[data-page="models"][aria-current="page"]')
    tab.page.locator("table:has(caption:text('Versions, newest first'))").wait_for()


def test_experiments_page(tab: Tab, served: Served) -> None:
    tab.goto("experiments")
    tab.page.get_by_role("button", name=f"Results of {EXPERIMENT}").click()
    cells = tab.page.locator("table:has(caption:text('Per variant and stage')) tbody tr")
    cells.first.wait_for()
    assert cells.count() >= 2
    assert tab.page.locator(".experiment-results canvas").count() == 1
    tab.page.get_by_role("button", name=f"Stop {EXPERIMENT}").click()
    tab.page.get_by_text(f"Experiment {EXPERIMENT} is stopped.").wait_for()
    assert served.call("GET", f"/v1/experiments/{EXPERIMENT}")["state"] == "stopped"
    tab.page.locator(".experiment-results canvas").wait_for()
    tab.shot("experiments")


def test_catalog_and_rules_page(tab: Tab, served: Served) -> None:
    tab.goto("catalog")
    tab.page.locator("table:has(caption:text('Rules')) tbody tr").first.wait_for()
    tab.page.get_by_label("Item id").fill(served.item)
    tab.page.get_by_role("button", name="Find item").click()
    tab.page.get_by_text("boost-first (boost)").wait_for()  # the stored rule touches the item's category
    editor = tab.page.get_by_label("Rule set (JSON)")
    doc = json.loads(editor.input_value())
    doc["rules"].append({"id": "pin-it", "action": {"type": "pin", "item_id": served.item, "position": 1}})
    editor.fill(json.dumps(doc, indent=2))
    save = tab.page.get_by_role("button", name="Save rule set")
    assert save.is_disabled()  # not before a preview
    tab.page.get_by_role("button", name="Preview change").click()
    tab.page.get_by_text(re.compile(r"Preview against stored version 1 on \d+ recent visitors")).wait_for()
    assert served.call("GET", "/v1/rules")["version"] == 1  # a preview stores nothing
    tab.shot("catalog")
    save.click()
    tab.page.get_by_text(re.compile(r"Saved as version 2 by ")).wait_for()
    stored = served.call("GET", "/v1/rules")
    assert [r["id"] for r in stored["rules"]] == ["boost-first", "pin-it"]
    tab.page.locator("table:has(caption:text('Changes of the rule set')) tbody tr").nth(1).wait_for()


def test_models_page_rolls_back(tab: Tab, served: Served, two_models: tuple[Path, str, str]) -> None:
    _models, old, new = two_models
    tab.goto("models")
    tab.page.locator("table:has(caption:text('Blend weights')) tbody tr").first.wait_for()
    assert tab.page.locator("canvas").count() == 1
    # both workers, each with the version it serves
    workers = tab.page.locator("table:has(caption:text('Workers and the version each serves')) tbody tr")
    assert workers.count() == 2
    assert [t.split("\t")[1] for t in workers.all_inner_texts()] == [new, new]
    listed = {w["worker"] for w in served.call("GET", "/v1/models")["workers"]}
    assert set(workers.locator("th").all_inner_texts()) == listed
    tab.shot("models")
    tab.page.get_by_role("button", name=f"Activate {old}").click()
    tab.page.get_by_role("alertdialog").get_by_role("button", name="Activate").click()
    tab.page.get_by_text(f"Activated {old} (was {new})").wait_for()
    tab.shot("models-rolled-back")
    assert served.call("GET", "/v1/models")["latest"] == old
    # both workers serve it within their poll interval: 12 answers in a row from the old version
    run = 0
    for _ in range(300):
        r = served.call("GET", f"/v1/visitors/{served.visitor}/recommendations")
        run = run + 1 if r["model_version"] == old else 0
        if run == 12:
            break
        time.sleep(0.05)
    assert run == 12
    # the page says so too: both workers serve the old version, which latest points at
    for _ in range(100):
        tab.page.reload()
        workers.first.wait_for()
        if [t.split("\t")[1] for t in workers.all_inner_texts()] == [old, old]:
            break
        time.sleep(0.1)
    assert [t.split("\t")[1] for t in workers.all_inner_texts()] == [old, old]
    assert workers.get_by_text("not latest").count() == 0


def test_a_read_only_key_sees_but_cannot_act(tab: Tab, served: Served) -> None:
    tab.page.get_by_role("button", name="Forget key").click()
    tab.use_key(READ_KEY)
    tab.goto("models")
    _old, new = served.call("GET", "/v1/models")["versions"]
    tab.page.get_by_role("button", name=f"Activate {new}").click()
    tab.page.get_by_role("alertdialog").get_by_role("button", name="Activate").click()
    alert = tab.page.get_by_role("alert")
    alert.wait_for()
    assert "not allowed to do this (403" in alert.inner_text()
    assert "admin" in alert.inner_text()
    tab.goto("catalog")  # the rules need admin: said so, the item lookup still works
    tab.page.get_by_text("not allowed to do this (403").first.wait_for()
    assert tab.take_errors(REFUSED) == []
    # and an admin-only key cannot read the journey analytics
    tab.page.get_by_role("button", name="Forget key").click()
    tab.use_key(ADMIN_KEY)
    tab.goto("journey")
    tab.page.get_by_text("not allowed to do this (403").wait_for()
    assert tab.take_errors(REFUSED) == []


def test_erase_a_visitor_after_confirmation(tab: Tab, served: Served) -> None:
    tab.page.get_by_role("button", name="Forget key").click()
    tab.use_key(OPERATOR_KEY)
    tab.goto("visitor")
    tab.page.get_by_label("Visitor id").fill(served.visitor)
    tab.page.get_by_role("button", name="Look up").click()
    tab.page.locator("table:has(caption:text('Touchpoints')) tbody tr").first.wait_for()
    tab.page.get_by_role("button", name="Erase this visitor…").click()
    dialog = tab.page.get_by_role("alertdialog")
    dialog.get_by_role("button", name="Cancel").click()
    assert len(served.call("GET", f"/v1/visitors/{served.visitor}/journey")["touchpoints"]) >= 5
    tab.page.get_by_role("button", name="Erase this visitor…").click()
    dialog.get_by_role("button", name="Erase").click()
    tab.page.get_by_text(
        re.compile(rf"Visitor {re.escape(served.visitor)} erased: \d+ records removed")
    ).wait_for()
    assert served.call("GET", f"/v1/visitors/{served.visitor}/journey")["touchpoints"] == []
