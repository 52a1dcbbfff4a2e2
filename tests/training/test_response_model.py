"""The simulator's response model: how a visitor shown a list reacts to it (known answers, invariants)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from models.errors import InvalidInputError
from training.simulate import (
    Audience,
    Reactions,
    ResponseModel,
    Shop,
    SimulationConfig,
    Walk,
    click_probability,
    events_csv,
    position_bias,
    relevance,
    respond,
    simulate,
    stage_fit,
)

MODEL = ResponseModel()
CFG = SimulationConfig(visitors=50, items=600, seed=4)
AWARE, CONSIDER, DECIDE, RETAIN, ADVOCATE = range(5)


@pytest.fixture(scope="module")
def shop() -> Shop:
    return Shop(CFG, np.random.default_rng(CFG.seed))


def _audience(n: int, stage: int, *, pref: tuple[int, int] = (0, 1), tier: int = 1, **state: int) -> Audience:
    col = {k: np.full(n, state.get(k, -1), np.int64) for k in ("focus", "cart", "owned", "cons", "last")}
    return Audience(
        pref=np.tile(np.array(pref, np.int64), (n, 1)),
        tier=np.full(n, tier, np.int64),
        stage=np.full(n, stage, np.int64),
        **col,
    )


def _product(shop: Shop, cat: int, tier: int | None = None, *, durable: bool | None = None) -> int:
    ok = (shop.cat == cat) & (np.arange(len(shop.cat)) < shop.n_products) & shop.in_stock
    if tier is not None:
        ok &= shop.tier == tier
    if durable is not None:
        ok &= (shop.cycle == 0) == durable
    return int(np.flatnonzero(ok)[0])


def _page(shop: Shop, cat: int, stage: int) -> int:
    ok = (shop.cat == cat) & (shop.page_stage == stage)
    return int(np.flatnonzero(ok)[0])


def _landing(shop: Shop, cat: int) -> int:
    return int(shop.landing[cat])


def test_position_bias_known_answers() -> None:
    assert position_bias(np.array([1, 3, 7, 15])) == pytest.approx([1.0, 0.5, 1 / 3, 0.25])


def test_click_probability_known_answers() -> None:
    m = ResponseModel(base=0.02, relevance=0.1, stage_fit=0.3)
    assert click_probability(np.array(1.0), np.array(1.0), np.array(1), m) == pytest.approx(0.42)
    assert click_probability(np.array(0.0), np.array(0.0), np.array(1), m) == pytest.approx(0.02)
    assert click_probability(np.array(0.5), np.array(0.0), np.array(3), m) == pytest.approx(0.07 / 2)


@given(
    rel=st.floats(0, 1),
    more=st.floats(0.01, 1),
    fit=st.floats(0, 1),
    rank=st.integers(1, 50),
    later=st.integers(1, 50),
)
def test_click_probability_grows_with_relevance_and_fit_and_falls_with_rank(
    rel: float, more: float, fit: float, rank: int, later: int
) -> None:
    def p(r: float, f: float, k: int) -> float:
        return float(click_probability(np.array(r), np.array(f), np.array(k), MODEL))

    assert 0.0 <= p(rel, fit, rank) <= 1.0
    assert p(min(rel + more, 1.0), fit, rank) >= p(rel, fit, rank)
    assert p(rel, min(fit + more, 1.0), rank) >= p(rel, fit, rank)
    assert p(rel, fit, rank + later) < p(rel, fit, rank)


def test_relevance_known_answers(shop: Shop) -> None:
    """First favourite in the visitor's tier 1.0; second favourite two tiers off 0.8 x 0.5; a category
    selling accessories of a favourite 0.4 (tea for kettles); content by category only; else 0.05; unknown
    items 0. Categories: 0 kettles, 1 tea, 3 garden tools, 6 coffee machines."""
    assert shop.pairs[0, 1]
    assert not shop.pairs[0, 6]
    assert not shop.pairs[3, 6]
    items = [
        _product(shop, 0, tier=1),
        _product(shop, 3, tier=0),
        _product(shop, 1, tier=1),
        _product(shop, 6, tier=1),
        _page(shop, 3, AWARE),
        -1,
    ]
    got = relevance(shop, _audience(1, AWARE, pref=(0, 3), tier=2), np.array([items]))[0]
    assert got == pytest.approx([0.75, 0.8 * 0.5, 0.4 * 0.75, 0.05 * 0.75, 0.8, 0.0])


def test_stage_appropriate_items_fit_their_stage(shop: Shop) -> None:
    """Per stage, what that stage looks for fits (1.0) and a product of an unrelated category does not."""
    durable = _product(shop, 0, durable=True)
    accessory = int(shop.comp[durable, 0])
    unrelated = next(
        _product(shop, c)
        for c in range(len(shop.landing))
        if c != 0 and c != shop.cat[accessory] and not shop.pairs[0, c]
    )
    cases = {
        AWARE: ({}, _page(shop, 0, AWARE)),
        CONSIDER: ({"focus": 0}, _product(shop, 0)),
        DECIDE: ({"cart": durable}, accessory),
        RETAIN: ({"owned": durable, "last": durable}, accessory),
        ADVOCATE: ({"last": durable}, _page(shop, 0, ADVOCATE)),
    }
    for stage, (state, good) in cases.items():
        fit = stage_fit(shop, _audience(1, stage, **state), np.array([[good, unrelated, -1]]))[0]
        assert fit[0] == 1.0, stage
        assert fit[1] <= 0.2, stage
        assert fit[2] == 0.0
    # the same guide is worth less to a visitor who is comparing products than to a newcomer
    guide = np.array([[_page(shop, 0, AWARE)]])
    assert stage_fit(shop, _audience(1, CONSIDER, focus=0), guide) < stage_fit(
        shop, _audience(1, AWARE), guide
    )
    assert stage_fit(shop, _audience(1, AWARE), np.array([[_landing(shop, 0)]]))[0, 0] == 0.6


def test_replenishment_fits_retention(shop: Shop) -> None:
    consumable = _product(shop, 1, durable=False)
    same_category = int(
        np.flatnonzero((shop.cat == 1) & (shop.cycle > 0) & (np.arange(len(shop.cat)) != consumable))[0]
    )
    fit = stage_fit(shop, _audience(1, RETAIN, cons=consumable), np.array([[consumable, same_category]]))
    assert fit[0] == pytest.approx([1.0, 1.0])


def _many(shop: Shop, n: int, stage: int, items: list[int], **state: int) -> Reactions:
    rows = np.tile(np.array(items, np.int64), (n, 1))
    rank = np.ones_like(rows)
    return respond(shop, _audience(n, stage, **state), rows, rank, MODEL, np.random.default_rng(0))


def test_stage_appropriate_items_are_clicked_more(shop: Shop) -> None:
    """Shown side by side at the same rank, with the same relevance, the item that suits the visitor's true
    stage gets more clicks: a guide in awareness, an accessory of the carted item in decision."""
    durable = _product(shop, 0, durable=True)
    accessory = int(shop.comp[durable, 0])
    same_taste_other = _product(shop, int(shop.cat[accessory]), tier=int(shop.tier[accessory]))
    if same_taste_other == accessory:
        same_taste_other = int(
            np.flatnonzero(
                (shop.cat == shop.cat[accessory])
                & (shop.tier == shop.tier[accessory])
                & ~np.isin(np.arange(len(shop.cat)), shop.comp[durable])
            )[0]
        )
    r = _many(shop, 20_000, DECIDE, [accessory, same_taste_other], cart=durable)
    assert r.click[:, 0].mean() > 1.5 * r.click[:, 1].mean()
    guide, product = _page(shop, 0, AWARE), _product(shop, 0, tier=1)
    r = _many(shop, 20_000, AWARE, [guide, product])
    assert r.click[:, 0].mean() > 1.5 * r.click[:, 1].mean()


def test_higher_ranks_are_clicked_more(shop: Shop) -> None:
    item = _product(shop, 0, tier=1)
    n = 20_000
    rows = np.full((n, 10), item, np.int64)
    rank = np.tile(np.arange(1, 11), (n, 1))
    r = respond(shop, _audience(n, CONSIDER, focus=0), rows, rank, MODEL, np.random.default_rng(1))
    rates = r.click.mean(axis=0)
    assert rates[0] > rates[4] > rates[9]
    assert rates[0] == pytest.approx(r.p_click[0, 0], rel=0.05)
    assert rates[9] == pytest.approx(r.p_click[0, 0] / np.log2(11), rel=0.15)


def test_carts_follow_clicks_and_purchases_follow_carts(shop: Shop) -> None:
    out_of_stock = np.flatnonzero(~shop.in_stock[: shop.n_products])
    items = [_product(shop, 0), _page(shop, 0, DECIDE), *out_of_stock[:1].tolist()]
    r = _many(shop, 20_000, DECIDE, items, focus=0)
    assert not (r.cart & ~r.click).any()
    assert not (r.purchase & ~r.cart).any()
    assert not r.cart[:, 1:].any()  # content and out-of-stock products are never carted
    assert 0 < r.purchase[:, 0].sum() < r.cart[:, 0].sum() < r.click[:, 0].sum()
    assert (r.quantity >= 1).all()
    assert (r.quantity[~r.purchase] == 1).all()


def test_reactions_are_seeded(shop: Shop) -> None:
    rows = np.tile(np.arange(0, 40, 3, dtype=np.int64), (300, 1))
    rank = np.tile(np.arange(1, rows.shape[1] + 1), (300, 1))
    aud = _audience(300, CONSIDER, focus=0)

    def run(seed: int) -> Reactions:
        return respond(shop, aud, rows, rank, MODEL, np.random.default_rng(seed))

    a, b, c = run(5), run(5), run(6)
    for name in ("click", "cart", "purchase", "quantity"):
        assert np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.click, c.click)


def test_react_moves_journeys_along(shop: Shop) -> None:
    """A purchase from a list makes a customer (retention, owning the item); a cart without a purchase
    moves a browsing visitor to decision with that cart; a click shortlists the product."""
    walk = Walk(CFG, shop, np.random.default_rng(2))
    idx = np.array([0, 1, 2])
    walk.stage[idx] = CONSIDER
    durable, other = _product(shop, 0, durable=True), _product(shop, 1)
    items = np.array([[durable, -1], [other, -1], [other, -1]])
    false = np.zeros((3, 2), bool)
    click = np.array([[True, False], [True, False], [True, False]])
    cart = np.array([[True, False], [True, False], [False, False]])
    purchase = np.array([[True, False], [False, False], [False, False]])
    walk.react(idx, items, Reactions(false * 1.0, click, cart, purchase, np.ones((3, 2), np.int64)), MODEL)
    assert walk.stage[0] == RETAIN
    assert walk.owned[0] == durable
    assert walk.stage[1] == DECIDE
    assert walk.cart[1, 0] == other
    assert walk.cart[2, 0] == -1
    assert walk.short[2, 0] == other


def test_bad_response_model_is_a_validation_error() -> None:
    with pytest.raises(InvalidInputError):
        ResponseModel(base=0.5, relevance=0.4, stage_fit=0.3)
    with pytest.raises(InvalidInputError):
        ResponseModel(cart=(0.1, 0.1, 1.5, 0.1, 0.1))


def test_files_unchanged_without_the_response_model() -> None:
    """The response model draws from its own generator: the simulator's files stay byte-identical to what
    it wrote before the model existed (the evaluation figures depend on them)."""
    text = events_csv(simulate(SimulationConfig(visitors=200, items=120, days=30, seed=11)))
    assert hashlib.sha256(text.encode()).hexdigest() == (
        "cd881472fa5c3e30a7f85bf181485f97d9c9c9bc2efd107e289200322e912246"
    )
