"""The storefront simulator: format, determinism, and the journey behaviour the models rely on."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pytest

from models.domain import EVENT_NAMES, STAGES, Channel, EventType, ItemKind
from models.errors import InvalidInputError
from training.simulate import Simulation, SimulationConfig, SimulationSummary, simulate, write_simulation

SMALL = SimulationConfig(visitors=600, items=300, days=60, seed=3)
EVENT_HEADER = ["visitor_id", "item_id", "event", "timestamp", "session_id", "channel", "quantity", "value"]
CATALOG_HEADER = ["item_id", "kind", "title", "category", "price", "tags", "stages", "in_stock", "repeatable"]
PURCHASE, ADD = EventType.PURCHASE.code, EventType.ADD_TO_CART.code


@pytest.fixture(scope="module")
def sim() -> Simulation:
    return simulate(SMALL)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, SimulationSummary]:
    out = tmp_path_factory.mktemp("sim") / "nested" / "out"
    return out, write_simulation(SMALL, out)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _purchases(sim: Simulation) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    m = sim.event == PURCHASE
    return sim.visitor[m], sim.item[m], sim.ts[m], sim.session[m]


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    cfg = SimulationConfig(visitors=150, items=120, days=30, seed=11)
    write_simulation(cfg, tmp_path / "a")
    write_simulation(cfg, tmp_path / "b")
    write_simulation(SimulationConfig(visitors=150, items=120, days=30, seed=12), tmp_path / "c")
    for name in ("events.csv", "catalog.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert (tmp_path / "a" / "events.csv").read_bytes() != (tmp_path / "c" / "events.csv").read_bytes()


def test_files_have_the_native_columns_and_values(written: tuple[Path, SimulationSummary]) -> None:
    out, _ = written
    with (out / "events.csv").open(encoding="utf-8") as f:
        assert f.readline().rstrip("\n").split(",") == EVENT_HEADER
    with (out / "catalog.csv").open(encoding="utf-8") as f:
        assert f.readline().rstrip("\n").split(",") == CATALOG_HEADER
    events, catalog = _rows(out / "events.csv"), _rows(out / "catalog.csv")
    assert all(None not in r and len(r) == len(EVENT_HEADER) for r in events)
    assert all(None not in r and len(r) == len(CATALOG_HEADER) for r in catalog)
    channels = {c.value for c in Channel}
    stages = {s.value for s in STAGES}
    for r in events:
        assert r["event"] in EVENT_NAMES
        assert r["channel"] in channels
        assert r["session_id"]
        assert float(r["quantity"]) >= 1
        assert (r["value"] != "") == (r["event"] == "purchase")
    for r in catalog:
        assert r["kind"] in {"product", "content"}
        assert r["in_stock"] in {"true", "false"}
        assert r["repeatable"] in {"true", "false"}
        assert all(s in stages for s in r["stages"].split("|") if s)
        assert (r["price"] != "") == (r["kind"] == "product")
        if r["kind"] == "product":
            assert not r["stages"]


def test_purchase_value_is_price_times_quantity(written: tuple[Path, SimulationSummary]) -> None:
    out, _ = written
    price = {r["item_id"]: float(r["price"]) for r in _rows(out / "catalog.csv") if r["price"]}
    bought = [r for r in _rows(out / "events.csv") if r["event"] == "purchase"]
    assert bought
    for r in bought:
        assert float(r["value"]) == pytest.approx(price[r["item_id"]] * float(r["quantity"]), abs=0.006)
    assert any(float(r["quantity"]) > 1 for r in bought)  # consumables come by the pack


def test_every_event_item_is_in_the_catalog(written: tuple[Path, SimulationSummary]) -> None:
    out, _ = written
    ids = [r["item_id"] for r in _rows(out / "catalog.csv")]
    assert len(ids) == len(set(ids)) == SMALL.items
    assert {r["item_id"] for r in _rows(out / "events.csv")} <= set(ids)


def test_timestamps_inside_the_window_and_sorted(written: tuple[Path, SimulationSummary]) -> None:
    out, summary = written
    stamps = [r["timestamp"] for r in _rows(out / "events.csv")]
    assert all(len(s) == 20 and s.endswith("Z") for s in stamps)
    ts = [dt.datetime.fromisoformat(s.replace("Z", "+00:00")) for s in stamps]
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    assert start <= min(ts)
    assert max(ts) < start + dt.timedelta(days=SMALL.days)
    assert ts == sorted(ts)
    assert stamps[0] == summary.first_timestamp
    assert stamps[-1] == summary.last_timestamp


def test_summary_counts_match_the_files(written: tuple[Path, SimulationSummary]) -> None:
    out, summary = written
    events, catalog = _rows(out / "events.csv"), _rows(out / "catalog.csv")
    s = summary
    assert s.events == len(events)
    assert s.visitors == len({r["visitor_id"] for r in events})
    assert s.products == sum(r["kind"] == "product" for r in catalog)
    assert s.content_items == sum(r["kind"] == "content" for r in catalog)
    per_type: dict[str, int] = {}
    for r in events:
        per_type[r["event"]] = per_type.get(r["event"], 0) + 1
    assert s.events_per_type == per_type


def test_catalog_shape(sim: Simulation) -> None:
    products = [c for c in sim.catalog if c.kind is ItemKind.PRODUCT]
    content = [c for c in sim.catalog if c.kind is ItemKind.CONTENT]
    assert 0.05 <= len(content) / len(sim.catalog) <= 0.2
    categories = {c.category for c in products}
    assert len(categories) >= 3
    for cat in categories:  # every category has content for every stage
        served = {s for c in content if c.category == cat for s in c.stages}
        assert served == set(STAGES), cat
    assert any(c.repeatable for c in products)
    assert not all(c.repeatable for c in products)
    assert all(c.price is not None and c.price > 0 for c in products)
    assert len({c.title for c in products}) == len(products)


def test_every_stage_of_the_journey_happens(sim: Simulation) -> None:
    counts = np.bincount(sim.event, minlength=len(EventType))
    for e in EventType:  # impressions need served lists: simulate-traffic sends them, the files have none
        assert (counts[e.code] > 0) == (e is not EventType.IMPRESSION), e
    assert counts[EventType.PRODUCT_VIEW.code] > counts[EventType.ADD_TO_CART.code] > 0
    assert counts[EventType.ADD_TO_CART.code] > counts[EventType.REVIEW.code]
    assert len(np.unique(sim.channel)) == len(Channel)


def test_purchases_are_preceded_by_a_cart_of_the_item(sim: Simulation) -> None:
    carted: dict[tuple[int, int], float] = {}
    for v, i, t in zip(
        sim.visitor[sim.event == ADD], sim.item[sim.event == ADD], sim.ts[sim.event == ADD], strict=True
    ):
        carted.setdefault((int(v), int(i)), float(t))
    v, i, t, _ = _purchases(sim)
    before = [carted.get((int(a), int(b)), np.inf) <= c for a, b, c in zip(v, i, t, strict=True)]
    assert np.mean(before) > 0.9  # only journeys cut off by the start of the window lack the cart


def test_abandoned_carts_come_back(sim: Simulation) -> None:
    """Some purchases close a cart left in an earlier session; most carts are bought in their session."""
    last_cart: dict[tuple[int, int], int] = {}
    came_back = []
    rows = np.flatnonzero((sim.event == ADD) | (sim.event == PURCHASE))  # time order
    for v, i, e, s in zip(sim.visitor[rows], sim.item[rows], sim.event[rows], sim.session[rows], strict=True):
        key = (int(v), int(i))
        if e == ADD:
            last_cart[key] = int(s)
        elif key in last_cart:
            came_back.append(last_cart[key] != s)
    assert len(came_back) > 100
    assert 0.03 < np.mean(came_back) < 0.4


def test_complements_are_bought_after_purchases(sim: Simulation) -> None:
    """Buyers of a durable come back for its accessories far more often than for random products."""
    v, i, t, s = _purchases(sim)
    products = np.flatnonzero(sim.complements[:, 0] >= 0)
    rng = np.random.default_rng(0)
    hits = chance = total = 0
    by_visitor: dict[int, list[tuple[float, int, int]]] = {}
    for a, b, c, d in zip(v.tolist(), i.tolist(), t.tolist(), s.tolist(), strict=True):
        by_visitor.setdefault(a, []).append((c, b, d))
    for bought in by_visitor.values():
        for t0, item, s0 in bought:
            if sim.catalog[item].repeatable:
                continue
            later = {x for t1, x, s1 in bought if t1 > t0 and s1 != s0}
            total += 1
            hits += bool(later & set(sim.complements[item].tolist()))
            chance += bool(later & set(sim.complements[rng.choice(products)].tolist()))
    assert total > 50
    assert hits / total > 0.15
    assert hits > 4 * chance


def test_consumables_are_bought_again(sim: Simulation) -> None:
    v, i, _, _ = _purchases(sim)
    pairs, counts = np.unique(v.astype(np.int64) * len(sim.catalog) + i, return_counts=True)
    repeatable = np.array([c.repeatable for c in sim.catalog])[pairs % len(sim.catalog)]
    assert (counts[repeatable] > 1).mean() > 0.1
    assert (counts[repeatable] > 1).mean() > 3 * (counts[~repeatable] > 1).mean()


def test_static_taste_matters(sim: Simulation) -> None:
    """A visitor's purchases concentrate on few categories (favourites), not spread over the store."""
    cat = np.array([c.category for c in sim.catalog])
    v, i, _, _ = _purchases(sim)
    shares = []
    for visitor in np.unique(v):
        cats = cat[i[v == visitor]]
        if len(cats) >= 4:
            _, n = np.unique(cats, return_counts=True)
            shares.append(np.sort(n)[-2:].sum() / len(cats))
    assert len(shares) > 20
    assert np.mean(shares) > 0.6


def test_events_scale_with_visitors() -> None:
    small = simulate(SimulationConfig(visitors=300, items=200, days=60, seed=5))
    large = simulate(SimulationConfig(visitors=1200, items=200, days=60, seed=5))
    assert 3.0 < len(large.ts) / len(small.ts) < 5.0


def test_volume_per_visitor_near_fifty() -> None:
    """The defaults (20k visitors, 120 days) are ~1M events: ~50 per visitor, here on a smaller crowd."""
    sim = simulate(SimulationConfig(visitors=1000, seed=2))
    assert 40 <= len(sim.ts) / 1000 <= 60


def test_bad_config_is_a_validation_error() -> None:
    with pytest.raises(InvalidInputError):
        simulate(SimulationConfig(visitors=0))
    with pytest.raises(InvalidInputError):
        simulate(SimulationConfig(start="yesterday"))
    with pytest.raises(InvalidInputError):
        simulate(SimulationConfig(items=5))
