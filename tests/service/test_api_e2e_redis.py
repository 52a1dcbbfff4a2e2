"""End to end over real HTTP: ``journeyrec serve`` (Granian) against a real Redis server.

Needs the test Redis (the ``redis_url`` fixture, ``tests/conftest.py``: the tests fail when
JOURNEYREC_TEST_REDIS_URL is set and Redis does not answer, and skip when it is unset and the default does
not answer).
Every run uses its own key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from models.artifact import LATEST, resolve_latest
from tests.artifact_faults import corrupt_inside_npz
from tests.conftest import REDIS_URL
from tests.service.api_fixtures import ADMIN_KEY, H_ADMIN, H_INGEST, H_READ, KEYS_SPEC
from tests.storefront import product_id, train_storefront_model

pytestmark = pytest.mark.redis
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_timeout=2)
    yield client
    client.close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Server:
    def __init__(
        self,
        models: Path,
        redis_url: str | None,
        prefix: str,
        *,
        workers: int = 1,
        env_extra: dict[str, str] | None = None,
    ) -> None:
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "JOURNEYREC_API_KEYS": KEYS_SPEC,
            "JOURNEYREC_REDIS_PREFIX": prefix,
            "JOURNEYREC_LOG_LEVEL": "warning",
            **(env_extra or {}),
        }
        env.pop("JOURNEYREC_SETTINGS_JSON", None)
        args = ["serve", "--models", str(models), "--port", str(self.port)]
        args += ["--redis-url", redis_url] if redis_url else []  # none: the embedded store
        args += ["--workers", str(workers)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: stop() can reach a worker left behind
        )

    def wait_live(self) -> httpx.Client:
        client = httpx.Client(base_url=self.base, timeout=10)
        for _ in range(300):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise AssertionError(f"server exited with {self.proc.returncode}: {err}")
            try:
                if client.get("/health/live").status_code == 200:
                    return client
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError("server did not come up")

    def stop(self) -> str:
        """Stop the server; returns what it wrote to stderr (and whether it had to be killed)."""
        self.proc.terminate()
        try:
            _out, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            # a worker still shutting down holds stderr open: kill the whole group, or this waits forever
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            _out, err = self.proc.communicate(timeout=15)
            err = (err or b"") + b"\n[the server did not stop within 15 s of SIGTERM: killed]\n"
        return err.decode(errors="replace") if err else ""


def simulate_traffic(
    base: str,
    api_key: str,
    out: Path,
    *,
    visitors: int,
    concurrency: int,
    seed: int,
    items: int,
    shop_seed: int,
) -> tuple[str, dict[str, Any]]:
    """Run ``journeyrec simulate-traffic`` (14 simulated days) against the server at ``base``; returns its
    stdout and its JSON summary. Fails the test when the command fails."""
    args = [
        "--url",
        base,
        "--api-key",
        api_key,
        "--visitors",
        str(visitors),
        "--concurrency",
        str(concurrency),
    ]
    args += ["--seed", str(seed), "--days", "14", "--items", str(items), "--shop-seed", str(shop_seed)]
    done = subprocess.run(
        [sys.executable, "-m", "journeyrec.cli", "simulate-traffic", *args, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    summary: dict[str, Any] = json.loads(out.read_text())
    return done.stdout, summary


@pytest.fixture(scope="module")
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    p = f"jrtest-{uuid.uuid4().hex[:10]}"
    yield p
    for key in redis_client.scan_iter(match=f"*{p}*", count=1000):
        redis_client.delete(key)


@pytest.fixture(scope="module")
def http(models_dir: Path, prefix: str) -> Iterator[httpx.Client]:
    server = Server(models_dir, REDIS_URL, prefix)
    try:
        client = server.wait_live()
        yield client
        client.close()
    finally:
        server.stop()


def _dump(r: redis.Redis, key: bytes) -> bytes:
    """Everything stored under one key, as bytes (to search for a visitor's id)."""
    raw = r.type(key)
    kind = raw.decode() if isinstance(raw, bytes) else str(raw)
    value: Any
    if kind == "string":
        value = r.get(key)
    elif kind == "hash":
        value = r.hgetall(key)
    elif kind == "list":
        value = r.lrange(key, 0, -1)
    elif kind == "set":
        value = r.smembers(key)
    elif kind == "zset":
        value = r.zrange(key, 0, -1, withscores=True)
    elif kind == "stream":
        value = r.xrange(key)
    else:
        value = kind
    return repr(value).encode()


def _snapshot(http: httpx.Client, visitor: str) -> tuple[str, Any]:
    j = http.get(f"/v1/visitors/{visitor}/journey", headers=H_READ)
    assert j.status_code == 200, j.text
    r = http.get(f"/v1/visitors/{visitor}/recommendations?k=6&n_content=3", headers=H_READ)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["fallback"] is False
    assert body["stage"]["name"] == j.json()["stage"]["name"]
    products = [(p["item_id"], p["source"], p["reason"]) for p in body["products"]]
    content = [c["item_id"] for c in body["content"]]
    return j.json()["stage"]["name"], (products, content)


def test_journey_walk_through_every_stage(http: httpx.Client) -> None:
    visitor = f"walker-{uuid.uuid4().hex[:8]}"
    kettle, teapot, toaster = product_id("Kettle"), product_id("Teapot"), product_id("Toaster")
    t0 = time.time() - 3600
    steps: list[tuple[str, list[dict[str, Any]]]] = [
        (
            "awareness",
            [
                {"item_id": "c-tea-101", "event": "content_view", "channel": "social"},
                {"item_id": "c-welcome", "event": "content_view"},
            ],
        ),
        (
            "consideration",
            [
                {"item_id": kettle, "event": "product_view"},
                {"item_id": teapot, "event": "product_view"},
                {"item_id": toaster, "event": "product_view"},
                {"item_id": kettle, "event": "product_view"},
            ],
        ),
        ("decision", [{"item_id": kettle, "event": "add_to_cart"}]),
        (
            "retention",
            [
                {"item_id": kettle, "event": "checkout"},
                {"item_id": kettle, "event": "purchase", "value": 39.0},
            ],
        ),
        ("advocacy", [{"item_id": kettle, "event": "review"}]),
    ]
    seen: list[tuple[str, Any]] = []
    n = 0
    for expected, events in steps:
        batch = []
        for e in events:
            n += 1
            batch.append({"visitor_id": visitor, "timestamp": t0 + 60 * n, "event_id": f"{visitor}-{n}", **e})
        r = http.post("/v1/events", json={"events": batch}, headers=H_INGEST)
        assert r.status_code == 200, r.text
        assert r.json() == {"accepted": len(batch), "duplicates": 0, "unknown_items": 0, "impressions": 0}
        stage, recs = _snapshot(http, visitor)
        assert stage == expected, (expected, stage, recs)
        seen.append((stage, recs))
    # the answer changes at every step of the journey
    for (s1, r1), (s2, r2) in itertools.pairwise(seen):
        assert r1 != r2, (s1, s2)
    decision_products = seen[2][1][0]
    assert kettle not in [p[0] for p in decision_products]  # in the cart
    retention_products = seen[3][1][0]
    assert kettle not in [p[0] for p in retention_products]  # bought, not repeatable
    # each touchpoint with the stage just after it (the third product view makes the weight 3)
    j = http.get(f"/v1/visitors/{visitor}/journey", headers=H_READ).json()
    after = ["awareness"] * 4 + ["consideration"] * 2 + ["decision"] * 2 + ["retention", "advocacy"]
    assert [(t["event"], t["stage"]) for t in j["touchpoints"]] == list(
        zip([e["event"] for _, events in steps for e in events], after, strict=True)
    )[::-1]


def test_erase_leaves_no_key_of_the_visitor(
    http: httpx.Client, redis_client: redis.Redis, prefix: str
) -> None:
    visitor = f"erase-me-{uuid.uuid4().hex[:8]}"
    other = f"keep-me-{uuid.uuid4().hex[:8]}"
    kettle = product_id("Kettle")
    events = [
        {"visitor_id": visitor, "item_id": kettle, "event": "add_to_cart"},
        {"visitor_id": visitor, "item_id": kettle, "event": "purchase"},
        {"visitor_id": other, "item_id": kettle, "event": "product_view"},
    ]
    assert http.post("/v1/events", json={"events": events}, headers=H_INGEST).status_code == 200
    r = http.get(f"/v1/visitors/{visitor}/retargeting?campaign=c1&mark_sent=true", headers=H_INGEST)
    assert r.status_code == 200, r.text

    def mentions(v: str) -> list[bytes]:
        keys = list(redis_client.scan_iter(match=f"*{prefix}*", count=1000))
        return [k for k in keys if v.encode() in k or v.encode() in _dump(redis_client, k)]

    assert mentions(visitor)
    r = http.delete(f"/v1/visitors/{visitor}", headers=H_ADMIN)
    assert r.status_code == 200
    assert r.json()["erased"] is True
    assert mentions(visitor) == []
    assert mentions(other)  # only that visitor was erased
    j = http.get(f"/v1/visitors/{visitor}/journey", headers=H_READ).json()
    assert j["touchpoints"] == []


def test_export_and_auth_over_http(http: httpx.Client) -> None:
    visitor = f"exp-{uuid.uuid4().hex[:8]}"
    tent = product_id("Tent")
    http.post(
        "/v1/events", json={"visitor_id": visitor, "item_id": tent, "event": "add_to_cart"}, headers=H_INGEST
    )
    with http.stream(
        "POST", "/v1/retargeting/export", json={"visitor_ids": [visitor], "k": 3}, headers=H_READ
    ) as r:
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.iter_lines() if line]
    assert lines[0]["visitor_id"] == visitor
    assert lines[0]["items"][0]["item_id"] == tent
    assert http.post("/v1/events", json={}, headers={"X-API-Key": "nope-nope-nope-nope"}).status_code == 401
    assert http.post("/v1/models/reload", headers={"X-API-Key": ADMIN_KEY}).status_code == 200
    assert http.get("/health/ready").status_code == 200
    assert "journeyrec_http_requests_total" in http.get("/metrics").text


def test_unreachable_redis_degrades(models_dir: Path, redis_client: redis.Redis) -> None:
    dead_url = f"redis://127.0.0.1:{_free_port()}/0"  # nothing listens there
    # the rate limiter keeps its counters in that Redis too: it must let requests through, not fail them
    server = Server(
        models_dir, dead_url, "jrtest-dead", env_extra={"JOURNEYREC_RATE_LIMIT_PER_MINUTE": "100"}
    )
    try:
        http = server.wait_live()
        r = http.get("/v1/visitors/anyone/recommendations?k=3", headers=H_READ)
        assert r.status_code == 200, r.text
        assert r.json()["fallback"] is True
        assert len(r.json()["products"]) == 3
        r = http.post(
            "/v1/events", json={"visitor_id": "a", "item_id": "b", "event": "page_view"}, headers=H_INGEST
        )
        assert r.status_code == 503
        assert int(r.headers["Retry-After"]) >= 1
        assert http.get("/health/ready").status_code == 503
        http.close()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def two_workers(
    models_dir: Path, prefix: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Path]]:
    """A server with two worker processes on a private copy of the models directory."""
    models = tmp_path_factory.mktemp("two-workers") / "models"
    shutil.copytree(models_dir, models, symlinks=True)
    server = Server(models, REDIS_URL, prefix, workers=2, env_extra={"JOURNEYREC_MODEL_POLL_SECONDS": "0.2"})
    try:
        server.wait_live().close()
        yield server, models
    finally:
        server.stop()


def _fresh_get(server: Server, path: str) -> httpx.Response:
    """One request on a new connection (a kept-alive connection would always reach the same worker)."""
    return httpx.get(server.base + path, headers=H_READ, timeout=10)


def test_metrics_add_up_every_worker(two_workers: tuple[Server, Path]) -> None:
    server, _ = two_workers
    before = _recommendations_counted(server)
    for i in range(20):
        assert _fresh_get(server, f"/v1/visitors/metrics-{i}/recommendations?k=3").status_code == 200
    # whichever worker answers the scrape, it reports what both answered
    for _ in range(4):
        assert _recommendations_counted(server) == before + 20


def _recommendations_counted(server: Server) -> float:
    text = _fresh_get(server, "/metrics").text
    line = 'journeyrec_recommendations_total{endpoint="recommendations",fallback="false"} '
    return sum(float(x[len(line) :]) for x in text.splitlines() if x.startswith(line))


def test_models_lists_every_worker_and_a_stopped_one_leaves(
    models_dir: Path, redis_client: redis.Redis
) -> None:
    own = f"jrtest-{uuid.uuid4().hex[:10]}"  # the module's other servers beat under the module's prefix
    # beats that outlive the test unless taken away: each worker beats once as it starts
    server = Server(models_dir, REDIS_URL, own, workers=2, env_extra={"JOURNEYREC_HEARTBEAT_SECONDS": "60"})
    try:
        server.wait_live().close()
        version = resolve_latest(models_dir).name
        answered: set[str] = set()  # the workers that answered, by their own id
        listed: list[dict[str, Any]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (len(answered) < 2 or len(listed) < 2):
            body = _fresh_get(server, "/v1/models").json()
            answered.add(body["worker"])
            listed = body["workers"]
            time.sleep(0.05)
        assert len(answered) == 2, answered
        assert {w["worker"] for w in listed} == answered
        assert [w["model_version"] for w in listed] == [version, version]
        assert all(w["started"] <= w["last_seen"] and w["seen_seconds_ago"] >= 0 for w in listed)
        hosts = {w.split(":")[0] for w in answered}
        assert len(hosts) == 1
        assert {int(w.split(":")[1]) for w in answered} <= {int(p) for p in _worker_pids(server)}
        fleet = list(redis_client.scan_iter(match=f"{own}:{{fleet}}:*", count=1000))
        assert len(fleet) == 3  # a beat per worker and the index
    finally:
        err = server.stop()
        left = list(redis_client.scan_iter(match=f"{own}:*", count=1000))
        for key in left:
            redis_client.delete(key)
    # each worker took its beat away as it stopped
    assert not [k for k in left if b"{fleet}" in k], err


def _worker_pids(server: Server) -> list[str]:
    """The pids of the server's worker processes (children of the serve process, read from /proc)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after its closing parenthesis
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == server.proc.pid:
                children.append(stat.parent.name)
    return children


def test_every_worker_follows_a_new_latest(two_workers: tuple[Server, Path]) -> None:
    """Publishing a new version reaches both workers without a reload request (a reload request would
    reach only one of them)."""
    server, models = two_workers
    new_version = train_storefront_model(models, seed=21).name
    seen: dict[float, str] = {}  # the workers, told apart by when each loaded its model
    mine: set[str] = set()  # and their ids (the module's other servers beat under the same prefix)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = _fresh_get(server, "/v1/models").json()
        live = body["live"]
        seen[live["loaded_at"]] = live["version"]
        mine.add(body["worker"])
        if len({t for t, v in seen.items() if v == new_version}) >= 2:
            break
        time.sleep(0.05)
    assert len({t for t, v in seen.items() if v == new_version}) >= 2, seen
    assert len(mine) == 2
    # and the fleet says so: each worker beats as soon as it serves the new version
    listed: list[Any] = []
    while time.monotonic() < deadline:
        workers = _fresh_get(server, "/v1/models").json()["workers"]
        listed = [w["model_version"] for w in workers if w["worker"] in mine]
        if listed == [new_version, new_version]:
            break
        time.sleep(0.05)
    assert listed == [new_version, new_version]


def test_rate_limit_counts_a_client_across_workers(models_dir: Path, prefix: str) -> None:
    server = Server(
        models_dir,
        REDIS_URL,
        prefix,
        workers=2,
        env_extra={"JOURNEYREC_RATE_LIMIT_PER_MINUTE": "5", "JOURNEYREC_MODEL_POLL_SECONDS": "0"},
    )
    try:
        server.wait_live().close()
        # one client (127.0.0.1), new connections so that both workers answer: 5 in a minute, in total
        codes = [_fresh_get(server, f"/v1/visitors/rl-{i}/journey").status_code for i in range(8)]
        assert codes == [200] * 5 + [429] * 3, codes
    finally:
        server.stop()


def test_every_worker_refuses_a_damaged_version_and_adopts_the_next(
    models_dir: Path, prefix: str, tmp_path: Path
) -> None:
    """A version damaged inside its npz (its manifest re-hashed to match) is refused by both workers, with
    the reason logged and shown; the next good version still reaches both."""
    models = tmp_path / "models"
    shutil.copytree(models_dir, models, symlinks=True)
    server = Server(models, REDIS_URL, prefix, workers=2, env_extra={"JOURNEYREC_MODEL_POLL_SECONDS": "0.2"})
    try:
        server.wait_live().close()
        live = resolve_latest(models)
        # both workers serve the first version before it moves (a worker still starting answers no model)
        _until_both_workers(server, lambda m: m["live"]["version"] == live.name)
        bad = models / (live.name + "-zipdamage")
        shutil.copytree(live, bad)
        corrupt_inside_npz(bad)
        link = models / ".latest-e2e"
        os.symlink(bad.name, link)
        os.replace(link, models / LATEST)

        refused = _until_both_workers(server, lambda m: (m["last_refused"] or {}).get("version") == bad.name)
        assert all("BadZipFile" in m["last_refused"]["reason"] for m in refused.values())
        assert all(m["live"]["version"] == live.name for m in refused.values())
        ready = _fresh_get(server, "/health/ready")
        assert ready.status_code == 200
        assert f"version {bad.name} refused" in ready.json()["detail"]

        good = train_storefront_model(models, seed=23).name
        _until_both_workers(server, lambda m: m["live"]["version"] == good)
    finally:
        log = server.stop()
    refusals = [line for line in log.splitlines() if "model reload refused" in line and "Bad CRC-32" in line]
    assert len(refusals) >= 2, log  # one per worker


def _until_both_workers(server: Server, ok: Callable[[dict[str, Any]], bool]) -> dict[float, dict[str, Any]]:
    """``GET /v1/models`` on new connections until two workers (told apart by when each loaded its live
    model) answered ``ok``; returns their answers by worker."""
    seen: dict[float, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = _fresh_get(server, "/v1/models").json()
        if body["live"] is not None and ok(body):
            seen[body["live"]["loaded_at"]] = body
        if len(seen) >= 2:
            return seen
        time.sleep(0.05)
    raise AssertionError(f"not every worker got there: {seen}")
