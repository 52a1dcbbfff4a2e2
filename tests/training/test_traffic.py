"""``simulate-traffic`` against a scripted server (httpx's MockTransport): what it sends, how it retries,
how it copes with an older server, and that a seed gives the same traffic whatever the concurrency.

The real server is driven in ``tests/service/test_simulate_traffic_e2e.py``."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import httpx
import numpy as np
import pytest

from journeyrec.cli import main
from models.errors import InvalidInputError
from training.simulate import Shop, SimulationConfig
from training.traffic import ServerRefusedError, TrafficConfig, TrafficSummary, run_traffic

ITEMS, SHOP_SEED = 300, 5
SHOP = Shop(SimulationConfig(items=ITEMS, seed=SHOP_SEED), np.random.default_rng(SHOP_SEED))
PRODUCT_IDS = [c.item_id for c in SHOP.items[: SHOP.n_products]]
CONTENT_IDS = [c.item_id for c in SHOP.items[SHOP.n_products :]]
PRICE = {c.item_id: c.price for c in SHOP.items}


class FakeServer:
    """Answers like journeyrec: lists drawn from the visitor id (so the same visitor gets the same list
    whatever the order of requests), events deduplicated by event_id."""

    def __init__(
        self, *, ids: bool = True, identities: bool = True, busy: int = 0, status: int = 200
    ) -> None:
        self.ids, self.identities, self.busy, self.status = ids, identities, busy, status
        self.unknown_anonymous = False  # answer 404 "unknown anonymous id" instead of linking
        self.linked_unseen: list[str] = []  # anonymous ids linked before any of their events arrived
        self.events: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, dict[str, Any]] = {}
        self.links: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.n_lists = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[f"{request.method} {path.split('/')[2] if path.startswith('/v1/') else path}"] += 1
        if path == "/health/live":
            return httpx.Response(200, json={"status": "ok"})
        if self.status != 200:
            return httpx.Response(self.status, json={"detail": "no"})
        if path == "/v1/events":
            if self.busy:
                self.busy -= 1
                return httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"})
            events = json.loads(request.content)["events"]
            new = [e for e in events if e["event_id"] not in self.events]
            self.events.update((e["event_id"], e) for e in new)
            return httpx.Response(200, json={"accepted": len(new), "duplicates": len(events) - len(new)})
        if path == "/v1/identities":
            if not self.identities:
                return httpx.Response(404, json={"detail": "Not Found"})
            body = json.loads(request.content)
            if self.unknown_anonymous:
                return httpx.Response(404, json={"detail": f"unknown visitor {body['anonymous_id']!r}"})
            if not any(e["visitor_id"] == body["anonymous_id"] for e in self.events.values()):
                self.linked_unseen.append(body["anonymous_id"])
            self.links[body["anonymous_id"]] = body["user_id"]
            return httpx.Response(200, json={"linked": True})
        if path.endswith("/recommendations"):
            visitor = path.split("/")[3]
            rng = np.random.default_rng(sum(visitor.encode()) + 1000 * len(self.answers.get(visitor, {})))
            k, nc = int(request.url.params["k"]), int(request.url.params["n_content"])
            products = rng.choice(PRODUCT_IDS, k, replace=False).tolist()
            content = rng.choice(CONTENT_IDS, nc, replace=False).tolist()
            answer: dict[str, Any] = {
                "visitor_id": visitor,
                "stage": {"name": "awareness", "confidence": 0.5, "signals": []},
                "products": [{"item_id": i} for i in products],
                "content": [{"item_id": i} for i in content],
                "model_version": "v1",
                "fallback": False,
            }
            if self.ids:
                self.n_lists += 1
                answer["recommendation_id"] = f"r{self.n_lists:08d}"
                answer["variant"] = "treatment" if sum(visitor.encode()) % 2 else "control"
            self.answers[visitor] = answer
            return httpx.Response(200, json=answer)
        return httpx.Response(404, json={"detail": "Not Found"})


def _run(server: FakeServer, **kw: Any) -> TrafficSummary:
    args: dict[str, Any] = {
        "url": "http://shop.test",
        "api_key": "k",
        "visitors": 120,
        "days": 10,
        "items": ITEMS,
        "shop_seed": SHOP_SEED,
        "concurrency": 4,
        "seed": 3,
    }
    args.update(kw)
    return asyncio.run(run_traffic(TrafficConfig(**args), transport=httpx.MockTransport(server)))


@pytest.fixture(scope="module")
def current() -> tuple[FakeServer, TrafficSummary]:
    server = FakeServer()
    return server, _run(server)


def test_every_shown_item_gets_an_impression_with_the_list_id(
    current: tuple[FakeServer, TrafficSummary],
) -> None:
    server, summary = current
    impressions = [e for e in server.events.values() if e["event"] == "impression"]
    assert summary.lists > 0
    assert summary.lists_without_recommendation_id == 0
    assert len(impressions) == summary.lists * 13 == summary.events["impression"]
    assert all(e["recommendation_id"].startswith("r") for e in impressions)
    by_list = Counter(e["recommendation_id"] for e in impressions)
    assert set(by_list.values()) == {13}
    assert summary.unknown_items_shown == 0


def test_clicks_carts_and_purchases_carry_the_list_id(current: tuple[FakeServer, TrafficSummary]) -> None:
    server, summary = current
    events = list(server.events.values())
    attributed = [e for e in events if "recommendation_id" in e and e["event"] != "impression"]
    kinds = Counter(e["event"] for e in attributed)
    assert kinds["product_view"] == sum(o.clicks for o in summary.outcomes) > 0
    assert kinds["content_view"] == sum(o.content_clicks for o in summary.outcomes) > 0
    assert kinds["add_to_cart"] == sum(o.carts for o in summary.outcomes) > 0
    assert kinds["purchase"] == sum(o.purchases for o in summary.outcomes) > 0
    revenue = sum(e["value"] for e in attributed if e["event"] == "purchase")
    assert revenue == pytest.approx(sum(o.revenue for o in summary.outcomes))
    for e in (e for e in events if e["event"] == "purchase"):
        assert e["value"] == pytest.approx(PRICE[e["item_id"]] * e.get("quantity", 1), abs=0.006)
    assert all("value" not in e for e in events if e["event"] != "purchase")


def test_event_ids_are_unique_and_every_event_arrived(current: tuple[FakeServer, TrafficSummary]) -> None:
    server, summary = current
    assert summary.events_accepted == len(server.events) == sum(summary.events.values())
    assert summary.events_duplicate == 0
    assert summary.errors == {}
    assert summary.requests["recommendations"] == summary.sessions == server.calls["GET visitors"]


def test_logins_switch_the_visitor_to_the_user_id(current: tuple[FakeServer, TrafficSummary]) -> None:
    server, summary = current
    assert summary.logins == len(server.links) > 0
    assert summary.logins_unsupported == 0
    assert server.linked_unseen == []  # logins come on a later visit, once the server knows the visitor
    users = set(server.links.values())
    for anon, user in server.links.items():
        assert anon.replace("-a", "-u") == user
    seen_as_user = {e["visitor_id"] for e in server.events.values()} & users
    assert seen_as_user  # events after the login use the user id
    assert not {e["visitor_id"] for e in server.events.values()} - users - {f"sim3-a{i}" for i in range(120)}


def test_an_older_server_gets_no_impressions_and_no_logins() -> None:
    server = FakeServer(ids=False, identities=False)
    summary = _run(server)
    assert summary.lists == summary.lists_without_recommendation_id > 0
    assert "impression" not in summary.events
    assert all("recommendation_id" not in e for e in server.events.values())
    assert summary.logins == 0
    assert summary.logins_unsupported > 0
    assert server.calls["POST identities"] == 1  # asked once, then skipped
    assert summary.errors == {}
    assert sum(o.clicks for o in summary.outcomes) > 0  # visitors still click, without an id


def test_a_404_naming_something_is_an_error_not_a_missing_route() -> None:
    server = FakeServer()
    server.unknown_anonymous = True
    summary = _run(server, visitors=60)
    assert summary.logins == summary.logins_unsupported == 0
    assert server.calls["POST identities"] == summary.errors["404"] > 1  # still tried: the route exists


def test_busy_answers_are_retried_after_retry_after() -> None:
    server = FakeServer(busy=5)
    summary = _run(server, visitors=30)
    assert summary.retries == 5
    assert summary.errors == {}
    assert summary.events_accepted == len(server.events) == sum(summary.events.values())


def test_same_seed_same_traffic_whatever_the_concurrency() -> None:
    a, b, c = FakeServer(), FakeServer(), FakeServer()
    sa, sb = _run(a, visitors=60, concurrency=1), _run(b, visitors=60, concurrency=16)
    _run(c, visitors=60, seed=4)

    def shape(s: FakeServer) -> dict[str, tuple[str, str, str]]:
        return {k: (e["visitor_id"], e["item_id"], e["event"]) for k, e in s.events.items()}

    assert shape(a) == shape(b)
    assert sa.outcomes == sb.outcomes
    assert {e["visitor_id"] for e in c.events.values()}.isdisjoint(
        {e["visitor_id"] for e in a.events.values()}
    )


def test_a_refused_key_stops_the_run() -> None:
    with pytest.raises(ServerRefusedError, match="401"):
        _run(FakeServer(status=401), visitors=5)


def test_an_unreachable_server_is_one_input_error() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    cfg = TrafficConfig(url="http://127.0.0.1:9", api_key="k", visitors=2)
    with pytest.raises(InvalidInputError, match="cannot reach"):
        asyncio.run(run_traffic(cfg, transport=httpx.MockTransport(refuse)))


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--url", "ftp://x", "--api-key", "k"], "--url"),
        (["--url", "http://x", "--api-key", "k", "--visitors", "0"], "--visitors"),
        (["--url", "http://x", "--api-key", "k", "--concurrency", "zero"], "--concurrency"),
        (["--api-key", "k"], "--url"),
        (["--url", "http://127.0.0.1:9", "--api-key", "k", "--visitors", "1"], "cannot reach"),
    ],
)
def test_bad_arguments_are_one_line_with_exit_2(
    capsys: pytest.CaptureFixture[str], argv: list[str], needle: str
) -> None:
    assert main(["simulate-traffic", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert "Traceback" not in err
    assert needle in err
