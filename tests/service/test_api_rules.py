"""``/v1/rules`` in process: scopes, validation, versions and audit, the answers following a change, and
the preview's known answers on the storefront model."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from litestar import Litestar
from litestar.testing import TestClient

from models.errors import InvalidInputError
from models.recommender import Recommender
from service.auth import parse_api_keys
from service.cli import cli
from service.rules_file import load_rules_file
from service.store.rules_memory import MemoryRulesStore
from tests.service.api_fixtures import (
    ADMIN_KEY,
    H_ADMIN,
    H_INGEST,
    H_READ,
    api_settings,
    make_app,
    memory_store,
)
from tests.storefront import product_id, storefront_catalog

Client = TestClient[Litestar]
KETTLE = product_id("Kettle")
CATEGORY = {c.item_id: c.category for c in storefront_catalog()}
PRICE = {c.item_id: c.price for c in storefront_catalog()}
ADMIN_NAME = "key3"  # the admin key is the third in KEYS_SPEC

GARDEN_UP_IN_DECISION = {
    "id": "garden-week",
    "stages": ["decision"],
    "condition": {"categories": ["garden"]},
    "action": {"type": "boost", "factor": 10},
}
HIDE_KETTLE = {
    "id": "kettle-recall",
    "condition": {"min_price": 39, "max_price": 39},  # the kettle is the one item at 39.0
    "action": {"type": "hide"},
}


@pytest.fixture
def model(recommender: Recommender) -> Recommender:
    """A front of the shared model of its own: rules installed here stay here."""
    return copy.copy(recommender)


@pytest.fixture
def rules_store() -> MemoryRulesStore:
    return MemoryRulesStore()


@pytest.fixture
def rules_client(models_dir: Path, model: Recommender, rules_store: MemoryRulesStore) -> Iterator[Client]:
    app = make_app(models_dir, model, rules=rules_store)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _put(client: Client, body: dict[str, Any], headers: dict[str, str] = H_ADMIN) -> Any:
    return client.put("/v1/rules", json=body, headers=headers)


def _visit(client: Client, visitor: str, *events: tuple[str, str]) -> None:
    body = {"events": [{"visitor_id": visitor, "item_id": i, "event": e} for i, e in events]}
    r = client.post("/v1/events", json=body, headers=H_INGEST)
    assert r.status_code == 200, r.text


def _decision(client: Client, visitor: str) -> None:
    kettle, teapot, toaster = KETTLE, product_id("Teapot"), product_id("Toaster")
    _visit(
        client, visitor, *[(i, "product_view") for i in (kettle, teapot, toaster)], (kettle, "add_to_cart")
    )


def _consideration(client: Client, visitor: str) -> None:
    _visit(client, visitor, *[(product_id(t), "product_view") for t in ("Kettle", "Teapot", "Mug set")])


def _awareness(client: Client, visitor: str) -> None:
    _visit(client, visitor, ("c-tea-101", "content_view"), ("c-welcome", "content_view"))


def _recs(client: Client, visitor: str, k: int = 5) -> dict[str, Any]:
    r = client.get(f"/v1/visitors/{visitor}/recommendations?k={k}", headers=H_READ)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


# -- scopes ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/rules", None),
        ("PUT", "/v1/rules", {"rules": []}),
        ("GET", "/v1/rules/audit", None),
        ("POST", "/v1/rules/preview", {"rules": [], "visitor_ids": ["v"]}),
    ],
)
def test_rules_need_the_admin_scope(rules_client: Client, method: str, path: str, body: Any) -> None:
    for headers in (H_READ, H_INGEST):
        r = rules_client.request(method, path, json=body, headers=headers)
        assert r.status_code == 403, r.text
        assert "admin" in r.json()["detail"]
    assert rules_client.request(method, path, json=body).status_code == 401
    assert rules_client.request(method, path, json=body, headers=H_ADMIN).status_code == 200


# -- versions, audit, serving ----------------------------------------------------------------------------


def test_a_put_is_versioned_audited_under_the_key_name_and_served(rules_client: Client) -> None:
    got = rules_client.get("/v1/rules", headers=H_ADMIN).json()
    assert got == {"version": 0, "rules": [], "served_version": 0}
    before = _recs(rules_client, "fresh-visitor")
    assert "rules_version" not in before

    r = _put(rules_client, {"rules": [HIDE_KETTLE]})
    assert r.status_code == 200, r.text
    change = r.json()["change"]
    assert (change["version"], change["who"], change["added"], change["rules"]) == (
        1,
        ADMIN_NAME,
        ["kettle-recall"],
        1,
    )
    got = rules_client.get("/v1/rules", headers=H_ADMIN).json()
    assert got["version"] == got["served_version"] == 1
    assert got["rules"][0]["id"] == "kettle-recall"

    # the answering worker serves it at once: the kettle is never recommended, and the answer says so
    _decision(rules_client, "buyer")
    answer = _recs(rules_client, "buyer", k=10)
    assert answer["rules_version"] == 1
    assert KETTLE not in [p["item_id"] for p in answer["products"]]

    r = _put(rules_client, {"rules": [GARDEN_UP_IN_DECISION], "version": 1})
    assert r.status_code == 200, r.text
    audit = rules_client.get("/v1/rules/audit?limit=10", headers=H_ADMIN).json()["entries"]
    assert [(e["version"], e["who"], e["added"], e["removed"]) for e in audit] == [
        (2, ADMIN_NAME, ["garden-week"], ["kettle-recall"]),
        (1, ADMIN_NAME, ["kettle-recall"], []),
    ]
    assert all(e["who"] == ADMIN_NAME and "admin-key" not in json.dumps(e) for e in audit)
    assert _recs(rules_client, "buyer")["rules_version"] == 2


def test_a_stale_version_is_409_and_changes_nothing(rules_client: Client) -> None:
    assert _put(rules_client, {"rules": [HIDE_KETTLE], "version": 0}).status_code == 200
    assert _put(rules_client, {"rules": [], "version": 1}).status_code == 200
    r = _put(rules_client, {"rules": [GARDEN_UP_IN_DECISION], "version": 1})
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "conflict"
    assert "'version': 1 is not the current version 2" in r.json()["detail"]
    assert rules_client.get("/v1/rules", headers=H_ADMIN).json()["rules"] == []
    assert len(rules_client.get("/v1/rules/audit", headers=H_ADMIN).json()["entries"]) == 2


# -- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "needles"),
    [
        (
            {
                "id": "too-strong",
                "condition": {"categories": ["tea"]},
                "action": {"type": "boost", "factor": 50},
            },
            ["rule 'too-strong'", "action.factor", "rules[0]"],
        ),
        (
            {"id": "pin-nowhere", "action": {"type": "pin", "item_id": KETTLE, "position": 0}},
            ["rule 'pin-nowhere'", "action.position"],
        ),
        (
            {"id": "everything", "action": {"type": "hide"}},
            ["rule 'everything'", "condition"],
        ),
        (
            {
                "id": "bad-stage",
                "stages": ["browsing"],
                "action": {"type": "cap_per_category", "max_items": 2},
            },
            ["rules[0].stages[0]", "awareness"],
        ),
        (
            {"id": "odd", "action": {"type": "shuffle"}},
            ["rules[0].action", "shuffle"],
        ),
        (
            {"id": "x", "action": {"type": "hide"}, "condition": {"colour": "red"}},
            ["rules[0].condition", "colour"],
        ),
    ],
)
def test_a_bad_rule_is_400_naming_the_rule_and_field(
    rules_client: Client, rule: dict[str, Any], needles: list[str]
) -> None:
    r = _put(rules_client, {"rules": [HIDE_KETTLE, rule][1:]})
    assert r.status_code == 400, r.text
    detail = r.json()["detail"]
    assert all(n in detail for n in needles), detail
    assert rules_client.get("/v1/rules", headers=H_ADMIN).json()["version"] == 0  # nothing stored


def test_a_repeated_rule_id_is_400(rules_client: Client) -> None:
    r = _put(rules_client, {"rules": [HIDE_KETTLE, HIDE_KETTLE]})
    assert r.status_code == 400
    assert "'kettle-recall' is used twice" in r.json()["detail"]


def test_a_pin_the_model_cannot_place_is_stored_with_a_warning(rules_client: Client) -> None:
    pins = [
        {"id": "ghost", "action": {"type": "pin", "item_id": "no-such-item", "position": 1}},
        {"id": "guide", "action": {"type": "pin", "item_id": "c-tea-101", "position": 2}},
    ]
    r = _put(rules_client, {"rules": pins})
    assert r.status_code == 200, r.text
    assert r.json()["warnings"] == [
        "rule 'ghost': item 'no-such-item' is not in the catalog",
        "rule 'guide': item 'c-tea-101' is content, not a product",
    ]


# -- preview ---------------------------------------------------------------------------------------------


def _preview(client: Client, body: dict[str, Any]) -> dict[str, Any]:
    r = client.post("/v1/rules/preview", json=body, headers=H_ADMIN)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def test_preview_a_decision_boost_changes_only_decision_lists(rules_client: Client) -> None:
    visitors = {
        "d1": _decision,
        "d2": _decision,
        "c1": _consideration,
        "c2": _consideration,
        "a1": _awareness,
    }
    for v, walk in visitors.items():
        walk(rules_client, v)
    out = _preview(rules_client, {"rules": [GARDEN_UP_IN_DECISION], "visitor_ids": list(visitors), "k": 5})
    lists = {v["visitor_id"]: v for v in out["lists"]}
    assert {v: lists[v]["stage"] for v in visitors} == {
        "d1": "decision",
        "d2": "decision",
        "c1": "consideration",
        "c2": "consideration",
        "a1": "awareness",
    }
    for v in ("d1", "d2"):
        assert lists[v]["changed"], lists[v]
        assert lists[v]["entered"]
        assert all(CATEGORY[i] == "garden" for i in lists[v]["entered"])
        assert set(lists[v]["after"]) == (set(lists[v]["before"]) - set(lists[v]["left"])) | set(
            lists[v]["entered"]
        )
    for v in ("c1", "c2", "a1"):
        assert not lists[v]["changed"], lists[v]
        assert lists[v]["before"] == lists[v]["after"]
        assert lists[v]["entered"] == lists[v]["left"] == []
    assert (out["visitors"], out["changed"], out["share_changed"]) == (5, 2, 0.4)
    assert (out["empty"], out["rules_fallback"], out["current_version"]) == (0, 0, 0)
    # nothing was stored, and nothing is served
    assert rules_client.get("/v1/rules", headers=H_ADMIN).json()["version"] == 0
    assert "rules_version" not in _recs(rules_client, "d1")


def test_preview_a_hide_takes_the_item_out_against_the_current_rules(rules_client: Client) -> None:
    visitors = ["h1", "h2", "h3"]
    for v in visitors:
        _consideration(rules_client, v)
    assert _put(rules_client, {"rules": [GARDEN_UP_IN_DECISION]}).status_code == 200
    same = _preview(rules_client, {"rules": [GARDEN_UP_IN_DECISION], "visitor_ids": visitors, "k": 5})
    assert same["changed"] == 0
    assert same["current_version"] == 1
    # hide the first item of h1's list, by its price (every in-stock product has its own price)
    top = same["lists"][0]["before"][0]
    hide = {
        "id": "recall",
        "condition": {"min_price": PRICE[top], "max_price": PRICE[top]},
        "action": {"type": "hide"},
    }
    out = _preview(rules_client, {"rules": [GARDEN_UP_IN_DECISION, hide], "visitor_ids": visitors, "k": 5})
    for v in out["lists"]:
        # compared with the stored rules (the boost), the one difference is the hidden item
        assert top not in v["after"], v
        if top in v["before"]:
            assert v["changed"], v
            assert v["left"] == [top]
            assert len(v["entered"]) == 1
            assert [i for i in v["before"] if i != top] == v["after"][:4]
        else:
            assert not v["changed"], v
    assert out["changed"] == sum(top in v["before"] for v in out["lists"]) >= 1
    assert out["share_changed"] == round(out["changed"] / 3, 4)


def test_preview_samples_the_most_recent_visitors(rules_client: Client) -> None:
    for i in range(6):
        _awareness(rules_client, f"s{i}")
    out = _preview(rules_client, {"rules": [HIDE_KETTLE], "sample": 4})
    assert [v["visitor_id"] for v in out["lists"]] == ["s5", "s4", "s3", "s2"]


def test_preview_a_set_that_empties_a_list_says_so(rules_client: Client) -> None:
    hide_all = [
        {"id": f"hide-{c}", "condition": {"categories": [c]}, "action": {"type": "hide"}}
        for c in ("kitchen", "tea", "garden", "outdoor")
    ]
    _decision(rules_client, "e1")
    out = _preview(rules_client, {"rules": hide_all, "visitor_ids": ["e1"], "k": 5})
    (v,) = out["lists"]
    assert v["rules_fallback"] is True
    assert v["empty"] is False
    assert not v["changed"]
    assert out["rules_fallback"] == 1
    assert out["empty"] == 0


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"rules": [], "sample": 501}, "'sample'"),
        ({"rules": [], "visitor_ids": [f"v{i}" for i in range(501)]}, "'visitor_ids'"),
        ({"rules": [], "visitor_ids": ["v"], "k": 10_000}, "'k'"),
        (
            {"rules": [{"id": "a", "action": {"type": "bury", "factor": 0.5}, "condition": {"tags": ["x"]}}]},
            "rule 'a'",
        ),
    ],
)
def test_preview_bad_input_is_400_naming_the_field(
    rules_client: Client, body: dict[str, Any], needle: str
) -> None:
    r = rules_client.post("/v1/rules/preview", json=body, headers=H_ADMIN)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]


# -- the rules file --------------------------------------------------------------------------------------


def test_the_rules_file_seeds_an_empty_store_only(
    models_dir: Path, model: Recommender, tmp_path: Path
) -> None:
    path = tmp_path / "rules.json"
    path.write_text(json.dumps({"rules": [HIDE_KETTLE]}))
    store = MemoryRulesStore()
    app = make_app(models_dir, model, rules=store, rules_file=str(path))
    with TestClient(app) as c:
        got = c.get("/v1/rules", headers=H_ADMIN).json()
        assert (got["version"], got["served_version"]) == (1, 1)
        assert c.get("/v1/rules/audit", headers=H_ADMIN).json()["entries"][0]["who"] == "rules-file"
        assert _put(c, {"rules": []}).status_code == 200
    # a restart over the same store keeps the change made through the API
    with TestClient(make_app(models_dir, model, rules=store, rules_file=str(path))) as c:
        got = c.get("/v1/rules", headers=H_ADMIN).json()
        assert (got["version"], got["rules"]) == (2, [])


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (
            (
                '{"rules": [{"id": "x", "condition": {"tags": ["a"]}, '
                '"action": {"type": "boost", "factor": 20}}]}'
            ),
            "rule 'x'",
        ),
        ('{"rules": [', "invalid JSON"),
        ('{"rulez": []}', "rulez"),
        (None, "cannot be read"),
    ],
)
def test_a_bad_rules_file_is_one_line_naming_it(tmp_path: Path, content: str | None, needle: str) -> None:
    path = tmp_path / "rules.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidInputError) as err:
        load_rules_file(str(path))
    message = str(err.value)
    assert message.startswith(f"JOURNEYREC_RULES_FILE: {path}: ")
    assert "\n" not in message
    assert needle in message, message
    settings = api_settings(rules_file=str(path))
    with pytest.raises(InvalidInputError):
        make_app(tmp_path, None, store=memory_store(), rules_file=settings.rules_file)


def test_serve_stops_on_a_bad_rules_file_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.cli.run_server", lambda settings: None)  # never start a server here
    path = tmp_path / "rules.json"
    path.write_text('{"rules": [{"id": "x", "action": {"type": "pin", "item_id": "a", "position": 0}}]}')
    env = {"JOURNEYREC_API_KEYS": "cli-key-0123456789abcdef:admin", "JOURNEYREC_RULES_FILE": str(path)}
    clean = dict.fromkeys(("JOURNEYREC_MODELS", "JOURNEYREC_REDIS_URL"))
    result = CliRunner().invoke(cli, ["serve", "--models", str(tmp_path)], env={**clean, **env})
    assert result.exit_code == 2, result.output
    (line,) = result.output.strip().splitlines()
    assert f"JOURNEYREC_RULES_FILE: {path}: " in line
    assert "rule 'x': action.position must be >= 1" in line


def test_preview_a_pin_and_a_cap(rules_client: Client) -> None:
    visitors = ["p1", "p2"]
    for v in visitors:
        _awareness(rules_client, v)
    tent = product_id("Tent")
    rules = [
        {"id": "tent-first", "action": {"type": "pin", "item_id": tent, "position": 1}},
        {"id": "variety", "action": {"type": "cap_per_category", "max_items": 1}},
    ]
    out = _preview(rules_client, {"rules": rules, "visitor_ids": visitors, "k": 4})
    for v in out["lists"]:
        assert v["after"][0] == tent, v
        categories = [CATEGORY[i] for i in v["after"]]
        assert len(categories) == len(set(categories)) == 4, v  # one per category
    assert out["share_changed"] == 1.0


def test_the_audit_names_a_named_key(models_dir: Path, model: Recommender) -> None:
    keys = parse_api_keys(f"{ADMIN_KEY}:admin@merch-team")
    with TestClient(make_app(models_dir, model, rules=MemoryRulesStore(), api_keys=keys)) as c:
        assert _put(c, {"rules": [HIDE_KETTLE]}).json()["change"]["who"] == "merch-team"
        (entry,) = c.get("/v1/rules/audit", headers=H_ADMIN).json()["entries"]
        assert entry["who"] == "merch-team"
