"""The live catalog and merchandising rules under load (part of ``bench_service``).

``install`` writes 20 rules (``PUT /v1/rules``) and 10,000 live items (``POST /v1/items``: 5,000 new products
represented from their features, 5,000 trained products with a new price) into a running server and waits
until every worker serves both; ``bench_service`` then measures recommend latency and saturation again, on
the same server and visitors, to compare with the figures taken before. ``patch_visible`` times how long a
``PATCH /v1/items/{id}`` takes to reach every worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from models.domain import CatalogItem, ItemKind

STAGES = ("awareness", "consideration", "decision", "retention", "advocacy")
BATCH = 1000  # items per POST /v1/items (the service's default JOURNEYREC_MAX_CATALOG_BATCH)
AGREE = 20  # consecutive fresh-connection answers that must agree before a change counts as everywhere


def rules(products: list[CatalogItem], seed: int) -> list[dict[str, Any]]:
    """20 rules of every kind, scoped by stage: boosts and buries of categories and price ranges, hides,
    pins and per-category caps."""
    rng = np.random.default_rng(seed)
    cats = sorted({p.category for p in products if p.category})
    pick = rng.choice(len(cats), 12, replace=len(cats) < 12)
    out: list[dict[str, Any]] = [
        {
            "id": f"boost-{i}",
            "stages": [STAGES[i % 5]],
            "condition": {"categories": [cats[pick[i]]]},
            "action": {"type": "boost", "factor": 2.0 + i},
        }
        for i in range(6)
    ]
    out += [
        {
            "id": f"bury-{i}",
            "stages": [STAGES[(i + 2) % 5]],
            "condition": {"categories": [cats[pick[6 + i]]]},
            "action": {"type": "bury", "factor": 3.0},
        }
        for i in range(4)
    ]
    prices = sorted(p.price for p in products if p.price is not None)
    for i in range(3):
        lo = prices[len(prices) * (i + 1) // 5]
        out.append(
            {
                "id": f"price-{i}",
                "condition": {"min_price": lo, "max_price": lo * 1.2},
                "action": {"type": "boost", "factor": 1.5},
            }
        )
    tags = sorted({t for p in products for t in p.tags})
    for i in range(3):
        # a tag of a random product: hides the (few or many) items that carry it
        tag = tags[int(rng.integers(len(tags)))] if tags else cats[pick[i]]
        cond = {"tags": [tag]} if tags else {"categories": [tag]}
        out.append(
            {
                "id": f"hide-{i}",
                "stages": [STAGES[(i + 3) % 5]],
                "condition": cond,
                "action": {"type": "hide"},
            }
        )
    for i in range(3):
        item = products[int(rng.integers(len(products)))].item_id
        out.append(
            {
                "id": f"pin-{i}",
                "stages": [STAGES[i]],
                "action": {"type": "pin", "item_id": item, "position": 2 + i},
            }
        )
    out.append({"id": "cap", "action": {"type": "cap_per_category", "max_items": 3}})
    return out


def live_items(products: list[CatalogItem], n_new: int, n_patched: int, seed: int) -> list[dict[str, Any]]:
    """``n_new`` new products (each a variant of a random trained one: its category and tags, another price)
    and ``n_patched`` trained products with their price cut by a tenth."""
    rng = np.random.default_rng(seed + 1)
    out: list[dict[str, Any]] = []
    for i, j in enumerate(rng.integers(0, len(products), n_new)):
        like = products[int(j)]
        out.append(
            {
                "item_id": f"live-new-{i}",
                "kind": ItemKind.PRODUCT.value,
                "title": f"New {like.title or like.item_id}",
                "category": like.category,
                "price": None if like.price is None else round(like.price * float(rng.uniform(0.8, 1.2)), 2),
                "tags": list(like.tags),
            }
        )
    for j in rng.choice(len(products), n_patched, replace=False):
        p = products[int(j)]
        out.append(
            {
                "item_id": p.item_id,
                "kind": p.kind.value,
                "title": p.title,
                "category": p.category,
                "price": None if p.price is None else round(p.price * 0.9, 2),
                "tags": list(p.tags),
                "in_stock": p.in_stock,
                "repeatable": p.repeatable,
            }
        )
    return out


def _everywhere(
    base: str, headers: dict[str, str], ok: Callable[[httpx.Client], bool], timeout: float
) -> float:
    """Seconds until the change holds everywhere: from the start to the first of ``AGREE`` consecutive
    answers on new connections (so both workers answer some) that all show it."""
    t0 = time.perf_counter()
    agree, since = 0, 0.0
    while time.perf_counter() - t0 < timeout:
        asked = time.perf_counter()
        with httpx.Client(base_url=base, headers=headers, timeout=10) as c:
            if ok(c):
                since = since if agree else asked - t0
                agree += 1
            else:
                agree = 0
        if agree >= AGREE:
            return since
        time.sleep(0.01)
    raise SystemExit(f"a change did not reach every worker within {timeout:.0f} s")


def install(base: str, headers: dict[str, str], products: list[CatalogItem], seed: int) -> dict[str, float]:
    """Write the rules and the live items; wait until every worker serves both. Returns figures."""
    with httpx.Client(base_url=base, headers=headers, timeout=60) as c:
        r = c.put("/v1/rules", json={"rules": rules(products, seed)})
        r.raise_for_status()
        rules_version = r.json()["change"]["version"]
        items = live_items(products, 5000, 5000, seed)
        t0 = time.perf_counter()
        version = 0
        for start in range(0, len(items), BATCH):
            r = c.post("/v1/items", json={"items": items[start : start + BATCH]})
            r.raise_for_status()
            version = r.json()["catalog_version"]
        write_s = time.perf_counter() - t0

    def served(c: httpx.Client) -> bool:
        item = c.get("/v1/items/live-new-0").json()
        rec = c.get("/v1/visitors/bench-probe/recommendations?k=10").json()
        return item.get("catalog_version", -1) >= version and rec.get("rules_version") == rules_version

    applied_s = _everywhere(base, headers, served, 120)
    return {"live_items": float(len(items)), "live_write_s": write_s, "live_applied_s": applied_s}


def patch_visible(base: str, headers: dict[str, str], item_id: str) -> float:
    """Seconds from a PATCH (out of stock) answering to every worker serving it."""
    with httpx.Client(base_url=base, headers=headers, timeout=10) as c:
        r = c.patch(f"/v1/items/{item_id}", json={"in_stock": False})
        r.raise_for_status()
        version = r.json()["catalog_version"]
    return _everywhere(
        base, headers, lambda c: c.get(f"/v1/items/{item_id}").json()["catalog_version"] >= version, 30
    )
