"""Live catalog entries: when an item may be served, and which write wins."""

from __future__ import annotations

import pytest

from models.domain import CatalogItem
from models.overlay import LiveItem, newer

KETTLE = CatalogItem(item_id="k1", category="kettles", price=30.0)


def live(t: float, **kw: object) -> LiveItem:
    return LiveItem(item=KETTLE, updated_at=t, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("entry", "now", "served"),
    [
        (live(1.0), 5.0, True),
        (live(1.0, hidden=True), 5.0, False),
        (live(1.0, retired=True), 5.0, False),
        (live(1.0, available_from=10.0), 9.9, False),
        (live(1.0, available_from=10.0), 10.0, True),
        (live(1.0, expires_at=10.0), 9.9, True),
        (live(1.0, expires_at=10.0), 10.0, False),
    ],
)
def test_servable_at(entry: LiveItem, now: float, served: bool) -> None:
    assert entry.servable_at(now) is served


def test_a_write_replaces_only_an_older_one_and_nothing_replaces_a_retired_item() -> None:
    assert newer(live(2.0), None)
    assert newer(live(2.0), live(1.0))
    assert not newer(live(1.0), live(2.0))
    assert not newer(live(2.0), live(2.0))  # a replayed write changes nothing
    assert not newer(live(9.0), live(1.0, retired=True))
