"""End to end over real HTTP on a Redis Cluster: two ``journeyrec serve`` instances (separate processes
standing for two hosts, 2 Granian workers each) on the 3-master test cluster, sharing one models directory.

Visitors are chosen so that their hash tags ``{v:H}`` fall one in each equal band of the 16384 slots (so on
every master, and in as many slots as there are visitors); each is ingested through one instance and read,
retargeted and erased through the other, and the event stream is exported with ``journeyrec
export-events``. ``JOURNEYREC_TEST_CLUSTER_VISITORS`` sets how many (default ``VISITORS``); each test
prints its figures (``pytest -s``). Beside them: the feedback scenario with each request to the other
instance, a login linking visitors on two masters, rules, live catalog and experiment changes reaching all
four workers, model activation, and the rate limiter counting each client across both instances.

Needs the test Redis Cluster (the ``redis_cluster_url`` fixture, ``tests/conftest.py``: the tests fail when
JOURNEYREC_TEST_REDIS_CLUSTER_URL is set and the cluster does not answer, and skip when it is unset and the
default does not answer). Every run uses its own key prefix and deletes its keys (on every master).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from models.artifact import resolve_latest
from models.experiments import assign
from service.analytics.periods import member_of
from tests.service import feedback_scenario
from tests.service.api_fixtures import H_ADMIN, H_CATALOG, H_INGEST, H_READ, delete_prefix, sync_client
from tests.service.test_api_e2e_redis import ROOT, Server, _dump
from tests.storefront import product_id, train_storefront_model

pytestmark = pytest.mark.redis
VISITORS = 150
N_VISITORS = int(os.environ.get("JOURNEYREC_TEST_CLUSTER_VISITORS", str(VISITORS)))
BATCH = 500  # events per ingest request
THREADS = 8  # requests in flight while checking the visitors
MASTERS = 3  # the test cluster's masters, each holding one third of the slots


@pytest.fixture(scope="module")
def cluster_url(redis_cluster_url: str) -> str:
    return redis_cluster_url


@pytest.fixture(scope="module")
def prefix(cluster_url: str) -> Iterator[str]:
    p = f"jrtest-{uuid.uuid4().hex[:10]}"
    yield p
    delete_prefix(cluster_url, p)


@pytest.fixture(scope="module")
def models(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the models directory, shared by both instances (activate moves its ``latest``)."""
    d = tmp_path_factory.mktemp("cluster-models") / "models"
    shutil.copytree(models_dir, d, symlinks=True)
    return d


@pytest.fixture(scope="module")
def fleet(models: Path, cluster_url: str, prefix: str) -> Iterator[tuple[Server, Server]]:
    """Two instances of two workers each on the cluster, started together."""
    env = {"JOURNEYREC_MODEL_POLL_SECONDS": "0.2", "JOURNEYREC_HEARTBEAT_SECONDS": "1"}
    servers = [Server(models, cluster_url, prefix, workers=2, env_extra=env) for _ in range(2)]
    try:
        for s in servers:
            s.wait_live().close()
        yield servers[0], servers[1]
    finally:
        logs = [s.stop() for s in servers]
    errors = [line for log in logs for line in log.splitlines() if "Traceback" in line or "ERROR" in line]
    assert not errors, "\n".join(logs)


def spread_visitors(n: int, prefix: str, tag: str) -> list[str]:
    """``n`` visitor ids, the i-th with its keys ``P:{v:H}:...`` in the i-th of ``n`` equal bands of slots."""
    out: list[str] = []
    for i in range(n):
        lo, hi = i * REDIS_CLUSTER_HASH_SLOTS // n, (i + 1) * REDIS_CLUSTER_HASH_SLOTS // n
        j = 0
        while not lo <= _slot(prefix, f"{tag}-{i}-{j}") < hi:
            j += 1
        out.append(f"{tag}-{i}-{j}")
    return out


def _slot(prefix: str, visitor: str) -> int:
    return int(key_slot(f"{prefix}:{{v:{visitor.encode().hex()}}}:events".encode()))


def _fresh(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a new connection (a kept-alive connection would always reach the same worker)."""
    return httpx.request(method, server.base + path, timeout=10, **kw)


# the journeys of the test: the events of a visitor of each kind (all on the kettle but for the browser),
# and the stage it is in after them
KETTLE = product_id("Kettle")
JOURNEYS: list[tuple[str, list[tuple[str, str]]]] = [
    ("decision", [(KETTLE, "product_view"), (KETTLE, "add_to_cart")]),
    ("retention", [(KETTLE, "add_to_cart"), (KETTLE, "checkout"), (KETTLE, "purchase")]),
    (
        "consideration",
        [
            (KETTLE, "product_view"),
            (product_id("Teapot"), "product_view"),
            (product_id("Toaster"), "product_view"),
            (KETTLE, "product_view"),
        ],
    ),
]


def _events(visitors: list[str], t0: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, v in enumerate(visitors):
        for n, (item, kind) in enumerate(JOURNEYS[i % len(JOURNEYS)][1]):
            out.append(
                {
                    "visitor_id": v,
                    "item_id": item,
                    "event": kind,
                    "timestamp": t0 + 60 * n,
                    "event_id": f"{v}-{n}",
                }
            )
    return out


def _check_visitor(http: httpx.Client, i: int, v: str) -> list[str]:
    """What is wrong with visitor ``v`` (the i-th) read through ``http``: journey, recommendations,
    retargeting with its sent set. Empty when all is right."""
    stage, events = JOURNEYS[i % len(JOURNEYS)]
    wrong: list[str] = []
    j = http.get(f"/v1/visitors/{v}/journey", headers=H_READ)
    if (
        j.status_code != 200
        or j.json()["stage"]["name"] != stage
        or len(j.json()["touchpoints"]) != len(events)
    ):
        wrong.append(f"journey {j.status_code} {j.text[:200]}")
    r = http.get(f"/v1/visitors/{v}/recommendations?k=6", headers=H_READ)
    body = r.json() if r.status_code == 200 else {}
    products = [p["item_id"] for p in body.get("products", [])]
    if r.status_code != 200 or body["fallback"] or body["stage"]["name"] != stage or len(products) != 6:
        wrong.append(f"recommendations {r.status_code} {r.text[:200]}")
    elif stage in ("decision", "retention") and KETTLE in products:
        wrong.append(f"recommendations hold the kettle in the cart or bought: {products}")
    if stage == "decision":  # the abandoned cart comes back first, once per campaign
        path = f"/v1/visitors/{v}/retargeting?campaign=c1&mark_sent=true&k=3"
        first, again = http.get(path, headers=H_INGEST), http.get(path, headers=H_INGEST)
        got = [
            [x["item_id"] for x in a.json()["items"]] if a.status_code == 200 else a.text
            for a in (first, again)
        ]
        if not (isinstance(got[0], list) and got[0][:1] == [KETTLE] and KETTLE not in got[1]):
            wrong.append(f"retargeting {got}")
    return wrong


def _check_all(
    server: Server, visitors: list[str], check: Callable[[httpx.Client, int, str], list[str]]
) -> dict[str, list[str]]:
    """``check`` of every visitor through ``server``, ``THREADS`` at a time (each on its own connection)."""
    clients = [httpx.Client(base_url=server.base, timeout=10) for _ in range(THREADS)]
    try:
        with ThreadPoolExecutor(THREADS) as pool:
            found = list(
                pool.map(lambda iv: (iv[1], check(clients[iv[0] % THREADS], *iv)), enumerate(visitors))
            )
    finally:
        for c in clients:
            c.close()
    return {v: wrong for v, wrong in found if wrong}


def _export(cluster_url: str, prefix: str, out: Path) -> list[dict[str, Any]]:
    """``journeyrec export-events`` of the prefix's stream (every shard, on every master), as dicts."""
    args = ["export-events", "--redis-url", cluster_url, "--redis-prefix", prefix, "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in out.read_text().splitlines() if line]


class Alternating:
    """An HTTP client that sends each request to the next instance in turn (``feedback_scenario.Http``)."""

    def __init__(self, servers: tuple[Server, ...]) -> None:
        self._clients = [httpx.Client(base_url=s.base, timeout=10) for s in servers]
        self._n = 0

    def _next(self) -> httpx.Client:
        self._n += 1
        return self._clients[self._n % len(self._clients)]

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self._next().get(url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self._next().post(url, **kw)

    def delete(self, url: str, **kw: Any) -> httpx.Response:
        return self._next().delete(url, **kw)

    def close(self) -> None:
        for c in self._clients:
            c.close()


def test_feedback_counts_lists_and_events_sent_to_either_instance(fleet: tuple[Server, Server]) -> None:
    """The known feedback scenario, each request to the other instance than the last: lists served by one
    are credited by events ingested through the other (first in the module: nothing else is counted)."""
    http = Alternating(fleet)
    try:
        feedback_scenario.run(http)
    finally:
        http.close()


def test_visitors_over_every_slot_band(
    fleet: tuple[Server, Server], cluster_url: str, prefix: str, tmp_path: Path
) -> None:
    """Ingest through one instance, then journey, recommendations and retargeting through the other, the
    export of every shard, erase of every tenth visitor: right for every visitor."""
    a, b = fleet
    visitors = spread_visitors(N_VISITORS, prefix, "band")
    slots = [_slot(prefix, v) for v in visitors]
    assert len(set(slots)) == N_VISITORS  # each in a slot of its own
    assert {s * MASTERS // REDIS_CLUSTER_HASH_SLOTS for s in slots} == set(range(MASTERS))
    events = _events(visitors, time.time() - 3600)
    sighted = _analytics(b)["first_sightings"]
    with httpx.Client(base_url=a.base, timeout=30) as http:
        for start in range(0, len(events), BATCH):
            batch = events[start : start + BATCH]
            r = http.post("/v1/events", json={"events": batch}, headers=H_INGEST)
            assert r.status_code == 200, r.text
            assert (r.json()["accepted"], r.json()["duplicates"]) == (len(batch), 0)
        # a retry of a batch (the same event ids) stores nothing twice
        r = http.post("/v1/events", json={"events": events[:BATCH]}, headers=H_INGEST)
        assert (r.json()["accepted"], r.json()["duplicates"]) == (0, len(events[:BATCH]))

    # journey analytics: every visitor's first sighting counted once, in its period's rollup
    assert _analytics(b)["first_sightings"] - sighted == N_VISITORS

    wrong = _check_all(b, visitors, _check_visitor)
    right = N_VISITORS - len(wrong)
    print(f"\n{N_VISITORS} visitors in {len(set(slots))} slots: {right} right through the other instance")
    assert wrong == {}

    exported = _export(cluster_url, prefix, tmp_path / "events.jsonl")
    mine = Counter(e["event_id"] for e in exported if e["visitor_id"] in set(visitors))
    assert sorted(mine) == sorted(e["event_id"] for e in events)
    assert set(mine.values()) == {1}  # each event once, the retried batch included
    print(f"export-events: {sum(mine.values())} of {len(events)} events, each once")

    erased = visitors[::10]
    with httpx.Client(base_url=a.base, timeout=10) as http:
        for v in erased:
            r = http.delete(f"/v1/visitors/{v}", headers=H_ADMIN)
            assert r.status_code == 200, r.text
            assert r.json()["erased"] is True
    after = _export(cluster_url, prefix, tmp_path / "after.jsonl")
    gone = set(erased)
    assert not [e for e in after if e["visitor_id"] in gone]
    assert len([e for e in after if e["visitor_id"] in set(visitors)]) == len(events) - sum(
        len(JOURNEYS[i % len(JOURNEYS)][1]) for i in range(0, N_VISITORS, 10)
    )
    left = _mentions(cluster_url, prefix, erased)
    assert left == {}
    assert _check_all(b, erased, _check_erased) == {}
    print(f"erased {len(erased)} visitors: no key, stream entry or set member of theirs left")


def _analytics(server: Server) -> dict[str, Any]:
    now = time.time()
    query = {"from": str(now - 2 * 86_400), "to": str(now + 3_600), "granularity": "day"}
    r = _fresh(server, "GET", "/v1/analytics/journey", params=query, headers=H_READ)
    assert r.status_code == 200, r.text
    return dict(r.json())


def _check_erased(http: httpx.Client, _i: int, v: str) -> list[str]:
    j = http.get(f"/v1/visitors/{v}/journey", headers=H_READ)
    return [] if j.status_code == 200 and j.json()["touchpoints"] == [] else [f"journey {j.text[:200]}"]


def _mentions(cluster_url: str, prefix: str, visitors: list[str]) -> dict[str, list[bytes]]:
    """The keys that name or hold any of ``visitors``: their own keys (by hash tag), and every key not of a
    visitor (stream shards, active sets, rollup sets, ...) whose content holds the id or its pseudonym."""
    r = sync_client(cluster_url)
    try:
        keys = list(r.scan_iter(match=f"{prefix}:*", count=1000))
        tags = {f"{{v:{v.encode().hex()}}}".encode(): v for v in visitors}
        found: dict[str, list[bytes]] = {}
        shared = []
        for k in keys:
            if b"{v:" in k:
                owner = tags.get(k[k.index(b"{v:") : k.index(b"}") + 1])
                if owner is not None:
                    found.setdefault(owner, []).append(k)
            else:
                shared.append(k)
        needles = {v: (v.encode(), member_of(v).encode()) for v in visitors}  # the id, its rollup pseudonym
        for k in shared:
            content = _dump(r, k)
            for v, (raw, pseudonym) in needles.items():
                if raw in content or pseudonym in content:
                    found.setdefault(v, []).append(k)
        return found
    finally:
        r.close()


def test_an_event_through_one_instance_is_seen_by_the_next_recommendation_through_the_other(
    fleet: tuple[Server, Server], prefix: str
) -> None:
    a, b = fleet
    visitors = spread_visitors(24, prefix, "hop")
    seen = 0
    for i, v in enumerate(visitors):
        into, out = (a, b) if i % 2 == 0 else (b, a)
        event = {"visitor_id": v, "item_id": KETTLE, "event": "add_to_cart", "event_id": f"{v}-cart"}
        assert _fresh(into, "POST", "/v1/events", json=event, headers=H_INGEST).status_code == 200
        r = _fresh(out, "GET", f"/v1/visitors/{v}/recommendations?k=6", headers=H_READ)
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["stage"]["name"], body["fallback"]) == ("decision", False), body
        assert KETTLE not in [p["item_id"] for p in body["products"]]
        seen += 1
    print(f"\n{seen} of {len(visitors)} events ingested through one instance seen by the other's next answer")


def _fleet_view(
    servers: tuple[Server, ...], ok: Callable[[dict[str, Any]], bool]
) -> tuple[set[str], list[Any]]:
    """``GET /v1/models`` on new connections to every instance until four workers answered and an answer's
    ``workers`` satisfies ``ok``; returns the workers that answered and that list."""
    answered: set[str] = set()
    listed: list[Any] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for s in servers:
            body = _fresh(s, "GET", "/v1/models", headers=H_READ).json()
            answered.add(body["worker"])
            listed = body["workers"]
            if len(answered) >= 4 and ok(body):
                return answered, listed
        time.sleep(0.05)
    raise AssertionError(f"not there in 60 s: answered by {answered}, listed {listed}")


def test_models_lists_all_four_workers_and_activate_reaches_them(
    fleet: tuple[Server, Server], models: Path
) -> None:
    a, b = fleet
    first = resolve_latest(models).name
    answered, listed = _fleet_view(fleet, lambda body: len(body["workers"]) == 4)
    assert {w["worker"] for w in listed} == answered  # all four, whichever instance answers
    assert len({w.split(":")[1] for w in answered}) == 4  # four processes
    print(f"\nGET /v1/models lists {len(listed)} workers: {sorted(answered)}")

    newer = train_storefront_model(models, seed=21).name  # published: every worker follows latest
    _fleet_view(fleet, lambda body: [w["model_version"] for w in body["workers"]] == [newer] * 4)
    r = _fresh(a, "POST", "/v1/models/activate", json={"version": first}, headers=H_ADMIN)  # roll back
    assert r.status_code == 200, r.text
    assert (r.json()["version"], r.json()["changed"]) == (first, True)
    _, listed = _fleet_view(fleet, lambda body: [w["model_version"] for w in body["workers"]] == [first] * 4)
    assert len(listed) == 4
    for s in (a, b):  # and each instance answers with it
        assert _fresh(s, "GET", "/v1/models", headers=H_READ).json()["live"]["version"] == first
    print(
        f"published {newer}: all 4 workers served it; activate {first} through one instance: all 4 serve it"
    )


def test_rate_limit_counts_each_client_across_instances(models: Path, cluster_url: str) -> None:
    """Two instances, a limit of 3 a minute: each of 24 clients (its own loopback address, so its counter
    is a key of its own, in slots of every master) gets 3 answers in all, whichever instance it asks."""
    prefix = f"jrtest-{uuid.uuid4().hex[:10]}"
    env = {"JOURNEYREC_RATE_LIMIT_PER_MINUTE": "3", "JOURNEYREC_MODEL_POLL_SECONDS": "0"}
    servers = [Server(models, cluster_url, prefix, env_extra=env) for _ in range(2)]
    try:
        for s in servers:
            s.wait_live().close()
        codes: dict[str, list[int]] = {}
        for n in range(24):
            address = f"127.0.3.{n + 1}"
            clients = [
                httpx.Client(
                    base_url=s.base, timeout=10, transport=httpx.HTTPTransport(local_address=address)
                )
                for s in servers
            ]
            codes[address] = [
                clients[i % 2].get("/v1/visitors/rl/journey", headers=H_READ).status_code for i in range(5)
            ]
            for c in clients:
                c.close()
        assert {a: c for a, c in codes.items() if c != [200, 200, 200, 429, 429]} == {}
        r = sync_client(cluster_url)
        try:
            counters = list(r.scan_iter(match=f"{prefix}:ratelimit*", count=1000))
        finally:
            r.close()
        assert len(counters) == 24
        assert {key_slot(k) * MASTERS // REDIS_CLUSTER_HASH_SLOTS for k in counters} == set(range(MASTERS))
        print(
            f"\nlimit 3/min, 2 instances: 24 of 24 clients 3 x 200, then 429; counters on {MASTERS} masters"
        )
    finally:
        for s in servers:
            s.stop()
        delete_prefix(cluster_url, prefix)


def test_a_login_links_visitors_on_two_masters_through_either_instance(
    fleet: tuple[Server, Server], cluster_url: str, prefix: str
) -> None:
    a, b = fleet
    anon, user = spread_visitors(3, prefix, "login")[::2]  # the first and the last third: two masters
    assert len({_slot(prefix, v) * MASTERS // REDIS_CLUSTER_HASH_SLOTS for v in (anon, user)}) == 2
    teapot = product_id("Teapot")
    events = [
        {"visitor_id": anon, "item_id": KETTLE, "event": "product_view", "timestamp": time.time() - 600},
        {"visitor_id": anon, "item_id": KETTLE, "event": "add_to_cart", "timestamp": time.time() - 300},
    ]
    assert _fresh(a, "POST", "/v1/events", json={"events": events}, headers=H_INGEST).status_code == 200
    r = _fresh(b, "POST", "/v1/identities", json={"anonymous_id": anon, "user_id": user}, headers=H_INGEST)
    assert r.status_code == 200, r.text
    assert (r.json()["linked"], r.json()["events_carried"], r.json()["cart_carried"]) == (True, 2, [KETTLE])
    # the cookie's later events are the user's, whichever instance takes them or answers
    event = {"visitor_id": anon, "item_id": teapot, "event": "add_to_cart", "event_id": f"{anon}-t"}
    assert _fresh(b, "POST", "/v1/events", json=event, headers=H_INGEST).json()["redirected"] == 1
    for s in (a, b):
        j = _fresh(s, "GET", f"/v1/visitors/{user}/journey", headers=H_READ).json()
        assert (j["stage"]["name"], j["cart"]) == ("decision", [teapot, KETTLE])
        recs = _fresh(s, "GET", f"/v1/visitors/{anon}/recommendations?k=6", headers=H_READ).json()
        assert not {KETTLE, teapot} & {p["item_id"] for p in recs["products"]}
    assert _fresh(a, "DELETE", f"/v1/visitors/{user}", headers=H_ADMIN).status_code == 200
    assert _mentions(cluster_url, prefix, [anon, user]) == {}


_RULES_VERSION = re.compile(r'^journeyrec_rules_version\{pid="(\d+)"\} ([0-9.e+]+)$', re.MULTILINE)
EXPERIMENT = {
    "placements": ["home"],
    "salt": "cluster",
    "variants": [{"name": "aware", "control": True}, {"name": "popular", "strategy": "popular"}],
}


def _every_worker(fleet: tuple[Server, ...], ok: Callable[[dict[str, Any]], bool]) -> None:
    """``GET /v1/models`` on new connections to every instance until each of the four workers answered
    ``ok`` (its latest answer); fails after 60 s."""
    good: set[str] = set()
    deadline = time.monotonic() + 60
    while len(good) < 4:
        assert time.monotonic() < deadline, f"only {good} got there"
        for s in fleet:
            body = _fresh(s, "GET", "/v1/models", headers=H_READ).json()
            (good.add if ok(body) else good.discard)(body["worker"])
        time.sleep(0.02)


def test_rules_catalog_and_experiments_written_through_one_instance_reach_all_four_workers(
    fleet: tuple[Server, Server],
) -> None:
    """Last in the module: it leaves a rule, a sold-out teapot and a running experiment behind."""
    a, b = fleet
    teapot = product_id("Teapot")
    r = _fresh(a, "PATCH", f"/v1/items/{teapot}", json={"in_stock": False}, headers=H_CATALOG)
    assert r.status_code == 200, r.text
    catalog = r.json()["catalog_version"]
    _every_worker(fleet, lambda body: body["catalog_version"] >= catalog)
    for s in (a, b):
        similar = _fresh(s, "GET", f"/v1/items/{KETTLE}/similar?k=20", headers=H_READ).json()["items"]
        assert teapot not in [i["item_id"] for i in similar]

    rule = {"id": "no-garden", "condition": {"categories": ["garden"]}, "action": {"type": "hide"}}
    r = _fresh(b, "PUT", "/v1/rules", json={"rules": [rule], "version": 0}, headers=H_ADMIN)
    assert r.status_code == 200, r.text
    version = r.json()["change"]["version"]
    served: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while not (len(served) == 4 and set(served.values()) == {float(version)}):
        assert time.monotonic() < deadline, served
        for s in (a, b):  # each instance's /metrics adds up its own two workers
            served.update(
                {pid: float(v) for pid, v in _RULES_VERSION.findall(_fresh(s, "GET", "/metrics").text)}
            )
        time.sleep(0.02)

    r = _fresh(a, "PUT", "/v1/experiments/cl", json=EXPERIMENT, headers=H_ADMIN)
    assert r.status_code == 200, r.text
    assert _fresh(b, "POST", "/v1/experiments/cl/start", headers=H_ADMIN).status_code == 200
    people = [f"person-{i}" for i in range(40)]
    expected = {p: assign("cluster", "cl", p, [("aware", 1.0), ("popular", 1.0)], 1.0, 0.0) for p in people}
    streak, deadline = 0, time.monotonic() + 60
    while streak < len(people):  # consecutive answers, both instances in turn, on new connections
        assert time.monotonic() < deadline, "the experiment did not reach every worker"
        p = people[streak]
        body = _fresh(fleet[streak % 2], "GET", f"/v1/visitors/{p}/recommendations", headers=H_READ).json()
        streak = streak + 1 if body.get("variant") == expected[p] else 0
        assert body["rules_version"] == version
        assert not [x for x in body["products"] if x["item_id"].startswith("p-garden-")]
    assert set(expected.values()) == {"aware", "popular"}
    print(f"\ncatalog {catalog}, rules {version} and experiment cl served by all 4 workers of both instances")
