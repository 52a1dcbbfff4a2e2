"""``/v1/experiments`` and experiments on the request path: CRUD and scopes, checks at creation, the
variant served and named in the answer, assignment identical across workers and a restart, and the results
endpoint over a fake feedback provider (known answer)."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from litestar import Litestar
from litestar.testing import TestClient

from models.blend import stage_agnostic_weights
from models.errors import ArtifactError
from models.experiments import assign, assign_experiment
from models.recommender import Recommender
from service.app import create_app
from service.experiment_runtime import ExperimentFollower, ExperimentRuntime
from service.experiments_results import DailyCell, VariantStageStats
from service.model_holder import STAGE_AGNOSTIC, ModelHolder
from service.store.experiments_memory import MemoryExperimentStore
from tests.service.api_fixtures import H_ADMIN, H_INGEST, H_READ, api_settings, event, memory_store
from tests.service.test_experiments_store import doc

PREFIX = "/v1/experiments"


class FakeFeedback:
    """A feedback provider answering fixed cells (the contract's read interface)."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    async def experiment_stats(self, experiment: str) -> tuple[list[VariantStageStats], list[DailyCell]]:
        self.asked.append(experiment)
        # control: 4 visitors, clicks 1,0,2,0 of impressions 2,2,4,2; carted 0,1,1,0
        # treatment: 4 visitors, clicks 1,1,1,1 of 2,2,2,2; carted 1,1,1,0
        control = VariantStageStats(
            "control",
            "all",
            4,
            {"lists": 5, "impressions": 10, "clicks": 3, "carted": 2, "converted": 1, "revenue_all": 30},
            {"impressions": 28, "clicks": 5, "carted": 2, "converted": 1, "revenue_all": 900},
            {"clicks*impressions": 10},
        )
        treat = VariantStageStats(
            "popular",
            "all",
            4,
            {"lists": 4, "impressions": 8, "clicks": 4, "carted": 3, "converted": 2, "revenue_all": 30},
            {"impressions": 16, "clicks": 4, "carted": 3, "converted": 2, "revenue_all": 500},
            {"clicks*impressions": 8},
        )
        return [control, treat], [DailyCell("2026-11-30", "popular", "all", {"impressions": 8, "clicks": 4})]


@pytest.fixture
def published(models_dir: Path, tmp_path: Path) -> Path:
    """A copy of the models directory with two more versions: a good copy and a damaged one."""
    d = tmp_path / "models"
    shutil.copytree(models_dir, d, symlinks=True)
    live = next(p for p in d.iterdir() if p.is_dir() and p.name != "latest")
    shutil.copytree(live, d / "v-copy")
    shutil.copytree(live, d / "v-bad")
    npz = next((d / "v-bad").glob("*.npz"))
    npz.write_bytes(npz.read_bytes()[:100])
    return d


@pytest.fixture
def feedback() -> FakeFeedback:
    return FakeFeedback()


@pytest.fixture
def exp_store() -> MemoryExperimentStore:
    return MemoryExperimentStore()


def _app(published: Path, recommender: Recommender, store: Any, feedback: Any, **settings: Any) -> Litestar:
    return create_app(
        api_settings(models_dir=str(published), **settings),
        store=memory_store(),
        # a front of its own: rules installed here stay here
        model_holder=ModelHolder.with_model(copy.copy(recommender), published),
        experiments=store,
        stats=feedback,
    )


@pytest.fixture
def client(
    published: Path, recommender: Recommender, exp_store: MemoryExperimentStore, feedback: FakeFeedback
) -> Iterator[TestClient[Litestar]]:
    with TestClient(_app(published, recommender, exp_store, feedback), raise_server_exceptions=False) as c:
        yield c


def body(**kw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "placements": ["home", "retargeting"],
        "variants": [{"name": "control", "control": True}, {"name": "popular", "strategy": "popular"}],
    }
    d.update(kw)
    return d


def test_crud_and_scopes(client: TestClient[Litestar]) -> None:
    assert client.put(f"{PREFIX}/e1", json=body(), headers=H_READ).status_code == 403
    r = client.put(f"{PREFIX}/e1", json=body(traffic=0.5), headers=H_ADMIN)
    assert r.status_code == 200, r.text
    assert r.json()["state"] == "draft"
    assert r.json()["traffic"] == 0.5
    listed = client.get(f"{PREFIX}/", headers=H_READ).json()
    assert [e["id"] for e in listed["experiments"]] == ["e1"]
    assert listed["holdout"] == 0.0
    assert client.get(f"{PREFIX}/e1", headers=H_READ).json()["id"] == "e1"
    assert client.get(f"{PREFIX}/nope", headers=H_READ).status_code == 404
    assert client.post(f"{PREFIX}/e1/start", headers=H_READ).status_code == 403
    started = client.post(f"{PREFIX}/e1/start", headers=H_ADMIN).json()
    assert started["state"] == "running"
    assert started["started_at"] > 0
    assert client.put(f"{PREFIX}/e1", json=body(), headers=H_ADMIN).status_code == 409
    assert client.delete(f"{PREFIX}/e1", headers=H_ADMIN).status_code == 409
    assert client.post(f"{PREFIX}/e1/stop", headers=H_ADMIN).json()["state"] == "stopped"
    deleted = client.delete(f"{PREFIX}/e1", headers=H_ADMIN).json()
    assert deleted == {
        "id": "e1",
        "deleted": True,
        "id_free_at": pytest.approx(time.time() + 7 * 86_400, abs=60),
    }
    assert client.get(f"{PREFIX}/", headers=H_ADMIN).json()["experiments"] == []


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (body(variants=[{"name": "a"}, {"name": "b"}]), "exactly one"),
        (body(variants=[{"name": "a", "control": True}, {"name": "a"}]), "not unique"),
        (body(traffic=2), "traffic"),
        (body(state="running"), "state"),
        (body(variants=[{"name": "a", "control": True}, {"name": "b", "weight": 0}]), "weight"),
        (body(variants=[{"name": "a", "control": True}, {"name": "b", "model_version": "v-none"}]), "v-none"),
        (body(variants=[{"name": "a", "control": True}, {"name": "b", "rules_version": 3}]), "rules_version"),
    ],
)
def test_bad_experiments_are_400_naming_the_field(
    client: TestClient[Litestar], doc: dict[str, Any], words: str
) -> None:
    r = client.put(f"{PREFIX}/e1", json=doc, headers=H_ADMIN)
    assert r.status_code == 400, r.text
    assert words in r.json()["detail"]


def test_a_refused_model_version_is_a_clear_error(client: TestClient[Litestar]) -> None:
    doc = body(variants=[{"name": "a", "control": True}, {"name": "b", "model_version": "v-bad"}])
    r = client.put(f"{PREFIX}/e1", json=doc, headers=H_ADMIN)
    assert r.status_code == 400
    assert "'b'" in r.json()["detail"]
    assert "v-bad" in r.json()["detail"]
    assert "refused" in r.json()["detail"]
    assert client.get(f"{PREFIX}/e1", headers=H_ADMIN).status_code == 404
    good = body(variants=[{"name": "a", "control": True}, {"name": "b", "model_version": "v-copy"}])
    assert client.put(f"{PREFIX}/e1", json=good, headers=H_ADMIN).status_code == 200


def _people(n: int) -> list[str]:
    return [f"visitor-{i}" for i in range(n)]


def test_the_answer_carries_the_assigned_variant(
    client: TestClient[Litestar], recommender: Recommender
) -> None:
    client.put(f"{PREFIX}/ab", json=body(), headers=H_ADMIN)
    people = _people(40)
    before = client.get(f"/v1/visitors/{people[0]}/recommendations", headers=H_READ).json()
    assert "experiment" not in before
    client.post(f"{PREFIX}/ab/start", headers=H_ADMIN)
    seen = set()
    for p in people:
        out = client.get(f"/v1/visitors/{p}/recommendations", headers=H_READ).json()
        expected = assign("s1", "ab", p, [("control", 1.0), ("popular", 1.0)], 1.0, 0.0)
        assert (out["experiment"], out["variant"]) == ("ab", expected)
        seen.add(expected)
        assert "fallback" in out
        assert out["fallback"] is False
        if expected == "popular":
            # the non-personalised list: every product explained by the crowd
            assert {i["source"] for i in out["products"]} <= {"popular", "trending", "new"}
    assert seen == {"control", "popular"}
    # another placement: no experiment
    other = client.get(f"/v1/visitors/{people[0]}/recommendations?placement=cart", headers=H_READ).json()
    assert "experiment" not in other
    # retargeting is a placement of its own
    rt = client.get(f"/v1/visitors/{people[0]}/retargeting", headers=H_READ).json()
    assert rt["experiment"] == "ab"
    client.post(f"{PREFIX}/ab/stop", headers=H_ADMIN)
    after = client.get(f"/v1/visitors/{people[0]}/recommendations", headers=H_READ).json()
    assert "experiment" not in after


def test_a_stage_agnostic_variant_serves_one_blend_for_every_stage(
    client: TestClient[Litestar], recommender: Recommender
) -> None:
    doc = body(variants=[{"name": "aware", "control": True}, {"name": "flat", "blend": STAGE_AGNOSTIC}])
    assert client.put(f"{PREFIX}/st", json=doc, headers=H_ADMIN).status_code == 200
    client.post(f"{PREFIX}/st/start", headers=H_ADMIN)
    flat = next(p for p in _people(100) if assign("s1", "st", p, [("aware", 1), ("flat", 1)], 1, 0) == "flat")
    for t, kind in enumerate(["product_view", "add_to_cart"]):
        item = recommender.catalog.items[t].item_id
        client.post("/v1/events", json=event(flat, item, kind), headers=H_INGEST)
    out = client.get(f"/v1/visitors/{flat}/recommendations", headers=H_READ).json()
    assert out["variant"] == "flat"
    assert out["products"]


async def test_the_holder_builds_a_stage_agnostic_front(published: Path, recommender: Recommender) -> None:
    holder = ModelHolder.with_model(recommender, published)
    front = await holder.variant(None, STAGE_AGNOSTIC)
    w = front.scorer.blend_weights
    assert np.allclose(w, w[0])  # one row for every stage: the pooled fit the model keeps
    pooled = recommender.manifest.blend.pooled
    assert pooled is not None
    assert np.allclose(w[0], stage_agnostic_weights(recommender.manifest.blend)[0])
    assert w[0][0] == pytest.approx(pooled["lightfm"])
    assert await holder.variant(None, STAGE_AGNOSTIC) is front  # kept
    assert await holder.variant(None) is holder.current


def test_results_from_the_feedback_counters(client: TestClient[Litestar], feedback: FakeFeedback) -> None:
    client.put(f"{PREFIX}/ab", json=body(), headers=H_ADMIN)
    r = client.get(f"{PREFIX}/ab/results", headers=H_READ)
    assert r.status_code == 200, r.text
    out = r.json()
    assert feedback.asked == ["ab"]
    assert out["control"] == "control"
    ctrl, pop = out["cells"]
    assert (ctrl["variant"], ctrl["stage"], ctrl["visitors"], ctrl["clicks"]) == ("control", "all", 4, 3)
    assert ctrl["ctr"]["value"] == 0.3
    assert "vs_control" not in ctrl["ctr"]
    assert pop["ctr"]["value"] == 0.5
    assert pop["ctr"]["vs_control"]["diff"] == pytest.approx(0.2)
    assert pop["add_to_cart_rate"]["vs_control"]["diff"] == 0.25
    assert pop["revenue_per_visitor"]["value"] == 7.5
    assert out["sample_ratio"]["mismatch"] is False
    assert out["daily"] == [
        {
            "day": "2026-11-30",
            "variant": "popular",
            "stage": "all",
            "counts": {"impressions": 8, "clicks": 4},
            "ctr": 0.5,
        }
    ]
    assert client.get(f"{PREFIX}/nope/results", headers=H_READ).status_code == 404


async def test_assignment_is_identical_across_workers_and_a_restart(
    published: Path, recommender: Recommender
) -> None:
    store = MemoryExperimentStore()
    workers = [
        ExperimentFollower(store, ExperimentRuntime(ModelHolder.with_model(recommender, published)))
        for _ in range(2)
    ]
    await store.put(doc("ab", placements=["home"]))
    await store.start("ab")
    for w in workers:
        await w.step()
    people = _people(2000)

    def picks(w: ExperimentFollower) -> list[str | None]:
        return [c[1].name if (c := w.runtime.choose("home", p)) else None for p in people]

    first, second = picks(workers[0]), picks(workers[1])
    assert first == second
    # a restarted worker, and another Python process (its own hash seed), agree
    restarted = ExperimentFollower(store, ExperimentRuntime(ModelHolder.with_model(recommender, published)))
    await restarted.step()
    assert picks(restarted) == first
    experiment = await store.get("ab")
    code = (
        "import sys, msgspec\n"
        "from models.experiments import Experiment, assign_experiment\n"
        "e = msgspec.json.decode(sys.stdin.buffer.read(), type=Experiment)\n"
        "print(','.join(assign_experiment(e, f'visitor-{i}') or '-' for i in range(2000)))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", code],
        input=msgspec.json.encode(experiment),
        capture_output=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert run.stdout.decode().strip().split(",") == [x or "-" for x in first]
    assert [assign_experiment(experiment, p) for p in people] == first
    # a stopped experiment is followed by every worker
    await store.stop("ab")
    await workers[1].step()
    assert workers[1].runtime.choose("home", people[0]) is None


async def test_the_global_holdout_keeps_people_out_of_every_experiment(
    published: Path, recommender: Recommender
) -> None:
    store = MemoryExperimentStore()
    follower = ExperimentFollower(
        store, ExperimentRuntime(ModelHolder.with_model(recommender, published), holdout=0.3)
    )
    await store.put(doc("ab"))
    await store.start("ab")
    await follower.step()
    out = sum(follower.runtime.choose("home", p) is None for p in _people(5000))
    assert abs(out / 5000 - 0.3) < 0.03


def _in(experiment: str, arms: list[tuple[str, float]], variant: str) -> str:
    return next(p for p in _people(200) if assign("s1", experiment, p, arms, 1.0, 0.0) == variant)


def test_rules_variants_serve_their_snapshot_or_no_rules(client: TestClient[Litestar]) -> None:
    hide = {"id": "hide-all-cheap", "condition": {"max_price": 1e9}, "action": {"type": "boost", "factor": 2}}
    assert client.put("/v1/rules", json={"rules": [hide]}, headers=H_ADMIN).status_code == 200
    arms = [
        {"name": "live", "control": True},
        {"name": "none", "rules_version": 0},
        {"name": "v1", "rules_version": 1},
    ]
    assert client.put(f"{PREFIX}/rx", json=body(variants=arms), headers=H_ADMIN).status_code == 200
    client.post(f"{PREFIX}/rx/start", headers=H_ADMIN)
    weights = [("live", 1.0), ("none", 1.0), ("v1", 1.0)]
    # the stored rules move on to version 2: the snapshot keeps serving version 1
    assert client.put("/v1/rules", json={"rules": [hide]}, headers=H_ADMIN).status_code == 200

    def answer(variant: str) -> dict[str, Any]:
        out = client.get(f"/v1/visitors/{_in('rx', weights, variant)}/recommendations", headers=H_READ).json()
        assert out["variant"] == variant
        return out

    assert answer("live")["rules_version"] == 2
    assert "rules_version" not in answer("none")
    assert answer("v1")["rules_version"] == 1


def test_a_trending_variant_and_item_to_item_placements(
    client: TestClient[Litestar], recommender: Recommender
) -> None:
    arms = [{"name": "ctl", "control": True}, {"name": "trend", "strategy": "trending"}]
    doc = body(variants=arms, placements=["home", "similar", "complements", "retargeting"])
    assert client.put(f"{PREFIX}/tr", json=doc, headers=H_ADMIN).status_code == 200
    client.post(f"{PREFIX}/tr/start", headers=H_ADMIN)
    who = _in("tr", [("ctl", 1.0), ("trend", 1.0)], "trend")
    out = client.get(f"/v1/visitors/{who}/recommendations?k=5", headers=H_READ).json()
    # ranked by the trending score alone
    trending = recommender.scorer.trending
    scores = [float(trending[recommender.catalog.index[p["item_id"]]]) for p in out["products"]]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] == pytest.approx(float(trending[recommender.catalog.products_in_stock].max()))
    item = recommender.catalog.items[0].item_id
    sim = client.get(f"/v1/items/{item}/similar?visitor_id={who}", headers=H_READ).json()
    assert (sim["experiment"], sim["variant"]) == ("tr", "trend")
    assert "experiment" not in client.get(f"/v1/items/{item}/similar", headers=H_READ).json()
    comp = client.get(f"/v1/items/complements?item_id={item}&visitor_id={who}", headers=H_READ).json()
    assert comp["variant"] == "trend"
    r = client.post("/v1/retargeting/export", json={"visitor_ids": [who]}, headers=H_READ)
    line = msgspec.json.decode(r.content.splitlines()[0])
    assert (line["experiment"], line["variant"]) == ("tr", "trend")


async def test_a_variant_that_cannot_be_served_gets_the_default_unstamped(
    published: Path, recommender: Recommender
) -> None:
    broken = {"v-copy"}

    def loader(directory: Path) -> Recommender:
        if directory.name in broken:
            raise ArtifactError(f"{directory}: damaged")
        return copy.copy(recommender)

    holder = ModelHolder(published, loader=loader)
    await holder.reload()
    store = MemoryExperimentStore()
    follower = ExperimentFollower(store, ExperimentRuntime(holder))
    await store.put(
        doc("mv", variants=[{"name": "a", "control": True}, {"name": "b", "model_version": "v-copy"}])
    )
    await store.start("mv")
    await follower.step()  # refresh logs the broken variant once
    people = _people(50)
    served = [await follower.runtime.serve("home", p) for p in people]
    names = {s.variant if s is not None else None for s in served}
    assert names == {"a", None}  # b's people: the default, counted nowhere
    broken.clear()  # repaired: tried again when the experiments change
    await store.stop("mv")
    await follower.step()
    assert await follower.runtime.serve("home", people[0]) is None
