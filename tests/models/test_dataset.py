import numpy as np
import pytest

from models.dataset import EventLog
from models.domain import CatalogItem, EventType, ItemKind
from models.errors import EmptyDatasetError


def _log() -> EventLog:
    return EventLog.build(
        visitor_ids=["b", "a", "b", "a"],
        item_ids=["x", "y", "y", "x"],
        event=np.array([EventType.PURCHASE.code, EventType.PRODUCT_VIEW.code] * 2),
        ts=np.array([4.0, 3.0, 1.0, 2.0]),
        catalog=[CatalogItem(item_id="guide", kind=ItemKind.CONTENT)],
    )


def test_build_sorts_by_visitor_then_time_and_keeps_catalog_only_items():
    log = _log()
    assert log.visitor_ids == ["a", "b"]
    assert log.item_ids == ["x", "y", "guide"]
    assert log.ts.tolist() == [2.0, 3.0, 1.0, 4.0]
    assert [log.visitor_ids[v] for v in log.visitor] == ["a", "a", "b", "b"]
    assert log.catalog[2].kind is ItemKind.CONTENT


def test_empty_input_is_a_clear_error():
    with pytest.raises(EmptyDatasetError, match="no events"):
        EventLog.build(visitor_ids=[], item_ids=[], event=np.array([]), ts=np.array([]))


def test_fingerprint_changes_with_data():
    a = _log()
    b = a.take(np.array([0, 1, 2]))
    assert a.fingerprint() == _log().fingerprint()
    assert a.fingerprint() != b.fingerprint()
