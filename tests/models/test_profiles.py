import numpy as np

from models.dataset import EventLog
from models.domain import Event, EventType
from models.profiles import profile_from_events, profiles_from_log
from models.weights import EventWeights

E = EventType
DAY = 86400.0


def _events():
    return [
        Event(visitor_id="v", item_id="a", event=E.PRODUCT_VIEW, timestamp=0.0),
        Event(visitor_id="v", item_id="a", event=E.ADD_TO_CART, timestamp=10.0),
        Event(visitor_id="v", item_id="b", event=E.ADD_TO_CART, timestamp=20.0),
        Event(visitor_id="v", item_id="b", event=E.REMOVE_FROM_CART, timestamp=30.0),
        Event(visitor_id="v", item_id="c", event=E.ADD_TO_CART, timestamp=40.0),
        Event(visitor_id="v", item_id="c", event=E.PURCHASE, timestamp=50.0),
        Event(visitor_id="v", item_id="d", event=E.PURCHASE, timestamp=60.0),
        Event(visitor_id="v", item_id="d", event=E.CANCEL, timestamp=70.0),
    ]


def test_cart_purchases_and_cancels():
    idx = {k: i for i, k in enumerate("abcd")}
    p = profile_from_events(_events(), idx, 4, now=DAY, weights=EventWeights())
    assert p.cart.toarray()[0].tolist() == [1, 0, 0, 0]  # b removed, c bought
    assert p.purchases.toarray()[0].tolist() == [0, 0, 1, 0]  # d cancelled
    ages = p.touch_age.toarray()[0]
    assert np.all(ages > 0)
    assert np.isclose(ages[0], (DAY - 10.0) / DAY, atol=1e-3)  # last touch of a: add to cart at 10 s


def test_future_events_are_ignored():
    idx = {k: i for i, k in enumerate("abcd")}
    p = profile_from_events(_events(), idx, 4, now=25.0, weights=EventWeights())
    assert p.purchases.nnz == 0
    assert p.cart.toarray()[0].tolist() == [1, 1, 0, 0]


def test_log_and_live_profiles_agree():
    evs = _events()
    log = EventLog.build(
        visitor_ids=[e.visitor_id for e in evs],
        item_ids=[e.item_id for e in evs],
        event=np.array([e.event.code for e in evs]),
        ts=np.array([e.timestamp for e in evs]),
    )
    a = profiles_from_log(log, np.array([0], dtype=np.int32), DAY, EventWeights())
    b = profile_from_events(evs, {k: i for i, k in enumerate(log.item_ids)}, log.n_items, DAY, EventWeights())
    for name in ("interest", "touch_age", "purchases", "purchase_age", "cart"):
        assert np.allclose(getattr(a, name).toarray(), getattr(b, name).toarray()), name
