"""A small simulated storefront and a real model trained on it, shared by every test package.

The storefront is a few categories of products with known complements (a kettle goes with tea), content
for each journey stage, and visitors walking content -> product views -> cart -> purchase -> review.
``train_storefront_model`` trains a tiny LightFM model on it through the real training pipeline and
publishes it as a real artifact (``tests/conftest.py`` does so once per test session).
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np

from models.dataset import EventLog
from models.domain import CatalogItem, Channel, EventType, ItemKind, Stage
from training.pipeline import config_for, train_and_publish

# (category, title, price, repeatable) ; ids are "p-<category>-<n>"
_PRODUCTS: dict[str, list[tuple[str, float, bool]]] = {
    "kitchen": [
        ("Kettle", 39.0, False),
        ("Teapot", 25.0, False),
        ("Mug set", 18.0, False),
        ("Tea infuser", 9.0, False),
        ("Toaster", 45.0, False),
        ("Coffee grinder", 55.0, False),
        ("French press", 29.0, False),
        ("Milk frother", 22.0, False),
    ],
    "tea": [
        ("Green tea", 6.0, True),
        ("Black tea", 5.5, True),
        ("Herbal tea", 6.5, True),
        ("Chai blend", 7.0, True),
    ],
    "garden": [
        ("Garden hose", 30.0, False),
        ("Watering can", 15.0, False),
        ("Pruning shears", 24.0, False),
        ("Garden gloves", 12.0, False),
        ("Plant food", 8.0, True),
        ("Seed pack", 4.0, True),
    ],
    "outdoor": [
        ("Tent", 180.0, False),
        ("Sleeping bag", 90.0, False),
        ("Camping stove", 60.0, False),
        ("Lantern", 25.0, False),
        ("Backpack", 75.0, False),
    ],
}
# pairs bought together (both directions), the structure complements must recover
BUNDLES = [
    ("Kettle", "Green tea"),
    ("Kettle", "Black tea"),
    ("Teapot", "Tea infuser"),
    ("Coffee grinder", "French press"),
    ("Garden hose", "Watering can"),
    ("Pruning shears", "Garden gloves"),
    ("Tent", "Sleeping bag"),
    ("Camping stove", "Backpack"),
]
OUT_OF_STOCK_TITLE = "Lantern"
_CONTENT: list[tuple[str, str, str, tuple[Stage, ...]]] = [
    ("c-tea-101", "How to brew tea", "tea", (Stage.AWARENESS,)),
    ("c-kettle-guide", "Choosing a kettle", "kitchen", (Stage.CONSIDERATION,)),
    ("c-kitchen-deals", "Kitchen deals this week", "kitchen", (Stage.DECISION,)),
    ("c-kettle-care", "Descaling your kettle", "kitchen", (Stage.RETENTION,)),
    ("c-kitchen-share", "Share your kitchen", "kitchen", (Stage.ADVOCACY,)),
    ("c-garden-101", "Garden planning 101", "garden", (Stage.AWARENESS,)),
    ("c-garden-tools", "Comparing garden tools", "garden", (Stage.CONSIDERATION,)),
    ("c-camping-list", "Camping checklist", "outdoor", (Stage.DECISION,)),
    ("c-tent-care", "Caring for your tent", "outdoor", (Stage.RETENTION,)),
    ("c-welcome", "Welcome to the store", "", ()),
]
BASE_TIME = 1_735_689_600.0  # 2025-01-01T00:00:00Z


def product_id(title: str) -> str:
    for cat, items in _PRODUCTS.items():
        for n, (t, _price, _rep) in enumerate(items):
            if t == title:
                return f"p-{cat}-{n}"
    raise KeyError(title)


def storefront_catalog() -> list[CatalogItem]:
    out = [
        CatalogItem(
            item_id=f"p-{cat}-{n}",
            kind=ItemKind.PRODUCT,
            title=title,
            category=cat,
            price=price,
            repeatable=rep,
            in_stock=title != OUT_OF_STOCK_TITLE,
        )
        for cat, items in _PRODUCTS.items()
        for n, (title, price, rep) in enumerate(items)
    ]
    out += [
        CatalogItem(item_id=cid, kind=ItemKind.CONTENT, title=title, category=cat, stages=stages)
        for cid, title, cat, stages in _CONTENT
    ]
    return out


def simulate_storefront(n_visitors: int = 400, seed: int = 7) -> EventLog:
    """Visitors with a favourite category walking content -> views -> cart -> purchase -> review."""
    rng = np.random.default_rng(seed)
    catalog = storefront_catalog()
    by_cat: dict[str, list[str]] = {}
    for c in catalog:
        if c.kind is ItemKind.PRODUCT:
            by_cat.setdefault(c.category, []).append(c.item_id)
    content_by_cat: dict[str, list[str]] = {}
    for cid, _t, cat, _s in _CONTENT:
        content_by_cat.setdefault(cat, []).append(cid)
    partner: dict[str, list[str]] = {}
    for a, b in BUNDLES:
        partner.setdefault(product_id(a), []).append(product_id(b))
        partner.setdefault(product_id(b), []).append(product_id(a))
    cats = list(_PRODUCTS)
    channels = list(Channel)
    vis: list[str] = []
    items: list[str] = []
    kinds: list[int] = []
    times: list[float] = []
    chans: list[int] = []

    for v in range(n_visitors):
        visitor = f"sim-{v:04d}"
        cat = cats[int(rng.integers(len(cats)))]
        if cat == "tea" and rng.random() < 0.5:
            cat = "kitchen"  # tea drinkers shop kettles too
        t = BASE_TIME + float(rng.uniform(0, 50 * 86_400))
        ch = int(rng.integers(len(channels)))

        def emit(item: str, kind: EventType) -> None:
            nonlocal t
            t += float(rng.uniform(30, 3600))
            vis.append(visitor)  # noqa: B023 (the loop variable is meant: one visitor per iteration)
            items.append(item)
            kinds.append(kind.code)
            times.append(t)
            chans.append(ch)  # noqa: B023

        for cid in rng.choice(content_by_cat.get(cat, ["c-welcome"]), size=int(rng.integers(1, 3))):
            emit(str(cid), EventType.CONTENT_VIEW)
        viewed = [str(x) for x in rng.choice(by_cat[cat], size=int(rng.integers(2, 6)))]
        for item in viewed:
            emit(item, EventType.PRODUCT_VIEW)
        if rng.random() < 0.65:
            first = viewed[-1]
            basket = [first]
            if first in partner and rng.random() < 0.8:
                basket.append(partner[first][int(rng.integers(len(partner[first])))])
            for item in basket:
                emit(item, EventType.ADD_TO_CART)
            if rng.random() < 0.7:
                emit(first, EventType.CHECKOUT)
                for item in basket:
                    emit(item, EventType.PURCHASE)
                if rng.random() < 0.35:
                    emit(first, EventType.REVIEW)
                for item in basket:  # consumables are bought again
                    if item.startswith(("p-tea", "p-garden-4", "p-garden-5")) and rng.random() < 0.6:
                        t += 20 * 86_400
                        emit(item, EventType.PURCHASE)
    return EventLog.build(
        visitor_ids=vis,
        item_ids=items,
        event=np.asarray(kinds, dtype=np.int8),
        ts=np.asarray(times, dtype=np.float64),
        catalog=catalog,
        channel=np.asarray(chans, dtype=np.int8),
        source="storefront-fixture",
    )


def train_storefront_model(models_dir: Path, seed: int = 7) -> Path:
    """Train a tiny real model on the simulated storefront and publish it; returns its version dir."""
    cfg = config_for(None, seed=seed, threads=1)
    cfg = msgspec.structs.replace(
        cfg, factors=msgspec.structs.replace(cfg.factors, no_components=8, epochs=5, warm_epochs=1)
    )
    return train_and_publish(simulate_storefront(seed=seed), models_dir, cfg)
