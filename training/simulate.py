"""A seeded storefront simulator writing the native format (``events.csv``, ``catalog.csv``).

Products sit in up to 20 categories (Zipf popularity, log-normal prices, consumables, a few out of stock) and
each has accessories in a paired category; content pages serve every journey stage. Visitors with 1-2
favourite categories, a price tier and a taste for popular or niche items walk awareness -> consideration ->
decision -> retention -> advocacy in sessions over days. What they do next depends on their stage and recent
history (the category they compare, the item in their cart, the accessories of what they bought, when their
consumables run out) as well as on their static taste, and some churn at every stage.

All visitors advance one session per step of a lock-step loop vectorised over visitors, so Python loops run
per session *step* and event slot, never per visitor or event: the defaults (20k visitors, ~1M events) take
about 1.5 s including the CSV text. The same seed gives byte-identical files.

The response model (``ResponseModel``, ``respond``) makes visitors react to a list they are shown; the
files above never use it (``journeyrec simulate-traffic``, ``training.traffic``, does). For an item at
1-based rank r, P(click) = position_bias(r) x (base + w_rel x relevance + w_fit x stage_fit), with
position_bias(r) = 1 / log2(r + 1) (the examination hypothesis), ``relevance`` the item's fit to the
visitor's latent taste (favourite categories, price tier) and ``stage_fit`` its fit to the visitor's *true*
stage and state (guides in awareness, products of the category being compared in consideration,
accessories of the carted item in decision, accessories and replenishment in retention, referral and review
pages in advocacy); both are in [0, 1] and documented on their functions. A clicked product in stock is
carted and bought with stage-dependent probabilities, and ``Walk.react`` carries the outcomes into the
journeys. The model draws from its own Generator in a fixed order, vectorised over visitors x slots, so the
same inputs and seed give the same reactions.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass
from pathlib import Path

import msgspec
import numpy as np

from models.domain import EVENT_TYPES, STAGES, CatalogItem, Channel, EventType, ItemKind, Stage
from models.errors import InvalidInputError

DAY = 86_400
CHANNELS: tuple[Channel, ...] = tuple(Channel)
# (category, product title, median price, replenishment days or 0 for durables, paired categories).
# Ordered so that a small catalog (the first k categories) still pairs categories among themselves.
_CATEGORIES: tuple[tuple[str, str, float, int, tuple[str, ...]], ...] = (
    ("kettles", "Kettle", 45, 0, ("tea", "mugs")),
    ("tea", "Tea", 7, 21, ("mugs", "kettles")),
    ("mugs", "Mug", 12, 0, ("tea", "coffee")),
    ("garden-tools", "Garden Tool", 35, 0, ("seeds", "plant-food")),
    ("seeds", "Seed Pack", 4, 30, ("plant-food", "garden-tools")),
    ("plant-food", "Plant Food", 9, 30, ("seeds",)),
    ("coffee-machines", "Coffee Machine", 180, 0, ("coffee", "mugs")),
    ("coffee", "Coffee Beans", 13, 14, ("mugs",)),
    ("tents", "Tent", 160, 0, ("sleeping-bags", "lanterns")),
    ("sleeping-bags", "Sleeping Bag", 80, 0, ("tents", "lanterns")),
    ("lanterns", "Lantern", 25, 0, ("batteries",)),
    ("batteries", "Battery Pack", 8, 40, ("lanterns",)),
    ("printers", "Printer", 150, 0, ("ink", "paper")),
    ("ink", "Ink Cartridge", 25, 35, ("paper", "printers")),
    ("paper", "Printer Paper", 6, 28, ("ink",)),
    ("dog-beds", "Dog Bed", 60, 0, ("dog-food", "dog-toys")),
    ("dog-food", "Dog Food", 30, 21, ("dog-toys",)),
    ("dog-toys", "Dog Toy", 10, 0, ("dog-food",)),
    ("razors", "Razor", 40, 0, ("razor-blades",)),
    ("razor-blades", "Razor Blades", 15, 25, ("razors",)),
)
# Two content formats per stage, in Stage order: (id kind, title template; {c} = category words).
_CONTENT: tuple[tuple[tuple[str, str], tuple[str, str]], ...] = (
    (("guide", "{C} 101: a beginner's guide"), ("ideas", "Ideas and inspiration: {c}")),
    (("compare", "Best {c} compared"), ("buying-guide", "{C} buying guide")),
    (("reviews", "{C}: customer reviews"), ("faq", "{C} FAQ: delivery and returns")),
    (("howto", "How to get the most from your {c}"), ("care", "{C} care guide")),
    (("refer", "Refer a friend: {c}"), ("write-review", "Write a review: {c}")),
)
_TIERS = ("budget", "mid-range", "premium")
_STYLES = ("classic", "eco", "compact", "pro", "deluxe")
# Cumulative channel probabilities per stage (columns in Channel order: email, ad, search, social, direct,
# referral): ads and search bring newcomers, direct and email bring buyers back, advocates come via social.
_CHANNEL_CDF = np.cumsum(
    [
        [0.05, 0.35, 0.30, 0.20, 0.05, 0.05],
        [0.10, 0.15, 0.35, 0.10, 0.25, 0.05],
        [0.20, 0.10, 0.15, 0.05, 0.45, 0.05],
        [0.50, 0.05, 0.10, 0.05, 0.30, 0.00],
        [0.30, 0.00, 0.00, 0.40, 0.20, 0.10],
    ],
    axis=1,
)
_E = EventType
_AWARE, _CONSIDER, _DECIDE, _RETAIN, _ADVOCATE = range(5)  # Stage indices


class SimulationConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Size, seed and behaviour knobs; the defaults give ~1M events (~50 per visitor)."""

    visitors: int = 20_000
    items: int = 2_000  # catalog size: products plus content pages (>= 10)
    days: int = 120
    seed: int = 1
    start: str = "2024-01-01"  # ISO date (UTC) of the first day
    content_share: float = 0.10  # share of the catalog that is content pages
    zipf: float = 1.0  # popularity exponent within a category
    out_of_stock: float = 0.03  # share of products not in stock (viewed; a bestseller is carted instead)
    complements: int = 3  # accessories per product, drawn from the paired categories
    abandon: float = 0.4  # share of fresh carts not bought in the session
    bundle: float = 0.35  # share of fresh carts that add an accessory of the item
    churn: float = 1.0  # multiplies every stage's per-session churn probability
    gap_days: float = 1.0  # multiplies every mean time between sessions
    # visitors also arrive in the days before ``start``; their earlier events are dropped, so the files
    # open mid-stream with journeys under way, as a real export does
    warmup_days: int = 30


class SimulationSummary(msgspec.Struct, frozen=True, kw_only=True):
    events: int
    visitors: int  # visitors with at least one event
    products: int
    content_items: int
    events_per_type: dict[str, int]
    first_timestamp: str  # ISO-8601 UTC, "" without events
    last_timestamp: str


@dataclass(frozen=True)
class Simulation:
    """Simulated events (aligned columns of length n, sorted by timestamp) with their catalog.

    visitor int32[n] index into ``visitor_ids``;  item int32[n] index into ``catalog``
    event int8[n] ``EventType.code``;  ts float64[n] POSIX seconds (whole seconds, UTC)
    session int64[n] session number (written ``s<n>``);  channel int8[n] index into ``CHANNELS``
    quantity int32[n] units;  value float64[n] price x quantity for purchases, NaN otherwise
    complements int32[n_items, c] the accessories each product was given (-1 rows for content)
    """

    visitor_ids: list[str]
    catalog: list[CatalogItem]
    visitor: np.ndarray
    item: np.ndarray
    event: np.ndarray
    ts: np.ndarray
    session: np.ndarray
    channel: np.ndarray
    quantity: np.ndarray
    value: np.ndarray
    complements: np.ndarray

    def summary(self) -> SimulationSummary:
        counts = np.bincount(self.event, minlength=len(EVENT_TYPES))
        first_last = _iso(self.ts[[0, -1]]) if len(self.ts) else ["", ""]
        products = sum(c.kind is ItemKind.PRODUCT for c in self.catalog)
        return SimulationSummary(
            events=len(self.ts),
            visitors=len(np.unique(self.visitor)),
            products=products,
            content_items=len(self.catalog) - products,
            events_per_type={e.value: int(n) for e, n in zip(EVENT_TYPES, counts, strict=True) if n},
            first_timestamp=first_last[0],
            last_timestamp=first_last[1],
        )


def _page(item_id: str, title: str, category: str, kind: str, stages: tuple[Stage, ...]) -> CatalogItem:
    return CatalogItem(
        item_id=item_id,
        kind=ItemKind.CONTENT,
        title=title,
        category=category,
        tags=(category, kind),
        stages=stages,
    )


class Shop:
    """The catalog as arrays by item index (products first, then landing pages, then stage content)."""

    def __init__(self, cfg: SimulationConfig, rng: np.random.Generator) -> None:
        k = int(np.clip(cfg.items // 50, 1, len(_CATEGORIES)))
        m = max(1, round((cfg.content_share * cfg.items - k) / (5 * k)))  # pages per (category, stage)
        n = cfg.items - k * (1 + 5 * m)
        if n < 3 * k:
            raise InvalidInputError(f"items={cfg.items} is too small for {k} categories and their content")
        defs = _CATEGORIES[:k]
        names = [d[0] for d in defs]
        counts = np.full(k, n // k) + (np.arange(k) < n % k)
        starts = np.concatenate([[0], np.cumsum(counts)])
        pcat = np.repeat(np.arange(k), counts)
        price = np.round(
            np.round(np.array([d[2] for d in defs])[pcat] * rng.lognormal(0, 0.45, n), 1) + 0.09, 2
        )
        rank = np.concatenate([rng.permutation(c) for c in counts])  # popularity rank in the category
        pop = 1.0 / (rank + 1.0) ** cfg.zipf
        # price tier = price tercile within the category; every tier is non-empty as counts >= 3
        tier = np.concatenate(
            [np.argsort(np.argsort(price[a:b])) * 3 // (b - a) for a, b in itertools.pairwise(starts)]
        )
        in_stock = (rng.random(n) >= cfg.out_of_stock) | (rank == 0)  # bestsellers are always in stock
        cycle = np.array([float(d[3]) for d in defs])[pcat]
        style = rng.integers(0, len(_STYLES), n)
        number = np.arange(n) - starts[pcat] + 1
        self.items = [
            CatalogItem(
                item_id=f"p-{names[c]}-{number[i]}",
                title=f"{defs[c][1]} {number[i]}",
                category=names[c],
                price=float(price[i]),
                tags=(names[c], _TIERS[tier[i]], _STYLES[style[i]], *(["consumable"] if cycle[i] else [])),
                in_stock=bool(in_stock[i]),
                repeatable=bool(cycle[i] > 0),
            )
            for i, c in enumerate(pcat.tolist())
        ]
        # accessories: popular products of the paired categories, fixed per product
        comp = np.empty((n, cfg.complements), np.int64)
        for c, d in enumerate(defs):
            paired = [names.index(p) for p in d[4] if p in names] or [c]
            for j in range(cfg.complements):
                a, b = starts[paired[j % len(paired)]], starts[paired[j % len(paired)] + 1]
                comp[starts[c] : starts[c + 1], j] = a + rng.choice(
                    b - a, counts[c], p=pop[a:b] / pop[a:b].sum()
                )
        for name in names:  # a landing page per category, then m pages per (category, stage)
            words = name.replace("-", " ")
            self.items.append(_page(f"c-{name}-landing", words.capitalize(), name, "landing", ()))
            for stage, formats in zip(STAGES, _CONTENT, strict=True):
                for j in range(m):
                    kind, title = formats[j % 2]
                    title = title.format(c=words, C=words.capitalize()) + (
                        f" (part {j // 2 + 1})" if m > 2 else ""
                    )
                    self.items.append(_page(f"c-{name}-{kind}-{j // 2 + 1}", title, name, kind, (stage,)))
        n_content = len(self.items) - n
        self.n_products = n
        self.cat = np.concatenate([pcat, np.repeat(np.arange(k), 1 + 5 * m)])  # int64[n_items]
        self.tier = np.concatenate(
            [tier, np.full(n_content, -1)]
        )  # int64[n_items] price tier, -1 for content
        # int64[n_items]: the stage index a content page serves; -1 for products and landing pages
        per_cat = np.concatenate([[-1], np.repeat(np.arange(5), m)])
        self.page_stage = np.concatenate([np.full(n, -1), np.tile(per_cat, k)])
        self.in_stock = np.concatenate([in_stock, np.zeros(n_content, bool)])  # bool[n_items]
        self.pairs = np.zeros((k, k), bool)  # bool[k, k]: category b sells accessories of category a
        for c, d in enumerate(defs):
            self.pairs[c, [names.index(p) for p in d[4] if p in names]] = True
        self.price = np.concatenate([price, np.zeros(n_content)])  # float64[n_items], 0 for content
        self.cycle = np.concatenate([cycle, np.zeros(n_content)])  # float64[n_items] replenishment days
        # int64[n_items]: the item itself, or for out-of-stock products their category's bestseller
        self.sub = np.concatenate(
            [np.where(in_stock, np.arange(n), np.flatnonzero(rank == 0)[pcat]), n + np.arange(n_content)]
        )
        self.comp = np.concatenate([comp, np.full((n_content, cfg.complements), -1)])  # int64[n_items, c]
        self.cat_p = (p := rng.lognormal(0.0, 0.5, k)) / p.sum()  # float64[k] category popularity
        self.landing = n + np.arange(k) * (1 + 5 * m)  # int64[k] category landing / search-results pages
        self.content = self.landing[:, None, None] + 1 + np.arange(5 * m).reshape(1, 5, m)  # int64[k, 5, m]
        # Groups (category, tier) = cat * 3 + tier with members by popularity; g_key = group + cumulative
        # share of popularity (the last member's is exactly group + 1), so one searchsorted draws
        # Zipf-popular members of many groups at once.
        group = pcat * 3 + tier
        self.g_items = np.lexsort((-pop, group))
        self.g_len = np.bincount(group, minlength=3 * k)
        self.g_start = np.concatenate([[0], np.cumsum(self.g_len)[:-1]])
        sorted_pop = pop[self.g_items]
        csum = np.cumsum(sorted_pop)
        within = csum - np.repeat(csum[self.g_start] - sorted_pop[self.g_start], self.g_len)
        share = within / np.bincount(group, weights=pop)[group[self.g_items]]
        share[self.g_start + self.g_len - 1] = 1.0
        self.g_key = group[self.g_items] + np.minimum(share, 1.0)


class Walk:
    """Lock-step journeys: per-visitor state arrays (length V, int64 item/category indices, -1 = none)."""

    def __init__(self, cfg: SimulationConfig, shop: Shop, rng: np.random.Generator) -> None:
        v, k = cfg.visitors, len(shop.landing)
        self.cfg, self.shop, self.rng, self.end = cfg, shop, rng, cfg.days * DAY
        first = rng.choice(k, v, p=shop.cat_p)
        second = np.where(rng.random(v) < 0.4, rng.choice(k, v, p=shop.cat_p), first)
        self.pref = np.stack([first, second], axis=1)  # [V, 2] favourite categories
        self.tier = rng.integers(0, 3, v)  # preferred price tier
        self.niche = rng.beta(1.2, 5.0, v)  # chance that a pick ignores popularity
        self.act = np.clip(rng.lognormal(0.0, 0.5, v), 0.3, 3.0)  # scales gaps: heavy vs light visitors
        arrive = rng.integers(-cfg.warmup_days, cfg.days, v) * DAY
        self.t = arrive + _time_of_day(rng, v)  # next session start, seconds after ``start``
        self.alive = np.ones(v, bool)
        self.stage = np.zeros(v, np.int64)
        self.fc = first.copy()  # focus category of the journey
        self.short = np.full((v, 3), -1)  # the journey's shortlist, most recently viewed first
        self.cart = np.full((v, 2), -1)  # carted item and accessory
        self.owned = np.full(v, -1)  # last durable bought: its accessories sell next
        self.last = np.full(v, -1)  # last item bought (reviewed, shared)
        self.reviewed = np.full(v, -1)
        self.cons = np.full(v, -1)  # last consumable bought, and when it runs out
        self.due = np.zeros(v, np.int64)
        self.clock = np.zeros(v, np.int64)  # time of the visitor's latest event
        self.gap = np.zeros(v)  # days until the next session
        self.sess = np.zeros(v, np.int64)
        self.chan = np.zeros(v, np.int64)
        self.n_sessions = 0  # sessions started so far: the next session's number
        self.chunks: list[tuple[np.ndarray, ...]] = []

    # -- helpers ------------------------------------------------------------------------------------
    def emit(
        self,
        idx: np.ndarray,
        items: np.ndarray,
        event: EventType,
        p: float = 1.0,
        qty: np.ndarray | None = None,
    ) -> None:
        """One ``event`` for each visitor in ``idx`` (int[n]) on ``items`` (int[n]) a page's time later;
        with ``p`` < 1 only for a random share ``p`` of them."""
        if p < 1.0:
            m = self.some(idx, p)
            idx, items, qty = idx[m], items[m], None if qty is None else qty[m]
        if len(idx) == 0:
            return
        self.clock[idx] += 10 + self.rng.exponential(60.0, len(idx)).astype(np.int64)
        q = np.ones(len(idx), np.int64) if qty is None else qty
        code = np.full(len(idx), event.code, np.int8)
        self.chunks.append((idx, items, code, self.clock[idx], self.sess[idx], self.chan[idx], q))

    def some(self, idx: np.ndarray, p: float) -> np.ndarray:
        """bool[n]: independent coin flips with probability ``p``."""
        return self.rng.random(len(idx)) < p

    def popular_cats(self, n: int) -> np.ndarray:
        return self.rng.choice(len(self.shop.cat_p), n, p=self.shop.cat_p)

    def pick(self, idx: np.ndarray, cats: np.ndarray) -> np.ndarray:
        """int[n] products of categories ``cats`` (int[n]) by taste: price tier, then popular or niche."""
        n, s, r = len(idx), self.shop, self.rng
        g = cats * 3 + np.where(r.random(n) < 0.7, self.tier[idx], r.integers(0, 3, n))
        u = r.random(n)
        popular = np.searchsorted(s.g_key, g + u, side="right")
        anyone = s.g_start[g] + (u * s.g_len[g]).astype(np.int64)
        return s.g_items[np.where(r.random(n) < self.niche[idx], anyone, popular)]

    def page(self, idx: np.ndarray, cats: np.ndarray, stage: int, p: float) -> None:
        """With probability ``p``, a content view of a page for ``stage`` about ``cats``."""
        j = self.rng.integers(0, self.shop.content.shape[2], len(idx))
        self.emit(idx, self.shop.content[cats, stage, j], _E.CONTENT_VIEW, p)

    def wait(self, idx: np.ndarray, mean_days: float) -> None:
        self.gap[idx] = 0.1 + self.rng.exponential(mean_days * self.cfg.gap_days, len(idx)) * self.act[idx]

    def churn(self, idx: np.ndarray, p: float) -> None:
        self.alive[idx[self.some(idx, p * self.cfg.churn)]] = False

    def buy(self, idx: np.ndarray, items: np.ndarray, cart: bool = False) -> None:
        """Purchases (consumables by 1-3 units; with ``cart``, after add_to_cart and checkout) and what they
        set up: the accessories of durables, the replenishment date of consumables."""
        if cart:
            self.emit(idx, items, _E.ADD_TO_CART)
            self.emit(idx, items, _E.CHECKOUT)
        qty = self.quantity(items)
        self.emit(idx, items, _E.PURCHASE, qty=qty)
        self.own(idx, items, qty)

    def quantity(self, items: np.ndarray) -> np.ndarray:
        """int64[n] units bought of ``items``: consumables come by 1-3, durables one at a time."""
        return np.where(self.shop.cycle[items] > 0, 1 + self.rng.binomial(2, 0.3, len(items)), 1)

    def own(self, idx: np.ndarray, items: np.ndarray, qty: np.ndarray) -> None:
        """What a purchase of ``qty`` units of ``items`` sets up for ``idx``: the accessories of durables,
        the replenishment date of consumables."""
        cyc = self.shop.cycle[items]
        c = cyc > 0
        self.cons[idx[c]] = items[c]
        run_out = cyc[c] * qty[c] * self.rng.lognormal(0.0, 0.2, int(c.sum())) * DAY
        self.due[idx[c]] = self.clock[idx[c]] + run_out.astype(np.int64)
        self.owned[idx[~c]] = items[~c]
        self.last[idx] = items

    def shortlist(self, idx: np.ndarray, items: np.ndarray) -> None:
        """Move ``items`` to the front of the shortlists of ``idx`` (dropping the oldest when new)."""
        row = self.short[idx]
        keep = np.argsort(row == items[:, None], axis=1, kind="stable")
        self.short[idx] = np.column_stack([items, np.take_along_axis(row, keep, 1)[:, :2]])

    def new_journey(self, idx: np.ndarray) -> None:
        """Start over: in a favourite category, the accessories' category of what they own, or anywhere."""
        n, r = len(idx), self.rng
        u = r.random(n)
        fav = self.pref[idx, r.integers(0, 2, n)]
        owned = self.owned[idx]
        acc = self.shop.cat[self.shop.comp[np.maximum(owned, 0), 0]]
        self.fc[idx] = np.where(u < 0.5, fav, np.where((u < 0.8) & (owned >= 0), acc, self.popular_cats(n)))
        self.stage[idx] = np.where(self.some(idx, 0.35), _AWARE, _CONSIDER)
        self.short[idx] = -1
        self.cart[idx] = -1

    def take_events(self) -> tuple[np.ndarray, ...]:
        """The events emitted since the last call, as aligned columns sorted by (visitor, time) (visitor,
        item, event code, clock, session, channel, quantity), and forget them."""
        chunks, self.chunks = self.chunks, []
        if not chunks:
            return tuple(np.zeros(0, np.int64) for _ in range(7))
        cols = [np.concatenate(c) for c in zip(*chunks, strict=True)]
        order = np.lexsort((cols[3], cols[0]))
        return tuple(c[order] for c in cols)

    def react(self, idx: np.ndarray, items: np.ndarray, r: Reactions, model: ResponseModel) -> None:
        """Carry what visitors ``idx`` (int[n]) did with the lists ``items`` (int[n, k]) they were shown into
        their journeys: clicked products join the shortlist (in awareness, a click starts comparing its
        category with probability ``model.advance``); a carted product not bought fills an empty cart and
        moves the visitor to decision; a purchase sets up accessories and replenishment like any purchase,
        and with nothing left in the cart moves the visitor to retention."""
        s = self.shop
        it = np.maximum(items, 0)
        product = r.click & (items >= 0) & (it < s.n_products)
        for j in range(items.shape[1]):  # slot by slot: the last product clicked ends up first
            m = product[:, j]
            self.shortlist(idx[m], items[m, j])
        first = it[np.arange(len(idx)), np.argmax(product, axis=1)]
        go = product.any(axis=1) & (self.stage[idx] == _AWARE) & self.some(idx, model.advance)
        self.fc[idx[go]], self.stage[idx[go]] = s.cat[first[go]], _CONSIDER
        kept = r.cart & ~r.purchase
        carted = it[np.arange(len(idx)), np.argmax(kept, axis=1)]
        fill = kept.any(axis=1) & (self.cart[idx, 0] < 0)
        self.cart[idx[fill], 0] = carted[fill]
        early = fill & (self.stage[idx] < _DECIDE)
        self.fc[idx[early]], self.stage[idx[early]] = s.cat[carted[early]], _DECIDE
        for j in range(items.shape[1]):
            m = r.purchase[:, j]
            self.own(idx[m], items[m, j], r.quantity[m, j])
            self.cart[idx[m & (self.cart[idx, 0] == items[:, j])], 0] = -1
        done = r.purchase.any(axis=1) & (self.cart[idx, 0] < 0) & (self.stage[idx] < _RETAIN)
        self.stage[idx[done]] = _RETAIN

    # -- one session per stage ----------------------------------------------------------------------
    def awareness(self, idx: np.ndarray) -> None:
        n, s = len(idx), self.shop
        # mostly their own categories, sometimes whatever the ads push (popular categories)
        cat = np.where(self.some(idx, 0.75), self.pref[idx, self.rng.integers(0, 2, n)], self.popular_cats(n))
        self.emit(idx, s.landing[cat], _E.PAGE_VIEW)
        self.page(idx, cat, _AWARE, 0.7)
        self.page(idx, cat, _AWARE, 0.3)
        self.emit(idx, s.landing[cat], _E.SEARCH, 0.4)
        views = self.rng.integers(1, 6, n)
        for j in range(5):
            v, c = idx[views > j], cat[views > j]
            self.emit(
                v, self.pick(v, np.where(self.some(v, 0.65), c, self.popular_cats(len(v)))), _E.PRODUCT_VIEW
            )
        go = self.some(idx, 0.45)
        self.fc[idx[go]], self.stage[idx[go]], self.short[idx[go]] = cat[go], _CONSIDER, -1
        self.churn(idx[~go], 0.12)
        self.wait(idx, 2.4)

    def consideration(self, idx: np.ndarray) -> None:
        r = self.rng
        self.page(idx, self.fc[idx], _CONSIDER, 0.5)
        views = r.integers(2, 9, len(idx))
        for j in range(8):
            v = idx[views > j]
            # back to a shortlisted favourite, or a new find in the category by taste
            again = self.short[v, r.integers(0, 3, len(v))]
            again[self.some(v, 0.55)] = -1
            item = np.where(again >= 0, again, self.pick(v, self.fc[v]))
            self.emit(v, item, _E.PRODUCT_VIEW)
            self.shortlist(v, item)
        two = idx[self.some(idx, 0.35) & (self.short[idx, 1] >= 0)]
        self.emit(two, self.short[two, 1], _E.COMPARE)
        self.emit(two, self.short[two, 0], _E.COMPARE)
        self.emit(idx, self.short[idx, 0], _E.WISHLIST, 0.15)
        u = r.random(len(idx))
        self.stage[idx[u < 0.4]] = _DECIDE
        self.stage[idx[(u >= 0.4) & (u < 0.47)]] = _AWARE  # lost interest: back to browsing
        self.churn(idx[u >= 0.47], 0.06)
        self.wait(idx, 1.6)

    def decision(self, idx: np.ndarray) -> None:
        r, s = self.rng, self.shop
        back = self.cart[idx, 0] >= 0  # returning to an abandoned cart
        u = r.random(len(idx))
        # the most recently viewed shortlisted item usually wins, sometimes the runner-up or a new find
        pick = np.where(u < 0.65, self.short[idx, 0], np.where(u < 0.9, self.short[idx, 1], -1))
        pick[pick < 0] = self.pick(idx[pick < 0], self.fc[idx[pick < 0]])
        main = np.where(back, self.cart[idx, 0], s.sub[pick])
        self.emit(idx, main, _E.PRODUCT_VIEW)
        self.page(idx, s.cat[main], _DECIDE, 0.35)
        self.emit(idx[~back], main[~back], _E.ADD_TO_CART)
        self.cart[idx[~back], 0] = main[~back]
        b = ~back & self.some(idx, self.cfg.bundle)  # the accessory shown next to the item
        extra = s.sub[s.comp[main[b], r.integers(0, s.comp.shape[1], int(b.sum()))]]
        self.emit(idx[b], extra, _E.ADD_TO_CART)
        self.cart[idx[b], 1] = extra
        rm = idx[self.some(idx, 0.1) & (self.cart[idx, 1] >= 0)]
        self.emit(rm, self.cart[rm, 1], _E.REMOVE_FROM_CART)
        self.cart[rm, 1] = -1
        ok = self.some(idx, 1 - self.cfg.abandon) | (back & self.some(idx, 0.3))
        bi = idx[ok]
        self.emit(bi, self.cart[bi, 0], _E.CHECKOUT)
        self.buy(bi, self.cart[bi, 0])
        with_extra = bi[self.cart[bi, 1] >= 0]
        self.buy(with_extra, self.cart[with_extra, 1])
        self.cart[bi], self.stage[bi] = -1, _RETAIN
        self.wait(bi, 8.0)
        cancel = bi[self.some(bi, 0.02)]
        self.emit(cancel, self.last[cancel], _E.CANCEL)
        self.stage[cancel] = _CONSIDER
        # abandoned: most come back for the cart (reminder email), some keep looking, some leave
        ab = idx[~ok]
        u = r.random(len(ab))
        self.stage[ab[(u >= 0.6) & (u < 0.8)]] = _CONSIDER
        self.churn(ab[u >= 0.8], 0.6)
        self.wait(ab, 1.6)

    def retention(self, idx: np.ndarray) -> None:
        r, s = self.rng, self.shop
        due = (self.cons[idx] >= 0) & (self.clock[idx] >= self.due[idx] - 3 * DAY)
        ri = idx[due]  # replenish, mostly the same brand again
        item = np.where(self.some(ri, 0.85), self.cons[ri], s.sub[self.pick(ri, s.cat[self.cons[ri]])])
        self.emit(ri, item, _E.PRODUCT_VIEW, 0.5)
        self.buy(ri, item, cart=True)
        oi = idx[~due & (np.maximum(self.owned[idx], self.last[idx]) >= 0)]
        anchor = np.where(self.owned[oi] >= 0, self.owned[oi], self.last[oi])
        self.page(oi, s.cat[anchor], _RETAIN, 0.5)
        # browse the accessories of what they own; the first one viewed is the one they may buy
        views = r.integers(1, 4, len(oi))
        first = s.comp[anchor, r.integers(0, s.comp.shape[1], len(oi))]
        for j in range(3):
            m = views > j
            item = first[m] if j == 0 else s.comp[anchor[m], r.integers(0, s.comp.shape[1], int(m.sum()))]
            self.emit(oi[m], item, _E.PRODUCT_VIEW)
        m = self.some(oi, 0.2)
        self.buy(oi[m], s.sub[first[m]], cart=True)
        u = r.random(len(idx))
        self.stage[idx[(u < 0.2) & (self.last[idx] != self.reviewed[idx])]] = _ADVOCATE
        self.new_journey(idx[(u >= 0.2) & (u < 0.35)])
        self.churn(idx[u >= 0.35], 0.04)
        self.wait(idx, 7.0)
        # the next visit is when the consumable runs out, if that comes first
        c = idx[self.cons[idx] >= 0]
        to_due = (self.due[c] - self.clock[c]) / DAY + r.normal(0.0, 1.5, len(c))
        self.gap[c] = np.maximum(np.minimum(self.gap[c], to_due), 0.1)

    def advocacy(self, idx: np.ndarray) -> None:
        item = self.last[idx]
        self.page(idx, self.shop.cat[item], _ADVOCATE, 0.5)
        self.emit(idx, item, _E.REVIEW, 0.6)
        self.emit(idx, item, _E.SHARE, 0.3)
        self.emit(idx, item, _E.REFERRAL, 0.15)
        self.reviewed[idx] = item
        u = self.rng.random(len(idx))
        self.stage[idx[u < 0.6]] = _RETAIN
        self.new_journey(idx[(u >= 0.6) & (u < 0.85)])
        self.churn(idx[u >= 0.85], 0.6)
        self.wait(idx, 4.0)

    def begin(self) -> np.ndarray:
        """Start the next session of every visitor still around before the end: int64[a] their indices
        (empty when none is left), with their clock, session number and channel set."""
        act = np.flatnonzero(self.alive & (self.t < self.end))
        if len(act) == 0:
            return act
        self.clock[act] = self.t[act]
        self.sess[act] = self.n_sessions + np.arange(len(act))
        self.n_sessions += len(act)
        st = self.stage[act]
        u = self.rng.random(len(act))
        self.chan[act] = (u[:, None] > _CHANNEL_CDF[st, :-1]).sum(axis=1)  # last column: the rest
        # an abandoned cart brings a reminder email
        self.chan[act[(st == _DECIDE) & (self.cart[act, 0] >= 0) & (u < 0.5)]] = 0
        return act

    def play(self, act: np.ndarray) -> None:
        """The sessions of ``act`` (from ``begin``), each by the handler of the visitor's stage."""
        handlers = (self.awareness, self.consideration, self.decision, self.retention, self.advocacy)
        st = self.stage[act]
        for stage, handler in enumerate(handlers):
            handler(act[st == stage])

    def finish(self, act: np.ndarray) -> None:
        """Schedule the next session of ``act`` after the gap their sessions chose."""
        nxt = self.clock[act] + (self.gap[act] * DAY).astype(np.int64)
        self.t[act] = np.maximum(nxt - nxt % DAY + _time_of_day(self.rng, len(act)), self.clock[act] + 1800)

    def run(self) -> None:
        """Advance every visitor still around by one session per step until all churned or the end."""
        while len(act := self.begin()):
            self.play(act)
            self.finish(act)


def _time_of_day(rng: np.random.Generator, n: int) -> np.ndarray:
    """int64[n] seconds after midnight: a lunchtime and a larger evening peak."""
    hour = np.where(rng.random(n) < 0.35, rng.normal(13.0, 2.5, n), rng.normal(20.0, 2.0, n))
    return (np.clip(hour, 6.0, 23.9) * 3600).astype(np.int64)


def _iso(ts: np.ndarray) -> list[str]:
    """ISO-8601 UTC strings like ``2024-01-03T10:15:42Z`` of POSIX seconds (float64[n])."""
    return [t + "Z" for t in np.datetime_as_string(ts.astype("datetime64[s]"), unit="s").tolist()]


def simulate(cfg: SimulationConfig) -> Simulation:
    """Simulate the storefront in memory (no disk); deterministic by ``cfg.seed``."""
    if cfg.visitors < 1 or cfg.days < 1 or cfg.warmup_days < 0:
        raise InvalidInputError("visitors and days must be at least 1, warmup_days at least 0")
    try:
        t0 = dt.datetime.fromisoformat(cfg.start)
    except ValueError:
        raise InvalidInputError(f"start: expected an ISO date like 2024-01-01, got {cfg.start!r}") from None
    start = int((t0 if t0.tzinfo else t0.replace(tzinfo=dt.UTC)).timestamp())
    rng = np.random.default_rng(cfg.seed)
    shop = Shop(cfg, rng)
    walk = Walk(cfg, shop, rng)
    walk.run()
    cols = (
        [np.concatenate(c) for c in zip(*walk.chunks, strict=True)]
        if walk.chunks
        else [np.zeros(0, np.int64)] * 7
    )
    visitor, item, event, ts, session, channel, qty = cols
    keep = np.flatnonzero((ts >= 0) & (ts < walk.end))  # drop the warm-up and sessions running past the end
    order = keep[np.lexsort((visitor[keep], ts[keep]))]
    value = np.where(event == _E.PURCHASE.code, np.round(shop.price[item] * qty, 2), np.nan)
    width = len(str(cfg.visitors - 1))
    return Simulation(
        visitor_ids=[f"v{i:0{width}d}" for i in range(cfg.visitors)],
        catalog=shop.items,
        visitor=visitor[order].astype(np.int32),
        item=item[order].astype(np.int32),
        event=event[order].astype(np.int8),
        ts=(ts[order] + start).astype(np.float64),
        session=session[order],
        channel=channel[order].astype(np.int8),
        quantity=qty[order].astype(np.int32),
        value=value[order],
        complements=shop.comp.astype(np.int32),
    )


def events_csv(sim: Simulation) -> str:
    """The native events.csv text of ``sim``: whole columns converted to str, then joined per row."""
    vid = np.array(sim.visitor_ids, dtype=object)[sim.visitor].tolist()
    iid = np.array([c.item_id for c in sim.catalog], dtype=object)[sim.item].tolist()
    ev = np.array([e.value for e in EVENT_TYPES], dtype=object)[sim.event].tolist()
    ch = np.array([c.value for c in CHANNELS], dtype=object)[sim.channel].tolist()
    val = np.full(len(sim.ts), "", dtype=object)
    bought = np.flatnonzero(~np.isnan(sim.value))
    val[bought] = [f"{x:.2f}" for x in sim.value[bought].tolist()]
    ts = np.datetime_as_string(sim.ts.astype("datetime64[s]"), unit="s").tolist()
    rows = zip(vid, iid, ev, ts, sim.session.tolist(), ch, sim.quantity.tolist(), val.tolist(), strict=True)
    body = "".join([f"{v},{i},{e},{t}Z,s{s},{c},{q},{x}\n" for v, i, e, t, s, c, q, x in rows])
    return "visitor_id,item_id,event,timestamp,session_id,channel,quantity,value\n" + body


def catalog_csv(items: list[CatalogItem]) -> str:
    """The native catalog.csv text (titles and ids never contain commas, so nothing needs quoting)."""
    lines = ["item_id,kind,title,category,price,tags,stages,in_stock,repeatable"]
    for c in items:
        price = "" if c.price is None else f"{c.price:.2f}"
        stages = "|".join(s.value for s in c.stages)
        flags = f"{str(c.in_stock).lower()},{str(c.repeatable).lower()}"
        lines.append(
            f"{c.item_id},{c.kind.value},{c.title},{c.category},{price},{'|'.join(c.tags)},{stages},{flags}"
        )
    return "\n".join(lines) + "\n"


def write_simulation(cfg: SimulationConfig, out_dir: Path) -> SimulationSummary:
    """Simulate and write ``out_dir/events.csv`` and ``out_dir/catalog.csv`` (creating ``out_dir``)."""
    sim = simulate(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "events.csv").write_text(events_csv(sim), encoding="utf-8")
    (out_dir / "catalog.csv").write_text(catalog_csv(sim.catalog), encoding="utf-8")
    return sim.summary()


# -- the response model: how a visitor reacts to a list it is shown ----------------------------------------


class ResponseModel(msgspec.Struct, frozen=True, kw_only=True):
    """How a simulated visitor reacts to a served list (see ``click_probability`` and ``respond``).

    P(click) = position_bias(rank) * (base + relevance * r + stage_fit * f), with r and f in [0, 1]; a clicked
    product in stock is added to the cart with ``cart[stage] * (0.5 + 0.5 r)``, a carted one bought with
    ``purchase[stage]`` (stage: the visitor's true stage, in Stage order)."""

    base: float = 0.01  # attraction of an item that fits neither the visitor's taste nor their stage
    relevance: float = 0.14  # added at full relevance (a favourite category, the visitor's price tier)
    stage_fit: float = 0.22  # added at full stage fit (what the visitor's stage is looking for)
    cart: tuple[float, float, float, float, float] = (0.04, 0.12, 0.35, 0.25, 0.10)
    purchase: tuple[float, float, float, float, float] = (0.30, 0.40, 0.65, 0.75, 0.50)
    advance: float = 0.3  # a visitor in awareness who clicks a product starts comparing its category

    def __post_init__(self) -> None:
        shares = (self.base, self.relevance, self.stage_fit, *self.cart, *self.purchase, self.advance)
        if min(shares) < 0 or max(shares) > 1 or self.base + self.relevance + self.stage_fit > 1:
            raise InvalidInputError(
                "ResponseModel: every share lies in [0, 1] and base+relevance+stage_fit <= 1"
            )


@dataclass(frozen=True)
class Audience:
    """What the simulator knows of n visitors at the moment a list is served (int64 arrays, -1 = none).

    pref [n, 2] favourite categories;  tier [n] preferred price tier;  stage [n] true stage index;
    focus [n] the category of the journey;  cart [n] carted item;  owned [n] last durable bought;
    cons [n] last consumable bought;  last [n] last item bought
    """

    pref: np.ndarray
    tier: np.ndarray
    stage: np.ndarray
    focus: np.ndarray
    cart: np.ndarray
    owned: np.ndarray
    cons: np.ndarray
    last: np.ndarray

    @classmethod
    def of(cls, walk: Walk, idx: np.ndarray) -> Audience:
        """A copy of the state of ``walk``'s visitors ``idx`` (int[n])."""
        w = walk
        return cls(
            w.pref[idx], w.tier[idx], w.stage[idx], w.fc[idx], w.cart[idx, 0], w.owned[idx], w.cons[idx],
            w.last[idx],
        )  # fmt: skip


@dataclass(frozen=True)
class Reactions:
    """What n visitors did with the k slots they were shown (arrays [n, k]).

    p_click float64 the click probability;  click, cart, purchase bool;  quantity int64 units bought
    (1 where nothing was bought)
    """

    p_click: np.ndarray
    click: np.ndarray
    cart: np.ndarray
    purchase: np.ndarray
    quantity: np.ndarray


def position_bias(rank: np.ndarray) -> np.ndarray:
    """float64: the chance a visitor looks at the slot of 1-based ``rank``, 1 / log2(rank + 1)."""
    return 1.0 / np.log2(np.asarray(rank, np.float64) + 1.0)


def click_probability(
    relevance: np.ndarray, fit: np.ndarray, rank: np.ndarray, model: ResponseModel
) -> np.ndarray:
    """float64, broadcast: P(click) of an item of ``relevance`` and stage ``fit`` (both in [0, 1]) at 1-based
    ``rank`` (examination hypothesis: looked at x attractive)."""
    attract = model.base + model.relevance * np.asarray(relevance) + model.stage_fit * np.asarray(fit)
    return position_bias(rank) * attract


def _valid(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``items`` with -1 (no item / unknown to the shop) replaced by 0, and the bool mask of real items."""
    ok = items >= 0
    return np.where(ok, items, 0), ok


def relevance(shop: Shop, aud: Audience, items: np.ndarray) -> np.ndarray:
    """float64[n, k] in [0, 1]: how well ``items`` (int[n, k], -1 = none) suit each visitor's static taste.

    Category affinity (first favourite 1.0, second 0.8, a category selling accessories of a favourite 0.4,
    else 0.05) times, for products, the price tier's fit (1.0 in the visitor's tier, 0.75 one off, 0.5 two
    off). Unknown items are 0."""
    it, ok = _valid(items)
    cat = shop.cat[it]
    p0, p1 = aud.pref[:, :1], aud.pref[:, 1:]
    paired = shop.pairs[p0, cat] | shop.pairs[p1, cat]
    aff = np.where(cat == p0, 1.0, np.where(cat == p1, 0.8, np.where(paired, 0.4, 0.05)))
    tier = shop.tier[it]
    tier_fit = np.where(tier >= 0, 1.0 - 0.25 * np.abs(tier - aud.tier[:, None]), 1.0)
    return np.where(ok, aff * tier_fit, 0.0)


def stage_fit(shop: Shop, aud: Audience, items: np.ndarray) -> np.ndarray:
    """float64[n, k] in [0, 1]: how well ``items`` (int[n, k], -1 = none) serve each visitor's true stage.

    awareness      guides and ideas (awareness pages) 1.0, landing pages 0.6, products 0.2
    consideration  products of the journey's category (to compare) 1.0, comparisons and buying guides 0.8
    decision       accessories of the carted item 1.0, reviews and FAQs 0.6, the carted item and others of
                   its category 0.3 (without a cart: products of the journey's category 0.8)
    retention      accessories of the last durable and consumables of the last consumable's category
                   (replenishment) 1.0, how-to and care pages 0.6
    advocacy       refer-a-friend and write-a-review pages 1.0, accessories of the last purchase 0.5
    anything else 0.05; unknown items 0."""
    it, ok = _valid(items)
    st = aud.stage[:, None]
    product = it < shop.n_products
    page = shop.page_stage[it]
    cat = shop.cat[it]
    own_page = ~product & (page == st)

    def accessory_of(anchor: np.ndarray) -> np.ndarray:
        a = np.maximum(anchor, 0)
        return (anchor[:, None] >= 0) & (it[:, :, None] == shop.comp[a][:, None, :]).any(axis=2)

    cart = aud.cart[:, None]
    has_cart = cart >= 0
    cart_cat = shop.cat[np.maximum(cart, 0)]
    focus_product = product & (cat == aud.focus[:, None])
    refill = (
        product
        & (aud.cons[:, None] >= 0)
        & (shop.cycle[it] > 0)
        & (cat == shop.cat[np.maximum(aud.cons, 0)][:, None])
    )
    fit = np.select(
        [
            st == _AWARE,
            st == _CONSIDER,
            (st == _DECIDE) & has_cart,
            st == _DECIDE,
            st == _RETAIN,
            st == _ADVOCATE,
        ],
        [
            np.where(own_page, 1.0, np.where(page < 0, np.where(product, 0.2, 0.6), 0.05)),
            np.where(focus_product, 1.0, np.where(own_page, 0.8, 0.05)),
            np.where(
                accessory_of(aud.cart),
                1.0,
                np.where(own_page, 0.6, np.where(product & (cat == cart_cat), 0.3, 0.05)),
            ),
            np.where(focus_product, 0.8, np.where(own_page, 0.6, 0.05)),
            np.where(accessory_of(aud.owned) | refill, 1.0, np.where(own_page, 0.6, 0.05)),
            np.where(own_page, 1.0, np.where(accessory_of(aud.last), 0.5, 0.05)),
        ],
        0.05,
    )
    return np.where(ok, fit, 0.0)


def respond(
    shop: Shop,
    aud: Audience,
    items: np.ndarray,
    rank: np.ndarray,
    model: ResponseModel,
    rng: np.random.Generator,
) -> Reactions:
    """What n visitors do with the lists they were shown: ``items`` int[n, k] shop indices (-1 = empty slot
    or an item the shop does not know), ``rank`` int[n, k] 1-based positions. Draws from ``rng`` in a fixed
    order (clicks, carts, purchases, quantities: one [n, k] array each), so the same inputs and seed give the
    same reactions."""
    rel = relevance(shop, aud, items)
    p = click_probability(rel, stage_fit(shop, aud, items), rank, model)
    it, ok = _valid(items)
    click = ok & (rng.random(items.shape) < p)
    st = aud.stage[:, None]
    sellable = (it < shop.n_products) & shop.in_stock[it]
    p_cart = np.asarray(model.cart)[st] * (0.5 + 0.5 * rel)
    cart = click & sellable & (rng.random(items.shape) < p_cart)
    purchase = cart & (rng.random(items.shape) < np.asarray(model.purchase)[st])
    qty = np.where(shop.cycle[it] > 0, 1 + rng.binomial(2, 0.3, items.shape), 1)
    return Reactions(p, click, cart, purchase, np.where(purchase, qty, 1))
